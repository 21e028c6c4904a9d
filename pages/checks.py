"""Say at start-up, not as a blank GraphiQL page, when its files were never fetched."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning, register

# One file per fetched package is enough to tell "never fetched" from "fetched".
GRAPHIQL_FILES = ("graphiql/graphiql.min.js", "graphiql/react.production.min.js", "graphiql/graphql-ws.min.js")


@register()
def graphiql_assets_present(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    vendor_dirs = [Path(d) for d in settings.STATICFILES_DIRS if isinstance(d, (str, Path))]
    missing = [name for name in GRAPHIQL_FILES if not any((d / name).is_file() for d in vendor_dirs)]
    if not missing:
        return []
    return [
        Warning(
            f"GraphiQL's browser files are missing ({', '.join(missing)}), so /graphql/ shows a blank page.",
            hint="Run `make install` (or `python scripts/fetch_static_assets.py`).",
            id="pages.W001",
        )
    ]
