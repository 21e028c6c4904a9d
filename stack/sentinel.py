"""Redis with Sentinel, natively: a master, a replica and three sentinels on free loopback ports.

What `REDIS_SENTINELS` / `REDIS_SENTINEL_MASTER` point at in production, started the way the
rest of the stack is (stack/services.py): each process is a `Service` we own, with its own temp
dir and log, stopped on `stop()`; nothing else is ever signalled.

Timings (the numbers the failover bound in docs/scaling.md is built from):
- `down-after-milliseconds` 1000: a sentinel calls the master down after 1 s without a reply
  to its pings (sent every second). Production setups use 5-30 s to ride out network blips;
  every figure below moves with it one for one.
- `failover-timeout` 4000: how long a failover may stay stuck in one step (the promoted replica
  must be confirmed within it), and, doubled, how long a sentinel waits before it tries again
  after a failed attempt (a split vote).
- `parallel-syncs` 1 and a quorum of 2 of 3: two sentinels must agree the master is down, and a
  majority (2) must elect the one that runs the failover.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis

from stack.services import RedisServer, Service, StackError, free_port, log_tail, redis_client, wait_for


@dataclass(frozen=True)
class SentinelTimings:
    down_after_ms: int = 1000
    failover_timeout_ms: int = 4000
    parallel_syncs: int = 1
    quorum: int = 2


class RedisSentinel(Service):
    """One `redis-server <conf> --sentinel`. Sentinel rewrites its config file with what it
    learns (the current master, the replicas, the other sentinels), so the file lives in the
    temp dir and survives a restart, as a real sentinel's does."""

    def __init__(
        self,
        name: str,
        master_name: str,
        master_port: int,
        timings: SentinelTimings,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        super().__init__(name)
        self.port = free_port()
        self.master_name = master_name
        self.master_port = master_port
        self.timings = timings
        self.password = password
        self.sentinel_password = sentinel_password
        self.config_path = self.tmp / "sentinel.conf"

    def client(self) -> redis.Redis:
        return redis_client(self.port, self.sentinel_password)

    def start(self) -> None:
        if not self.config_path.exists():
            self._write_config()
        self._spawn(["redis-server", str(self.config_path), "--sentinel"])
        self._wait_ready(self._monitoring, "SENTINEL get-master-addr-by-name")

    def _write_config(self) -> None:
        name, t = self.master_name, self.timings
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.tmp}",
            f"sentinel monitor {name} 127.0.0.1 {self.master_port} {t.quorum}",
            f"sentinel down-after-milliseconds {name} {t.down_after_ms}",
            f"sentinel failover-timeout {name} {t.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} {t.parallel_syncs}",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {name} {self.password}")
        if self.sentinel_password:
            # Clients must AUTH, and so must the other sentinels (sentinel-pass is what they send).
            lines += [f"requirepass {self.sentinel_password}", f"sentinel sentinel-pass {self.sentinel_password}"]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _monitoring(self) -> bool:
        try:
            return self.master_address() is not None
        except (redis.RedisError, OSError):
            return False

    def master_address(self) -> tuple[str, int] | None:
        """Where this sentinel says the master is now."""
        with self.client() as client:
            answer = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return (answer[0], int(answer[1])) if answer else None

    def state(self) -> dict[str, str]:
        """SENTINEL MASTER <name>: flags, num-slaves, num-other-sentinels, ..."""
        with self.client() as client:
            return dict(client.execute_command("SENTINEL", "MASTER", self.master_name))

    def replicas(self) -> list[dict[str, str]]:
        with self.client() as client:
            reply = client.execute_command("SENTINEL", "REPLICAS", self.master_name)
        return list(reply)  # redis-py parses each replica into a dict


