"""Structured logs: one JSON object per line in production, plain text while developing.

Every line written while a request is handled carries its `request_id` (an incoming
X-Request-ID is reused, so a trace crosses the balancer and other services); websocket lines carry a
`connection_id`. Log aggregators then need no parsing rules, and a user's report with the id
from the response header leads straight to the lines.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings

from core.request_id import HEADER as REQUEST_ID_HEADER
from core.request_id import request_id_from, request_id_var

if TYPE_CHECKING:  # settings.py imports this module: keep its import light
    from django.http import HttpRequest, HttpResponse

connection_id_var: ContextVar[str | None] = ContextVar("connection_id", default=None)

request_logger = logging.getLogger("project.requests")

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
_STANDARD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class ContextFilter(logging.Filter):
    """Adds the current request/connection id and the instance name to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "connection_id", None) is None:
            record.connection_id = connection_id_var.get()
        record.instance = getattr(settings, "INSTANCE_NAME", None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, ids and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and value is not None and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class PlainFormatter(logging.Formatter):
    """Human-readable, with the request or connection id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = [f"{name}={value}" for name in ("request_id", "connection_id") if (value := getattr(record, name, None))]
        return f"{text} [{' '.join(ids)}]" if ids else text


class RequestLogMiddleware:
    """Gives each request an id (header in, header out) and logs one line when it is answered.

    Placed first in MIDDLEWARE, so the line covers static files and early rejections too.
    """

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response  # always sync: project/handlers.OneHopASGIHandler

    def __call__(self, request: HttpRequest) -> Any:
        request_id = request.id = request_id_from(request.headers.get(REQUEST_ID_HEADER))  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            self._finish(request, response, request_id, started)
            return response
        finally:
            request_id_var.reset(token)

    @staticmethod
    def _finish(request: HttpRequest, response: HttpResponse, request_id: str, started: float) -> None:
        from core.client_ip import request_ip  # not at the top: the settings import this module

        response[REQUEST_ID_HEADER] = request_id
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        request_logger.info(
            "%s %s %s %.1fms",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            extra={
                "event": "http_request",
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "client": request_ip(request),
                "user_agent": request.headers.get("User-Agent"),
            },
        )


def logging_config(*, structured: bool, level: str) -> dict[str, Any]:
    """The LOGGING setting: JSON lines when `structured`, readable text otherwise."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "core.logs.ContextFilter"}},
        "formatters": {
            "json": {"()": "core.logs.JsonFormatter"},
            "plain": {"()": "core.logs.PlainFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json" if structured else "plain",
                "filters": ["context"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Our request lines replace Daphne's access log.
            "django.channels.server": {"level": "WARNING"},
            "daphne": {"level": "WARNING"},
            # Django's own per-request 4xx/5xx lines repeat ours; its errors (with tracebacks) stay.
            "django.request": {"level": "ERROR"},
        },
    }
