"""tests/test_reads.py again, on PostgreSQL: the statement bounds, pagination and cursor errors.

Django's settings are read once per process, so the module runs in a pytest subprocess whose
DATABASE_URL points at a throwaway cluster (stack.PostgresCluster, stopped by this test).
"""

import os
import sys

import pytest

from stack import forkserver
from stack.services import REPO_ROOT, PostgresCluster


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_reads_hold_on_postgresql():
    with PostgresCluster() as postgres:
        env = {
            **os.environ,
            "DATABASE_URL": postgres.url,
            "DATABASE_POOL": "0",
            "READS_DATABASE_VENDOR": "postgresql",
        }
        result = forkserver.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_reads.py"],
            cwd=REPO_ROOT,
            env=env,
            timeout=600,
        )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary
