from django.urls import path

from notifications.transports.consumers import GraphqlConsumer

websocket_urlpatterns = [path("graphql/", GraphqlConsumer.as_asgi())]
