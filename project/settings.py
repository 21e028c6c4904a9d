"""Settings come from the environment (12-factor); defaults are for development only."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from project.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

# Which process served a request; lets operators (and tests) tell instances apart.
INSTANCE_NAME = os.environ.get("INSTANCE_NAME", "local")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "pages",  # before graphene_django: its graphene/graphiql.html serves GraphiQL without a CDN
    "graphene_django",
    "api",
    "notifications",
]

MIDDLEWARE = [
    "project.logs.RequestLogMiddleware",
    "project.metrics.HttpMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "api.auth.BearerTokenMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20}
    )

AUTH_USER_MODEL = "api.Author"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))
# GraphiQL's files, fetched by `make install` (scripts/fetch_static_assets.py).
STATICFILES_DIRS = [BASE_DIR / "static-vendor"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Daphne serves static files itself through whitenoise; no collectstatic needed in development.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

GRAPHENE = {
    "SCHEMA": "project.schema.schema",
    "SUBSCRIPTION_PATH": "/graphql/",
    "ATOMIC_MUTATIONS": False,
}

REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "notifications.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "group_expiry": int(os.environ.get("CHANNEL_GROUP_EXPIRY", "86400")),
                "capacity": int(os.environ.get("CHANNEL_CAPACITY", "1000")),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# TLS ends at nginx: trust its X-Forwarded-Proto, and redirect to HTTPS unless told not to.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = False
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

# Blog API limits (public contract: see schema.graphql).
BLOG_TITLE_MAX = 200
BLOG_CONTENT_MAX = 100_000

# Websocket keep-alive: detects dead peers and keeps idle proxies from closing the socket.
GRAPHQL_WS_PING_SECONDS = float(os.environ.get("GRAPHQL_WS_PING_SECONDS", "25"))
GRAPHQL_WS_CONNECTION_INIT_TIMEOUT = int(os.environ.get("GRAPHQL_WS_CONNECTION_INIT_TIMEOUT", "10"))

LOG_LEVEL = os.environ.get("DJANGO_LOG_LEVEL", "INFO")
# JSON lines (one per request and websocket event, with ids) in production; text while developing.
LOG_JSON = env_bool("DJANGO_LOG_JSON", not DEBUG)
LOGGING = logging_config(structured=LOG_JSON, level=LOG_LEVEL)

# /metrics answers requests from these addresses or networks, or bearing METRICS_TOKEN.
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", "127.0.0.1,::1")
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# Websocket upgrades with an Origin header must come from one of these (scheme://host[:port]
# or host patterns as in ALLOWED_HOSTS). Empty: the ALLOWED_HOSTS themselves.
WEBSOCKET_ALLOWED_ORIGINS = env_list("WEBSOCKET_ALLOWED_ORIGINS", "")

# How far back `blogPublished(after: cursor)` can replay; older cursors must refetch.
PUBLICATION_RETENTION_SECONDS = int(os.environ.get("PUBLICATION_RETENTION_SECONDS", str(7 * 24 * 3600)))
# A subscriber whose socket holds more unread bytes than this is closed with 1013 (it resumes).
WS_MAX_BUFFERED_BYTES = int(os.environ.get("WS_MAX_BUFFERED_BYTES", str(4 * 1024 * 1024)))
# How long the hub waits for an out-of-order publication before reading it from the database.
HUB_REORDER_WINDOW_SECONDS = float(os.environ.get("HUB_REORDER_WINDOW_SECONDS", "0.5"))
# On SIGTERM, how long in-flight HTTP requests may take to finish before websockets close with 1001.
GRACEFUL_SHUTDOWN_SECONDS = float(os.environ.get("GRACEFUL_SHUTDOWN_SECONDS", "10"))
