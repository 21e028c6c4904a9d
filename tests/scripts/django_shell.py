"""`manage.py shell -c CODE`, kept running: one Django process on the settings in its environment,
which runs each block of code it is sent as that command would, and answers with what it printed.

Tests change the live database from outside any server through it (an operator's script, a cron
job, a data fix), without paying a Django start for every change. Each block runs in fresh globals
and ends with the database connections closed, as the command's process would end.

Protocol, one JSON object per line: in {"code": "..."}; out {"stdout": "...", "error": null or the
traceback}.
"""

import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path

import django


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, as for manage.py
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    django.setup()
    from django.db import connections

    for line in sys.stdin:
        code = json.loads(line)["code"]
        printed = io.StringIO()
        error = None
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile(code, "<shell -c>", "exec"), {"__name__": "__main__"})
        except BaseException:  # SystemExit too: reported to the caller, as the command's exit status is
            error = traceback.format_exc()
        finally:
            connections.close_all()
        sys.stdout.write(json.dumps({"stdout": printed.getvalue(), "error": error}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
