"""ASGI entry point: HTTP goes to Django, websockets on /graphql/ to the GraphQL consumer.

Subscription requests that ask for an HTTP stream (graphql-sse, Apollo's multipart) are served
by notifications/transports/http_subscriptions.py before Django: a stream lives for hours, and Django's
request cycle (a request object, the middleware chain, a thread hop) would be held by each of
thousands, and counted as a request in flight by the SIGTERM drain. Everything else it hands on.
"""

import gc
import logging
import os

# Start-up builds what lives as long as the process and leaves next to no garbage: the collector,
# run over and over as the imports allocate, would only walk the same live objects again. It runs
# again below, once everything is built and frozen.
gc.disable()

from django.core.asgi import get_asgi_application  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Set up Django (apps, models) before anything imports the consumer or the schema.
get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from core.process import InFlightRequests  # noqa: E402
from notifications.transports.auth import SessionAuthWhenCookie  # noqa: E402
from notifications.transports.direct import DirectSocketMiddleware  # noqa: E402
from notifications.transports.http_subscriptions import HttpSubscriptions  # noqa: E402
from notifications.transports.origins import OriginValidator  # noqa: E402
from notifications.transports.routing import websocket_urlpatterns  # noqa: E402
from project.handlers import OneHopASGIHandler  # noqa: E402

if not settings.REDIS.configured:
    logging.getLogger("notifications").warning(
        "Neither REDIS_URL nor REDIS_SENTINELS is set: using the in-memory channel layer, "
        "so events reach only this process's subscribers."
    )

django_asgi_app = OneHopASGIHandler()
application = ProtocolTypeRouter(
    {
        "http": HttpSubscriptions(InFlightRequests(django_asgi_app)),
        "websocket": DirectSocketMiddleware(OriginValidator(SessionAuthWhenCookie(URLRouter(websocket_urlpatterns)))),
    }
)

# What start-up built (Django, the apps, the schema) lives as long as the process: out of the
# collector's sight, a full collection walks only what serving allocated, instead of pausing the
# event loop and the requests for all of it.
gc.freeze()
gc.enable()
