import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer_site.settings")
django_asgi_app = get_asgi_application()

from strawberry.channels.router import GraphQLProtocolTypeRouter  # noqa: E402

from peer_site.schema import schema  # noqa: E402

application = GraphQLProtocolTypeRouter(schema, django_application=django_asgi_app)