class SentinelRedis:
    """Two redis-server nodes (a master and its replica) and three sentinels watching them.

    Use as a context manager, or `start()` / `stop()`. `env()` is what the instances need;
    `master()`, `wait_for_failover()` and `rejoin()` drive a failover drill.
    """

    MASTER_NAME = "blogpush"

    def __init__(
        self,
        *,
        sentinels: int = 3,
        timings: SentinelTimings | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
        master_name: str = MASTER_NAME,
    ) -> None:
        self.timings = timings or SentinelTimings()
        self.master_name = master_name
        self.password = password
        self.sentinel_password = sentinel_password
        first = RedisServer(name="redis-a", password=password)
        self.nodes = [first, RedisServer(name="redis-b", password=password, replica_of=first.port)]
        self.sentinels = [
            RedisSentinel(
                f"sentinel-{i}",
                master_name,
                first.port,
                self.timings,
                password=password,
                sentinel_password=sentinel_password,
            )
            for i in range(1, sentinels + 1)
        ]
        self._cleanup = ExitStack()
        self.last_failover_at: float | None = None

    def __enter__(self) -> SentinelRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def services(self) -> list[Service]:
        return [*self.nodes, *self.sentinels]

    def env(self) -> dict[str, str]:
        """The settings an instance needs to find the master through the sentinels."""
        env = {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels),
            "REDIS_SENTINEL_MASTER": self.master_name,
        }
        if self.password:
            env["REDIS_PASSWORD"] = self.password
        if self.sentinel_password:
            env["REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        return env

    def start(self) -> SentinelRedis:
        with ExitStack() as cleanup:
            for service in self.services:
                cleanup.callback(service.stop)
            for node in self.nodes:
                node.start()
            for sentinel in self.sentinels:
                sentinel.start()
            # Ready means a failover could happen now: every sentinel knows the replica (healthy,
            # in sync) and the other sentinels (for the quorum and the vote).
            self.wait_healthy(timeout=30)
            self._cleanup = cleanup.pop_all()
        return self

    def stop(self) -> None:
        """Stop everything started, sentinels first (so none fails over while nodes stop)."""
        self._cleanup.close()

    # --- who is who ----------------------------------------------------------------------------

    def node_at(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise StackError(f"no node of ours listens on {port}")

    def master(self) -> RedisServer:
        """The node a majority of the sentinels name as master."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            try:
                address = sentinel.master_address()
            except (redis.RedisError, OSError):
                continue
            if address is not None:
                votes[address[1]] = votes.get(address[1], 0) + 1
        port, count = max(votes.items(), key=lambda item: item[1], default=(0, 0))
        if count <= len(self.sentinels) // 2:
            raise StackError(f"the sentinels do not agree on a master: {votes}")
        return self.node_at(port)

    def replica(self) -> RedisServer:
        master = self.master()
        return next(node for node in self.nodes if node is not master)

    # --- waiting for states ----------------------------------------------------------------------

    def _all_sentinels_name(self, port: int) -> bool:
        try:
            return all(sentinel.master_address() == ("127.0.0.1", port) for sentinel in self.sentinels)
        except (redis.RedisError, OSError):
            return False

    def _unhealthy(self) -> str | None:
        """What is not healthy yet (the first thing found), or None."""
        try:
            master = self.master()
            for node in self.nodes:
                with node.client() as client:
                    role = client.info("replication")
                if node is master:
                    if role["role"] != "master" or role.get("connected_slaves", 0) < len(self.nodes) - 1:
                        return f"{node.name}: role {role['role']}, {role.get('connected_slaves', 0)} replicas"
                elif role["role"] != "slave" or role.get("master_link_status") != "up":
                    return f"{node.name}: role {role['role']}, link {role.get('master_link_status')}"
            others = len(self.sentinels) - 1
            for sentinel in self.sentinels:
                state = sentinel.state()
                if state["flags"] != "master" or int(state["num-other-sentinels"]) < others:
                    return f"{sentinel.name}: flags {state['flags']}, {state['num-other-sentinels']} other sentinels"
                replicas = sentinel.replicas()
                if len(replicas) < len(self.nodes) - 1 or any(
                    r["flags"] != "slave" or r.get("master-link-status") != "ok" for r in replicas
                ):
                    return f"{sentinel.name}: replicas {[(r['name'], r['flags']) for r in replicas]}"
            if not self._all_sentinels_name(master.port):
                return "the sentinels do not all name the master"
            return None
        except (redis.RedisError, OSError, StackError, KeyError) as error:
            return f"{type(error).__name__}: {error}"

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until the master has its replica in sync and every sentinel sees both, and each other."""
        missing: str | None = None

        def healthy() -> bool:
            nonlocal missing
            missing = self._unhealthy()
            return missing is None

        try:
            wait_for(healthy, timeout, "Sentinel: master, replica and sentinels healthy")
        except StackError as error:
            logs = "\n".join(f"--- {s.name}:\n{log_tail(s.log_path, 15)}" for s in self.services)
            raise StackError(f"{str(error).splitlines()[0]}\nstill: {missing}\n{logs}") from None

    def wait_for_failover(self, old: RedisServer, timeout: float = 30) -> tuple[RedisServer, float]:
        """Until every sentinel names another node as master and it says so itself.

        Returns the new master and the seconds this waited.
        """
        began = time.monotonic()

        def switched() -> bool:
            other = next(node for node in self.nodes if node is not old)
            if not self._all_sentinels_name(other.port):
                return False
            try:
                with other.client() as client:
                    return client.info("replication")["role"] == "master"
            except (redis.RedisError, OSError):
                return False

        wait_for(switched, timeout, "Sentinel failover", log_path=self.sentinels[0].log_path)
        self.last_failover_at = time.monotonic()
        return self.master(), time.monotonic() - began

    def switchover(self, timeout: float = 30) -> tuple[RedisServer, float]:
        """A planned failover (`SENTINEL FAILOVER`): the master lives on, demoted to a replica.

        Returns once the old master is demoted, which is when Sentinel disconnects its clients: it
        keeps answering as a master until the sentinels see it report that role for a while after
        the switch. The replica it becomes syncs on its own; `wait_healthy` waits for that too.
        """
        old = self.master()
        with self.sentinels[0].client() as client:
            client.execute_command("SENTINEL", "FAILOVER", self.master_name)
        new, waited = self.wait_for_failover(old, timeout)

        def demoted() -> bool:
            try:
                with old.client() as client:
                    return client.info("replication")["role"] == "slave"
            except (redis.RedisError, OSError):  # Sentinel disconnects its clients as it demotes it
                return False

        wait_for(demoted, timeout, "the old master demoted to a replica", log_path=self.sentinels[0].log_path)
        return new, waited

    def wait_vote_cooldown(self) -> None:
        """Until a new failover could start at once: a sentinel that voted in an election starts
        none of its own for twice the failover-timeout ("Next failover delay" in its log), so a
        drill that kills masters back to back would otherwise measure that wait, not a failover."""
        if self.last_failover_at is not None:
            ready_at = self.last_failover_at + 2 * self.timings.failover_timeout_ms / 1000 + 0.5
            time.sleep(max(0.0, ready_at - time.monotonic()))

    def wait_replicated(self, timeout: float = 10) -> None:
        """Until the replica has everything the master wrote so far (async replication caught up)."""
        master = self.master()
        with master.client() as client:
            client.execute_command("WAIT", len(self.nodes) - 1, int(timeout * 1000))
            offset = client.info("replication")["master_repl_offset"]

        def caught_up() -> bool:
            with master.client() as client:
                slaves = [v for k, v in client.info("replication").items() if k.startswith("slave")]
            return bool(slaves) and all(int(s["offset"]) >= offset for s in slaves if isinstance(s, dict))

        wait_for(caught_up, timeout, "replica caught up with the master", log_path=master.log_path)

    def rejoin(self, node: RedisServer, timeout: float = 30) -> None:
        """Start a stopped node again as a replica of the current master, until it is a healthy
        replica the sentinels could promote (what an operator does after a failover)."""
        if node.running:
            raise StackError(f"{node.name} is still running")
        node.replica_of = self.master().port
        node.start()
        self.wait_healthy(timeout)


FAILED_ELECTION = "-failover-abort-not-elected"
# A sentinel whose election failed tries again 2 x failover-timeout after it started that attempt,
# plus up to this much that Sentinel adds at random, so that the candidates stop colliding.
ELECTION_RETRY_DESYNC_S = 1.0


def failed_elections_in_logs(logs: Iterable[str]) -> int:
    """Elections that failed (a split vote: no candidate got a majority), given each sentinel's log.
    Each candidate of a failed election logs that it was not elected; the most any one of them
    logged is how many times the group had to wait and try again."""
    return max((log.count(FAILED_ELECTION) for log in logs), default=0)


def failed_elections(sentinels: list[RedisSentinel]) -> int:
    """failed_elections_in_logs over these sentinels' log files, so far."""
    return failed_elections_in_logs(
        sentinel.log_path.read_text(errors="replace") for sentinel in sentinels if sentinel.log_path.exists()
    )


def sentinel_log_lines(sentinels: list[RedisSentinel], markers: tuple[str, ...]) -> list[str]:
    """Lines of the sentinels' logs that contain any marker (e.g. '+switch-master'), for reports."""
    found = []
    for sentinel in sentinels:
        path: Path = sentinel.log_path
        if path.exists():
            found += [
                f"{sentinel.name}: {line}"
                for line in path.read_text(errors="replace").splitlines()
                if any(m in line for m in markers)
            ]
    return found
