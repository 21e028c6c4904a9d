# The web tier: one Daphne process per container, behind nginx (docker-compose.yml).
# Settings come from the environment at run time (README, "Configuration"); no secret is
# baked into the image. Build: docker build -t blog-push .
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
# requirements-nodeps.txt); every wheel needed is prebuilt (psycopg[binary] brings libpq).
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install -r requirements.txt \
    && pip install --no-deps -r requirements-nodeps.txt

COPY . .

# Static files for whitenoise. Settings refuse to load without a secret when DEBUG is off, so
# this one command gets a throwaway one; it is not an ENV or ARG and never reaches run time.
RUN DJANGO_SECRET_KEY=build-only-not-secret python manage.py collectstatic --noinput

USER app
EXPOSE 8000

# /healthz answers 200 while the process serves HTTP (slim images have no curl; no proxy for
# loopback). Its Host is 127.0.0.1, so DJANGO_ALLOWED_HOSTS must keep 127.0.0.1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/healthz', timeout=2)"]

# --proxy-headers: the client address comes from nginx's X-Forwarded-For.
ENTRYPOINT ["python", "-m", "project.server", "--proxy-headers", "-b", "0.0.0.0", "-p", "8000", "project.asgi:application"]
