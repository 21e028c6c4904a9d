"""Settings come from the environment (12-factor); defaults are for development only."""

import os
import socket
from pathlib import Path

from corsheaders.defaults import default_headers as cors_default_headers
from django.core.exceptions import ImproperlyConfigured

from core import redis_config
from core.database_url import database_settings
from core.logs import logging_config
from core.networks import parse_networks
from core.origins import as_origin

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


def env_origins(name: str) -> list[str] | None:
    """Comma-separated origins, each as browsers send it; None when the variable is unset."""
    if name not in os.environ:
        return None
    origins = []
    for item in env_list(name, ""):
        origin = as_origin(item)
        if origin is None:
            raise ImproperlyConfigured(
                f"{name}: {item!r} is not an origin; write scheme://host[:port] with nothing after it "
                "(e.g. https://app.example.com or http://localhost:5173), comma-separated."
            )
        origins.append(origin)
    return origins


# Browsers on other origins (docs/http.md, "From a page on another origin"). One list serves every
# transport: django-cors-headers answers HTTP with it, and websockets and HTTP subscription streams
# accept exactly these origins plus the site's own (notifications/transports/origins.py).
_listed_origins = env_origins("CORS_ALLOWED_ORIGINS")
CORS_ALLOWED_ORIGINS = _listed_origins or []
# Unset while developing: pages on any port of this machine (a Vite or Next dev server) are allowed.
CORS_ALLOWED_ORIGIN_REGEXES = (
    [r"^http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?$"] if DEBUG and _listed_origins is None else []
)
CORS_URLS_REGEX = r"^/graphql/$"
CORS_ALLOW_METHODS = ["GET", "POST", "OPTIONS"]
# The library's defaults (Accept, Authorization, Content-Type, X-CSRFToken, ...) and the header a
# graphql-sse client or a reconnecting EventSource resumes with.
CORS_ALLOW_HEADERS = [*cors_default_headers, "last-event-id"]
# What a script needs to read beyond the safelisted headers: the id an INTERNAL_SERVER_ERROR names,
# when to retry a 429 or 503, why a token was refused.
CORS_EXPOSE_HEADERS = ["X-Request-ID", "Retry-After", "WWW-Authenticate"]
# Cookies (a session) cross origins only when asked for; bearer tokens need nothing. With cookies on,
# the same origins may pass CSRF (still with the CSRF token): a form on any other page cannot write.
CORS_ALLOW_CREDENTIALS = env_bool("CORS_ALLOW_CREDENTIALS", False)
if CORS_ALLOW_CREDENTIALS:
    CSRF_TRUSTED_ORIGINS = [*CSRF_TRUSTED_ORIGINS, *CORS_ALLOWED_ORIGINS]
if os.environ.get("WEBSOCKET_ALLOWED_ORIGINS", "").strip():
    raise ImproperlyConfigured(
        "WEBSOCKET_ALLOWED_ORIGINS is not a setting: websockets accept the site's own origin and those in "
        "CORS_ALLOWED_ORIGINS, as HTTP does. Put its origins (scheme://host[:port]) there and unset it."
    )

# Which process served a request; lets operators (and tests) tell instances apart. Unset, the
# host name: under Docker the container ID, distinct for every replica of one service.
INSTANCE_NAME = os.environ.get("INSTANCE_NAME") or socket.gethostname()

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "corsheaders",
    "pages",  # before graphene_django: its graphene/graphiql.html serves GraphiQL without a CDN
    "graphene_django",
    "api",
    "notifications",
]

MIDDLEWARE = [
    "core.logs.RequestLogMiddleware",
    "core.metrics.HttpMetricsMiddleware",
    # Before anything that may answer (redirects, whitenoise): preflights and refusals get its headers too.
    "corsheaders.middleware.CorsMiddleware",
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

# One host, or a primary and its standbys in libpq's multi-host form (core/database_url.py).
DATABASES = {"default": database_settings(os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue instead of failing.
    # WAL: a commit is one append to the log (one fsync, still durable) instead of a rollback
    # journal written, synced and deleted, and readers never wait for the writer.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL"}
    )
    # Each request thread keeps its connection (project/request_threads.py: a bounded set of
    # threads, so a bounded number of connections); close_old_connections still replaces one
    # that is older than this or broken, at the start and end of every request.
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("DATABASE_CONN_MAX_AGE", "600"))
elif os.environ.get("DATABASE_POOL", "1") != "0":
    # A PostgreSQL connection opened per request costs more than the mutation it serves;
    # Django's psycopg pool (not CONN_MAX_AGE, which ASGI cannot use safely) keeps them open.
    # Health checks replace connections a database restart or failover broke, before a request
    # sees them: the pool checks a connection it hands out unless it was handed out a moment ago
    # (core/db_pool.py, through the backend core/postgresql), instead of Django's check of every
    # one (CONN_HEALTH_CHECKS: a round trip before every request's first statement).
    DATABASES["default"]["ENGINE"] = "core.postgresql"
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": int(os.environ.get("DATABASE_POOL_MIN_SIZE", "2")),
        "max_size": int(os.environ.get("DATABASE_POOL_MAX_SIZE", "10")),
        "timeout": float(os.environ.get("DATABASE_POOL_TIMEOUT", "3")),
        # The pool retries a lost connection with a doubling backoff (1, 2, 4 s, ...): after a long
        # outage its next try could come as late as the outage was long. Giving an attempt up
        # after 2 s lets the next request start a fresh one at once, so a promoted standby is
        # used within about a second.
        "reconnect_timeout": float(os.environ.get("DATABASE_POOL_RECONNECT_SECONDS", "2")),
    }

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
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles")
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
    # Services own their transactions; project/views.py executes documents without graphene's wrapper.
    "ATOMIC_MUTATIONS": False,
}

