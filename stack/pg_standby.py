"""PostgreSQL as a primary with a synchronous streaming standby, natively (`make stack
STACK_ARGS=--pg-standby`, tests/test_pg_failover.py).

The standby is a `pg_basebackup` of the primary that streams its WAL; the primary then waits
for the standby before answering any commit (`synchronous_standby_names`, `synchronous_commit =
on`), so whatever a client was told is committed is on both. `DATABASE_URL` names both hosts in
libpq's multi-host form with `target_session_attrs=read-write`: connections go to whichever
accepts writes. When the primary dies, `promote()` (what an orchestrator such as Patroni does in
production) makes the standby the primary; the instances find it on their next connection.
"""

from __future__ import annotations

import subprocess
import time

from stack.services import PostgresCluster, StackError, wait_for

STANDBY_NAME = "standby"  # application_name the primary waits for


class PostgresStandby(PostgresCluster):
    """A streaming standby of `primary`; `promote()` makes it a primary."""

    def __init__(self, primary: PostgresCluster, port: int | None = None) -> None:
        super().__init__(port, name="postgres-standby")
        self.primary = primary

    def start(self) -> None:
        if not self.data_dir.exists():
            self._run(
                [
                    str(self.bindir / "pg_basebackup"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.primary.port),
                    "-U",
                    "blog",
                    "-D",
                    str(self.data_dir),
                    "--wal-method=stream",
                    "--no-sync",
                    "--checkpoint=fast",
                ],
                **self._as_owner,
            )
            # After the primary's settings (copied with the data): its own port and socket, the
            # primary to stream from under the name the primary waits for, and no synchronous
            # standby of its own (promoted and alone, it must not wait for one). Once the stream
            # breaks, the standby waits wal_retrieve_retry_interval between tries, and a promotion
            # asked for during that wait often takes all of it: 5 s by default.
            (self.data_dir / "standby.signal").touch()
            with (self.data_dir / "postgresql.auto.conf").open("a") as conf:
                conf.write(
                    f"port = {self.port}\n"
                    f"unix_socket_directories = '{self.socket_dir}'\n"
                    f"primary_conninfo = 'host=127.0.0.1 port={self.primary.port} user=blog "
                    f"application_name={STANDBY_NAME}'\n"
                    "synchronous_standby_names = ''\n"
                    "wal_retrieve_retry_interval = '100ms'\n"
                )
        self._spawn([str(self.bindir / "postgres"), "-D", str(self.data_dir)], **self._as_owner)
        self._wait_ready(self._accepting, "pg_isready")

    def promote(self) -> None:
        """`pg_ctl promote` and wait until it accepts writes."""
        self._run(
            [str(self.bindir / "pg_ctl"), "promote", "-w", "-t", "30", "-D", str(self.data_dir)], **self._as_owner
        )

    def in_recovery(self) -> bool:
        return psql(self, "SELECT pg_is_in_recovery()") == "t"


def psql(cluster: PostgresCluster, sql: str) -> str:
    """One statement's result, unaligned (psql -Atc); StackError if it fails."""
    connect = ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "blog", "-d", "blog"]
    result = subprocess.run(
        [str(cluster.bindir / "psql"), *connect, "-X", "-Atc", sql],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode:
        raise StackError(f"psql on {cluster.name}: {sql!r} failed: {result.stderr.strip()}")
    return result.stdout.strip()


class PostgresPair:
    """A primary and its synchronous standby, started and stopped together."""

    def __init__(self) -> None:
        self.primary = PostgresCluster(name="postgres-primary")
        self.standby = PostgresStandby(self.primary)

    @property
    def url(self) -> str:
        """Both hosts, libpq's multi-host form: connections go to the one that accepts writes."""
        hosts = f"127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
        return f"postgresql://blog@{hosts}/blog?target_session_attrs=read-write"

    def start(self) -> None:
        try:
            self.primary.start()
            self.standby.start()
            # Only now: with it set before the standby streams, every commit would wait for it.
            psql(self.primary, f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
            psql(self.primary, "ALTER SYSTEM SET synchronous_commit = on")
            psql(self.primary, "SELECT pg_reload_conf()")
            wait_for(self.synchronous, 30, "the standby streaming synchronously", log_path=self.standby.log_path)
        except BaseException:
            self.stop()
            raise

    def synchronous(self) -> bool:
        state = psql(
            self.primary, f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{STANDBY_NAME}'"
        )
        return state == "sync" and psql(self.primary, "SHOW synchronous_commit") == "on"

    def fail_over(self) -> float:
        """SIGKILL the primary and promote the standby, as an orchestrator would; seconds it took
        from the kill until the standby accepted writes."""
        killed = time.monotonic()
        self.primary.kill()
        self.standby.promote()
        return time.monotonic() - killed

    def stop(self) -> None:
        self.standby.stop()
        self.primary.stop()
