# The web tier: one Daphne process per container, behind HAProxy (docker-compose.yml).
# Settings come from the environment at run time (README, "Configuration"); no secret is
# baked into the image. Build from a clean clone: docker build -t blog-push .

# GraphiQL's browser files: the pinned npm tarballs `make install` fetches, checked against the
# same sha512 and sha256 values (scripts/fetch_static_assets.py). They are fetched here rather
# than copied from the builder's tree (.dockerignore keeps static-vendor/ out), so every build
# ships the same bytes whatever the working tree holds. Cached until the script changes.
FROM python:3.11-slim-bookworm AS graphiql
COPY scripts/fetch_static_assets.py /fetch_static_assets.py
RUN python /fetch_static_assets.py --dest /static-vendor

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_DEBUG=0

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app

WORKDIR /app

# Dependencies first, in their own layer: rebuilt only when a requirements file changes.
# django-channels-graphql-ws is installed without its declared dependencies (see
# requirements-nodeps.txt). No compiler is needed: every dependency is a prebuilt wheel
# (psycopg[binary] brings libpq) except `promise` (graphene-django's), published only as a
# source archive: pure Python, so pip builds it here without a compiler.
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install -r requirements.txt \
    && pip install --no-deps -r requirements-nodeps.txt

COPY --from=graphiql /static-vendor ./static-vendor
COPY . .

# Static files for whitenoise, GraphiQL's checked again first (no download: --check fails the
# build if one is missing or altered). Settings refuse to load without a secret when DEBUG is
# off, so this one command gets a throwaway one; it is not an ENV or ARG and never reaches run time.
RUN python scripts/fetch_static_assets.py --check \
    && DJANGO_SECRET_KEY=build-only-not-secret python manage.py collectstatic --noinput

USER app
EXPOSE 8000

# /healthz answers 200 while the process serves HTTP. Asked with bash's /dev/tcp (slim images have
# no curl): a Python started for every check can miss the timeout on a busy host and call a
# serving replica unhealthy. Its Host is 127.0.0.1, so DJANGO_ALLOWED_HOSTS must keep 127.0.0.1.
HEALTHCHECK --interval=2s --timeout=3s --start-period=20s --retries=8 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8000 && printf 'GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

# No --proxy-headers: Daphne would take the left-most X-Forwarded-For entry, which the client
# writes. The app finds the client address itself, believing only TRUSTED_PROXIES (the lb).
# -v 0: no Daphne access log between the app's JSON log lines (it logs each request itself).
ENTRYPOINT ["python", "-m", "project.server", "-v", "0", "-b", "0.0.0.0", "-p", "8000", "project.asgi:application"]