# One Redis server (REDIS_URL), or the master a set of sentinels names (REDIS_SENTINELS and
# REDIS_SENTINEL_MASTER, which take precedence); core/redis_config.py reads them all.
REDIS = redis_config.from_environ(os.environ)
REDIS_URL = REDIS.url
if REDIS.configured:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "notifications.runtime.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": [REDIS.channel_layer_host()],
                "group_expiry": int(os.environ.get("CHANNEL_GROUP_EXPIRY", "86400")),
                "capacity": int(os.environ.get("CHANNEL_CAPACITY", "1000")),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# TLS ends at the balancer: trust its X-Forwarded-Proto, and redirect to HTTPS unless told not to.
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
# Heartbeats of HTTP subscription streams, for the same reasons: an SSE comment, a multipart `{}`
# part (Apollo's routers send one every 5 s).
SSE_HEARTBEAT_SECONDS = float(os.environ.get("SSE_HEARTBEAT_SECONDS", "15"))
MULTIPART_HEARTBEAT_SECONDS = float(os.environ.get("MULTIPART_HEARTBEAT_SECONDS", "5"))
GRAPHQL_WS_CONNECTION_INIT_TIMEOUT = int(os.environ.get("GRAPHQL_WS_CONNECTION_INIT_TIMEOUT", "10"))

LOG_LEVEL = os.environ.get("DJANGO_LOG_LEVEL", "INFO")
# JSON lines (one per request and websocket event, with ids) in production; text while developing.
LOG_JSON = env_bool("DJANGO_LOG_JSON", not DEBUG)
LOGGING = logging_config(structured=LOG_JSON, level=LOG_LEVEL)

# /metrics answers requests from these addresses or networks, or bearing METRICS_TOKEN.
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", "127.0.0.1,::1")
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# How far back `after: cursor` (of either subscription) can replay; older cursors must refetch.
PUBLICATION_RETENTION_SECONDS = int(os.environ.get("PUBLICATION_RETENTION_SECONDS", str(7 * 24 * 3600)))
# A subscriber whose socket holds more unread bytes than this is closed with 1013 (it resumes);
# an HTTP subscription stream is ended the same way.
WS_MAX_BUFFERED_BYTES = int(os.environ.get("WS_MAX_BUFFERED_BYTES", str(4 * 1024 * 1024)))
# How long the hub waits for an out-of-order publication before reading it from the database.
HUB_REORDER_WINDOW_SECONDS = float(os.environ.get("HUB_REORDER_WINDOW_SECONDS", "0.5"))
# While it has subscribers, each process reads the publication log this often: the bound on how
# late a publication whose broadcast never happened (its writer died after commit) is delivered.
HUB_LOG_CHECK_SECONDS = float(os.environ.get("HUB_LOG_CHECK_SECONDS", "10"))
# How long a writer waits for its publication's broadcast to leave before answering anyway (a
# broadcast that never leaves is delivered from the publication log).
BROADCAST_WAIT_SECONDS = float(os.environ.get("BROADCAST_WAIT_SECONDS", "0.5"))
# How long a new subscription waits for a hub that is (re)starting before it is refused (close 1013).
HUB_START_WAIT_SECONDS = float(os.environ.get("HUB_START_WAIT_SECONDS", "3"))
# On SIGTERM, how long in-flight HTTP requests may take to finish before websockets close with 1001.
GRACEFUL_SHUTDOWN_SECONDS = float(os.environ.get("GRACEFUL_SHUTDOWN_SECONDS", "10"))

# --- Abuse resistance (docs/security.md). Every limit is an environment variable. ---


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}.") from error


# How long a bearer token from createAuthor/createToken authenticates (docs/security.md).
API_TOKEN_TTL_SECONDS = env_int("API_TOKEN_TTL_SECONDS", 30 * 24 * 3600)
if API_TOKEN_TTL_SECONDS < 1:
    raise ImproperlyConfigured(f"API_TOKEN_TTL_SECONDS must be at least 1, got {API_TOKEN_TTL_SECONDS}.")
# Each process with signed-in sockets rechecks their credentials this often (two queries), so a
# revocation whose announcement could not be sent still closes them (docs/security.md).
AUTH_RECHECK_SECONDS = env_int("AUTH_RECHECK_SECONDS", 60)
if AUTH_RECHECK_SECONDS < 1:
    raise ImproperlyConfigured(f"AUTH_RECHECK_SECONDS must be at least 1, got {AUTH_RECHECK_SECONDS}.")


