"""The peer's settings: Django's, Channels' and channels-redis's documented defaults.

One change to channels-redis's defaults, the one it needs with redis-py 8: sockets read with a
longer timeout than the 5 s BRPOP wait, or an idle receiver dies (channels-redis #422). The
project's own layer makes the same change (notifications/runtime/layers.py).
"""

import os

import dj_database_url

SECRET_KEY = "peer-benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "strawberry_django",
    "peer_site",
]
DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": 15}]},
    }
}
ASGI_APPLICATION = "peer_site.asgi.application"
ROOT_URLCONF = "peer_site.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {"version": 1, "root": {"level": "WARNING"}}
