"""The root GraphQL schema as settings name it (GRAPHENE["SCHEMA"]), for the floors below `project/`.

`project/schema.py` assembles it from every app's part, so the modules it is made of (and the
ones they use) cannot import it; they ask for it here when they run an operation instead.
"""

import graphene
from graphene_django.settings import graphene_settings
from graphql import GraphQLSchema


def root_schema() -> graphene.Schema:
    schema = graphene_settings.SCHEMA
    assert isinstance(schema, graphene.Schema), "GRAPHENE['SCHEMA'] must name the root graphene.Schema"
    return schema


def graphql_schema() -> GraphQLSchema:
    return root_schema().graphql_schema
