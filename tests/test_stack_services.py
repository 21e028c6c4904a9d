"""stack.services: what the stacks the tests start are made of, where it is not a process."""

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.apps import apps as django_apps
from django.db.migrations.loader import MigrationLoader

from stack.services import PostgresCluster, manage, migrate, production_env


def _migrations_on_disk() -> set[tuple[str, str]]:
    return set(MigrationLoader(None, ignore_no_migrations=True).disk_migrations)


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

    on_disk = _migrations_on_disk()
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


# What manage.py migrate made of a PostgreSQL database, read from the catalogs.
POSTGRES_SHAPE = {
    "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default, is_identity "
    "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "sequences": "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1",
    "migrations": "SELECT app, name FROM django_migrations ORDER BY 1, 2",
    "counter": "SELECT * FROM notifications_publicationcounter",
}


def _postgres_shape(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as connection:
        return {name: connection.execute(query).fetchall() for name, query in POSTGRES_SHAPE.items()}


@pytest.fixture(scope="module")
def postgres_databases() -> Iterator[list[str]]:
    """A cluster with four empty databases."""
    with PostgresCluster(name="postgres-migrate") as cluster:
        base = cluster.url.rsplit("/", 1)[0]
        names = ["second", "third", "fourth"]
        with psycopg.connect(cluster.url, autocommit=True) as connection:
            for name in names:
                connection.execute(f'CREATE DATABASE "{name}"')
        yield [cluster.url, *(f"{base}/{name}" for name in names)]


def test_a_new_postgresql_database_is_what_manage_py_migrate_makes_and_a_database_of_its_own(postgres_databases):
    """Empty databases after the first a process migrates are restored from it; each must be
    what manage.py migrate makes: tables, columns, indexes, constraints, sequence positions, the
    migrations recorded and the rows they wrote."""
    reference, first, second, _ = postgres_databases
    manage(production_env(reference, ""), "migrate", "--noinput")
    for url in (first, second):
        migrate(production_env(url, ""))
    shape = _postgres_shape(reference)
    assert _postgres_shape(first) == shape
    assert _postgres_shape(second) == shape
    assert {tuple(row) for row in shape["migrations"]} == _migrations_on_disk()
    assert len(shape["counter"]) == 1
    with psycopg.connect(first) as connection:
        connection.execute("DELETE FROM django_migrations")
    assert _postgres_shape(second)["migrations"] == shape["migrations"]


def test_a_postgresql_database_that_holds_tables_is_migrated_in_place(postgres_databases):
    url = postgres_databases[3]
    with psycopg.connect(url) as connection:
        connection.execute("CREATE TABLE kept (value text)")
        connection.execute("INSERT INTO kept VALUES ('written before')")
    migrate(production_env(url, ""))
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT value FROM kept").fetchall() == [("written before",)]
        assert connection.execute("SELECT count(*) FROM django_migrations").fetchone() == (len(_migrations_on_disk()),)
