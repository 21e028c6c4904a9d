"""stack.services: what the stacks the tests start are made of, where it is not a process."""

import sqlite3
from contextlib import closing
from pathlib import Path

from django.apps import apps as django_apps
from django.db.migrations.loader import MigrationLoader

from stack.services import migrate, production_env


def _contents(path: Path) -> tuple[set[tuple[str, str]], set[str], int]:
    """The migrations recorded as applied, the tables, and the publication counter's rows."""
    with closing(sqlite3.connect(path)) as database:
        applied = set(database.execute("SELECT app, name FROM django_migrations").fetchall())
        tables = {name for (name,) in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (counters,) = database.execute("SELECT count(*) FROM notifications_publicationcounter").fetchone()
    return applied, tables, counters


def test_a_new_sqlite_database_gets_every_migration_and_is_a_database_of_its_own(tmp_path: Path):
    copies = [tmp_path / "first.sqlite3", tmp_path / "second.sqlite3"]
    for path in copies:
        migrate(production_env(f"sqlite:///{path}", ""))

    on_disk = set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)
    models = {model._meta.db_table for model in django_apps.get_models()}
    for path in copies:
        applied, tables, counters = _contents(path)
        assert applied == on_disk
        assert models <= tables
        assert counters == 1  # the rows a migration writes come along
    with closing(sqlite3.connect(copies[0])) as first:
        first.execute("DELETE FROM django_migrations")
        first.commit()
    assert _contents(copies[1])[0] == on_disk


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
