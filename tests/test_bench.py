"""`make bench-quick`: the benchmark harness runs end to end with tiny sizes and produces results.

Only that it produces results is asserted: timings on a shared 2-core machine are not a test.
"""

import json
import subprocess
import sys

import pytest

from stack.services import REPO_ROOT


@pytest.mark.slow
# `make test` builds the peer's virtualenv first (make bench-peer); run alone, the quick bench builds it.
@pytest.mark.timeout(720)
def test_bench_quick_produces_results(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=700,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [json_path] = tmp_path.glob("*.json")
    [md_path] = tmp_path.glob("*.md")
    results = json.loads(json_path.read_text())
    phases = results["phases"]

    assert results["machine"]["cores"] and results["machine"]["python"]
    for name in ("latency_1_instance", "latency_2_instances"):
        assert phases[name]["delivered"] > 0 and phases[name]["sent_to_push_ms"]["p50"] is not None, phases[name]
    assert phases["latency_2_instances"]["subscriber_instance"] == "web-2"
    assert phases["baseline_polling"]["events"] > 0 and phases["baseline_polling"]["sent_to_push_ms"]["p50"] is not None
    fanout = [v for k, v in phases.items() if k.startswith("fanout_")]
    assert fanout and fanout[0]["events"] > 0 and fanout[0]["server_cpu_s_per_event"] is not None
    assert phases["idle"]["cpu_s_per_s"] is not None
    # Edits and deletions (blogChanged) fanned out to the same subscribers, every kind delivered.
    changes = phases["changes"]
    assert changes["events_fully_delivered"] == changes["events"] >= 4, changes
    assert set(changes["sent_to_last_ms_by_kind"]) == {"CREATED", "UPDATED", "DELETED"}, changes
    sse = [v for k, v in phases.items() if k.startswith("sse_fanout_")]
    assert sse and sse[0]["events_fully_delivered"] == sse[0]["events"] > 0, sse
    assert phases["sse_idle"]["rss_kb_per_connection"] is not None
    assert phases["two_instances"]["storm"]["next_event_received"] > 0
    assert any(k.startswith("scale_") and v.get("deliveries_per_s") for k, v in phases.items())
    # Concurrent writers (each blog delivered on every instance) and the counter lock alone.
    for name in ("writers_1", "writers_2"):
        assert phases[name]["blogs"] > 0 and phases[name]["delivered_to_every_instance"] == phases[name]["blogs"]
    assert phases["counter_lock"]["clients_8"]["tps"] > 0
    # Reads: nested list pages, statements counted by PostgreSQL, the same at every page size.
    reads = [v for k, v in phases["reads"].items() if k.startswith("reads_")]
    assert len(reads) == 3 and all(r["requests"] > 0 and r["latency_ms"]["p50"] is not None for r in reads), reads
    assert all(len(set(r["statements"].values())) == 1 and r["statements_per_request"] <= 2 for r in reads), reads
    # Beside strawberry-django on both databases, and a storm on fresh instances.
    for kind in ("sqlite", "postgresql"):
        versus = phases[f"versus_peer_{kind}"]
        for side in ("ours", "peer"):
            assert versus[side]["delivered"] == versus[side]["events"] > 0, versus
        assert versus["p50_ratio"] is not None
    assert phases["fresh_storm"]["subscribers"] > 0 and phases["fresh_storm"]["refused"] is not None
    assert results["targets"]

    table = md_path.read_text()
    for heading in ("BASELINE", "faster", "| target |", "Concurrent writers", "SSE fan-out", "**Reads**"):
        assert heading in table, heading
    assert table.strip() in done.stdout  # printed too
    # A quick run never rewrites the published tables.
    assert "quick sizes" not in (REPO_ROOT / "docs" / "benchmarks.md").read_text()
