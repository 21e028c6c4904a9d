"""The root schema: each app contributes a mixin (graphene-django cookbook style)."""

import graphene

import api.schema
import notifications.schema


class Query(api.schema.Query, notifications.schema.Query, graphene.ObjectType):
    pass


class Mutation(api.schema.Mutation, graphene.ObjectType):
    pass


class Subscription(notifications.schema.Subscription, graphene.ObjectType):
    pass


schema = graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription)
