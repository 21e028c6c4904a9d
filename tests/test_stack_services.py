"""stack.services: what the stacks the tests start are made of, where it is not a process."""

import sqlite3
from contextlib import closing
from pathlib import Path

from stack.services import manage, migrate, production_env


def _contents(path: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]], int]:
    """The schema, the migrations recorded as applied, and the publication counter's rows."""
    with closing(sqlite3.connect(path)) as database:
        schema = database.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name").fetchall()
        applied = database.execute("SELECT app, name FROM django_migrations ORDER BY app, name").fetchall()
        (counters,) = database.execute("SELECT count(*) FROM notifications_publicationcounter").fetchone()
    return schema, applied, counters


def test_a_new_sqlite_database_gets_what_manage_py_migrate_gives_it(tmp_path: Path):
    env = production_env("", "")
    copies = [tmp_path / "first.sqlite3", tmp_path / "second.sqlite3"]
    for path in copies:
        migrate({**env, "DATABASE_URL": f"sqlite:///{path}"})
    migrated = tmp_path / "migrated.sqlite3"
    manage({**env, "DATABASE_URL": f"sqlite:///{migrated}"}, "migrate", "--noinput")

    expected = _contents(migrated)
    assert len(expected[0]) > 10 and expected[2] == 1, expected  # a real schema, the counter row included
    assert [_contents(path) for path in copies] == [expected, expected]
    # The copies are databases of their own.
    with closing(sqlite3.connect(copies[0])) as first:
        first.execute("DELETE FROM django_migrations")
        first.commit()
    assert _contents(copies[1]) == expected


def test_an_existing_database_is_migrated_in_place(tmp_path: Path):
    path = tmp_path / "db.sqlite3"
    with closing(sqlite3.connect(path)) as database:
        database.execute("CREATE TABLE kept (value TEXT)")
        database.execute("INSERT INTO kept VALUES ('written before')")
        database.commit()
    migrate({**production_env(f"sqlite:///{path}", "")})
    with closing(sqlite3.connect(path)) as database:
        assert database.execute("SELECT value FROM kept").fetchall() == [("written before",)]
        assert database.execute("SELECT count(*) FROM django_migrations").fetchone()[0] > 10