def env_rate(name: str, default: str) -> tuple[int, int] | None:
    """A rate limit "COUNT/SECONDS" (e.g. "60/60"); "off" disables it (None)."""
    value = os.environ.get(name, "").strip() or default
    if value.lower() in {"off", "0", "none"}:
        return None
    count, _, seconds = value.partition("/")
    try:
        rate = (int(count), int(seconds))
    except ValueError:
        rate = (0, 0)
    if rate[0] < 1 or rate[1] < 1:
        raise ImproperlyConfigured(f"{name} must look like COUNT/SECONDS (e.g. 60/60) or 'off', got {value!r}.")
    return rate


# Schema introspection, "Did you mean" suggestions and GraphiQL give the schema away: on only
# in development unless explicitly enabled.
GRAPHQL_INTROSPECTION = env_bool("GRAPHQL_INTROSPECTION", DEBUG)
GRAPHQL_GRAPHIQL = env_bool("GRAPHQL_GRAPHIQL", DEBUG)
# JSON-array (batched) HTTP bodies; each operation in a batch passes every limit on its own.
GRAPHQL_BATCH = env_bool("GRAPHQL_BATCH", False)
GRAPHQL_BATCH_MAX = env_int("GRAPHQL_BATCH_MAX", 10)
# Applied to every GraphQL document on HTTP and websockets alike (api/validation.py).
GRAPHQL_MAX_DOCUMENT_CHARS = env_int("GRAPHQL_MAX_DOCUMENT_CHARS", 20_000)
GRAPHQL_MAX_TOKENS = env_int("GRAPHQL_MAX_TOKENS", 2_000)
GRAPHQL_MAX_DEPTH = env_int("GRAPHQL_MAX_DEPTH", 10)
GRAPHQL_MAX_COST = env_int("GRAPHQL_MAX_COST", 5_000)
# Parsed documents kept for reuse, per process (api/documents.py), bounded by their estimated size.
GRAPHQL_DOCUMENT_CACHE_BYTES = env_int("GRAPHQL_DOCUMENT_CACHE_BYTES", 32 * 1024 * 1024)
# Websockets (notifications/transports/limits.py). Daphne itself drops frames over 1 MiB
# (--websocket-max-message-size); a createBlog with 100,000 characters of content fits below this.
GRAPHQL_WS_MAX_MESSAGE_BYTES = env_int("GRAPHQL_WS_MAX_MESSAGE_BYTES", 512 * 1024)
GRAPHQL_WS_MAX_SUBSCRIPTIONS = env_int("GRAPHQL_WS_MAX_SUBSCRIPTIONS", 20)
GRAPHQL_WS_MAX_CONNECTIONS_PER_IP = env_int("GRAPHQL_WS_MAX_CONNECTIONS_PER_IP", 100)
# Peers whose X-Forwarded-For is believed (the balancer); everyone else is identified by their own
# address. IPs or CIDR networks, comma-separated.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", "")
for _name, _entries in (("TRUSTED_PROXIES", TRUSTED_PROXIES), ("METRICS_ALLOWED_IPS", METRICS_ALLOWED_IPS)):
    try:
        parse_networks(tuple(_entries))
    except ValueError as _error:
        raise ImproperlyConfigured(f"{_name}: {_error}.") from None
# Fixed-window rate limits, shared by all instances through Redis (api/ratelimit.py).
RATE_LIMITS = {
    "mutation": env_rate("RATE_LIMIT_MUTATIONS", "60/60"),  # per signed-in author
    "createAuthor": env_rate("RATE_LIMIT_SIGN_UPS", "10/3600"),  # per client IP
    "createToken": env_rate("RATE_LIMIT_LOG_INS", "20/300"),  # per client IP
    "loginFailure": env_rate("RATE_LIMIT_LOGIN_FAILURES", "10/900"),  # failed createToken per username
}

# Sync views (the GraphQL endpoint) run on HTTP_THREADS threads reused request after request
# (project/request_threads.py); a request that finds them all busy waits for one. Health probes
# have HEALTH_THREADS of their own, so a busy instance still answers /healthz and /readyz.
HTTP_THREADS = env_int("HTTP_THREADS", 8)
HEALTH_THREADS = env_int("HEALTH_THREADS", 2)
for _name, _threads in (("HTTP_THREADS", HTTP_THREADS), ("HEALTH_THREADS", HEALTH_THREADS)):
    if _threads < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, got {_threads}.")

if REDIS.configured:
    # Rate-limit counters live in Redis (the same master as the channel layer) so every instance
    # counts the same; without Redis they fall back to the default per-process memory cache.
    # One pool per process, one connection per request thread at most (core/redis_pools.py).
    CACHES = {
        "default": REDIS.cache(
            max_connections=env_int("REDIS_CACHE_MAX_CONNECTIONS", HTTP_THREADS + HEALTH_THREADS),
            pool_timeout=float(os.environ.get("REDIS_CACHE_POOL_TIMEOUT", "2")),
        )
    }
