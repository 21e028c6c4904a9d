"""How `make test` spreads the suite over xdist workers (`pytest -n N --dist loadfile`).

A work unit is a whole module, so its module-scoped fixtures start once; the modules that share a
session fixture slow to start (the Docker engine and the run's image, the PostgreSQL stack) form
one unit, so that fixture starts once per run, on one worker. The units that take longest are
handed out first, so that no worker is left running one alone at the end; those with a
transactional database test go last, as Django orders them.

xdist's own `--dist loadgroup` cannot do this with this pytest: it marks a group by rewriting
node ids, which pytest no longer lets a plugin do. Grouping is decided here instead, by module
path, through xdist's documented scheduler hook; tests/test_internals.py checks the one xdist
method it overrides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from xdist.scheduler import LoadScopeScheduling

if TYPE_CHECKING:
    from xdist.remote import Producer

# Module -> the session fixture it shares with the other modules named with it: the name of their
# work unit. A module that uses one of these fixtures and is missing here is refused at collection.
SHARED_FIXTURE_GROUPS = {
    "tests/test_compose.py": "docker_engine",
    "tests/test_compose_failover.py": "docker_engine",
    "tests/test_compose_sentinel.py": "docker_engine",
    "tests/test_deploy_files.py": "docker_engine",
    "tests/test_faults.py": "shared_stack",
    "tests/test_http_streams_stack.py": "shared_stack",
    "tests/test_stack.py": "shared_stack",
}
SHARED_FIXTURES = list(dict.fromkeys(SHARED_FIXTURE_GROUPS.values()))  # in the order they are handed out


def work_unit(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return SHARED_FIXTURE_GROUPS.get(module, module)


class SharedFixtureScheduling(LoadScopeScheduling):
    """xdist's scope scheduling, with a module (or the modules of one shared fixture) as the scope."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> SharedFixtureScheduling | None:
    if config.getvalue("dist") == "loadfile":
        return SharedFixtureScheduling(config, log)
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a module that uses a shared fixture outside its unit; on a worker, order the units longest first.

    Last, after pytest-django's own ordering, which a stable sort keeps within each unit. Every worker
    sorts alike, as the scheduler needs (`make test` passes --no-loadscope-reorder so it keeps this order).
    """
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        for fixture in SHARED_FIXTURES:
            if fixture in getattr(item, "fixturenames", ()) and SHARED_FIXTURE_GROUPS.get(module) != fixture:
                raise pytest.UsageError(
                    f"{module} uses {fixture}: add it to SHARED_FIXTURE_GROUPS in tests/scheduling.py, "
                    "so that fixture starts once per run"
                )
    if hasattr(config, "workerinput"):
        # A transactional test empties the tables when it ends, rows the migrations wrote included:
        # as Django runs them after every other test, the units holding one go out last, so on each
        # worker they follow every unit that needs those rows.
        flushing = {work_unit(item.nodeid) for item in items if transactional(item)}

        def weight(item: pytest.Item) -> tuple[bool, int]:
            unit = work_unit(item.nodeid)
            if unit in SHARED_FIXTURES:
                return unit in flushing, SHARED_FIXTURES.index(unit)
            return unit in flushing, len(SHARED_FIXTURES) + (0 if item.get_closest_marker("slow") else 1)

        items.sort(key=weight)


def transactional(item: pytest.Item) -> bool:
    """A test pytest-django runs in a transaction it flushes afterwards (as Django's TransactionTestCase)."""
    marker = item.get_closest_marker("django_db")
    if marker is not None and (marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences")):
        return True
    return bool({"transactional_db", "live_server"} & set(getattr(item, "fixturenames", ())))
