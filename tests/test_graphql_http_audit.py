"""graphql-http's `auditServer`, the GraphQL-over-HTTP spec's reference audit suite, against a real Daphne.

Node runs tests/js/audit-server.mjs with graphql-http as pinned in tests/js/package-lock.json
(`make test` installs it with `npm ci`). The instance runs the production settings of the other
live servers plus introspection, which the audits need (they ask `__type`); production keeps
introspection off and nothing else follows that setting. Every MUST and SHOULD audit must pass.
"""

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from stack.services import REPO_ROOT, DaphneInstance

JS = REPO_ROOT / "tests" / "js"
# Audits a server fails unless it negotiates media types: proof the suite ran them.
NEGOTIATION_AUDITS = {"22EB", "572B", "FDE2", "7B9B"}


@pytest.fixture(scope="module")
def audited_server(live_env: dict[str, str]) -> Iterator[DaphneInstance]:
    with DaphneInstance("http-audit", {**live_env, "GRAPHQL_INTROSPECTION": "1"}) as server:
        yield server


def audit(url: str) -> list[dict[str, Any]]:
    """One result per audit: {id, name, status, reason?, response?}."""
    node = shutil.which("node")
    assert node, "node is missing: scripts/ensure-system-packages.sh installs Debian's nodejs"
    assert (JS / "node_modules" / "graphql-http").is_dir(), "tests/js/node_modules is missing: run `make js-deps`"
    run = subprocess.run(
        [node, "audit-server.mjs", url], cwd=JS, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def describe(results: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{result['id']} {result['status']}: {result['name']}: {result.get('reason')} (got {result.get('response')})"
        for result in results
    )


def test_every_must_and_should_audit_of_graphql_http_passes(audited_server):
    results = audit(f"{audited_server.url}/graphql/")
    levels = Counter(result["name"].split()[0] for result in results)
    assert levels["MUST"] >= 13 and levels["SHOULD"] >= 23, levels
    assert {result["id"] for result in results} >= NEGOTIATION_AUDITS
    failed = [
        result for result in results if result["name"].startswith(("MUST", "SHOULD")) and result["status"] != "ok"
    ]
    assert not failed, f"{len(failed)} MUST/SHOULD audits fail:\n{describe(failed)}"
    notices = [result for result in results if result["status"] != "ok"]
    print(f"{len(results)} audits ({dict(levels)}), optional ones not met: {describe(notices) or 'none'}")


def test_the_audit_harness_reports_a_server_that_does_not_speak_graphql(audited_server):
    """/healthz answers every request with 200 {"status": "ok"}: the harness must say so, not pass it."""
    results = {result["id"]: result for result in audit(f"{audited_server.url}/healthz")}
    assert results["22EB"]["status"] == "warn"  # no application/graphql-response+json
    assert results["9C48"]["status"] == "notice"  # a "mutation" over GET got 200
    assert results["9C48"]["response"]["status"] == 200
