#!/usr/bin/env python
"""The peer's manage.py (bench/peer/.venv/bin/python manage.py migrate --run-syncdb)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
