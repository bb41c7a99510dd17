"""A real cluster for the fault tests: one etcd and N `minilog serve --metadata etcd://...` processes.

Theory of operation. `open_cluster(tmp_path, n)` (an async context manager,
run inside the test's trio loop) starts a test etcd (tests/_etcd_fixtures.py's
`run_etcd`: 1 s minimum lease) and brokers 1..n, each a real process:

    minilog serve --broker-id I --metadata etcd://127.0.0.1:E --data-dir D/broker-I
                  --host 127.0.0.<10+I> --port P [--set K=V ...]

Broker I listens on its own loopback address, 127.0.0.<10+I> (test clients
connect from 127.0.0.1), on a port chosen free once and kept across
restarts, with its own data dir kept across restarts. With `proxied=True`
each broker gets a `FaultProxy` (tests/_fault_proxy.py) on its own address
and advertises the proxy's address (`advertised.listeners`), so clients and
the other brokers' replica fetchers come through it and the proxy tells the
fetchers apart by source address (each broker's fetcher binds its source
address to its broker's host).

Settings are small so that a fault costs seconds: a 2 s broker session
(etcd lease), replica.lag.time.max.ms 2000, RF 3 and min.insync.replicas 2
by default; a test overrides any of them.

Helpers: `wait_ready` (every live broker registered, a topic's partitions
led and with full ISR, seen through the Python Admin client), `leader`,
`wait_leader`, `wait_isr`, `kill` (SIGKILL), `pause`/`resume` (SIGSTOP /
SIGCONT), `restart` (same data dir and port), `stop` (SIGTERM: a controlled
shutdown), `kill_etcd`/`restart_etcd`, `read_partition` (from the leader)
and `replica_batches` (a replica's batches from its files).

Rules: no fixed sleeps (every wait polls a condition with a deadline and
says what it waited for); every process is killed and every port closed
when the context exits, also on failure (paused processes are continued
first so that SIGKILL reaps them); a broker that dies on its own makes the
waits fail with the end of its log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import trio

from _etcd_fixtures import etcd_binary, run_etcd
from _fault_proxy import FaultProxy
from minilog.client.admin import AsyncAdmin
from minilog.client.consumer import AsyncConsumer
from minilog.metastore import LocalEtcd
from minilog.protocol import iter_batches
from minilog.storage import partition_dir_name

__all__ = ["BrokerNode", "CLUSTER_SETTINGS", "GiveUp", "LocalCluster", "ProduceWorkload", "host_of", "open_cluster",
           "wait_for"]

T = TypeVar("T")

START_TIMEOUT_S = 30.0        # process start to "listening on"
READY_TIMEOUT_S = 30.0        # cluster (or a topic) ready
STOP_TIMEOUT_S = 20.0         # SIGTERM to exit (controlled shutdown included)
_SERVE = [sys.executable, "-c", "import sys; from minilog.cli import main; sys.exit(main())", "serve"]

CLUSTER_SETTINGS: dict[str, str] = {
    "broker.session.timeout.ms": "2000",
    "replica.lag.time.max.ms": "2000",
    "replica.socket.timeout.ms": "3000",      # a blackholed fetch is given up after 3 s, not 30
    "replica.fetch.backoff.ms": "200",
    "min.insync.replicas": "2",
    "default.replication.factor": "3",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "3",
    "controlled.shutdown.timeout.ms": "10000",
    "shutdown.timeout.ms": "2000",
}


def host_of(broker_id: int) -> str:
    """Broker `broker_id`'s loopback address (its listener, its fetchers' source)."""
    assert 1 <= broker_id <= 200, broker_id
    return f"127.0.0.{10 + broker_id}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class GiveUp(AssertionError):
    """Raised by a `wait_for` predicate to fail at once (a broker died): not "not yet"."""


async def wait_for(predicate: Callable[[], Awaitable[T]], what: str, timeout_s: float = READY_TIMEOUT_S,
                   interval_s: float = 0.05, on_timeout: Callable[[], str] | None = None) -> T:
    """Poll the async `predicate` until it returns something truthy; fail after `timeout_s`.

    Exceptions from the predicate count as "not yet" (a broker may be down
    while we ask); the last one is named in the failure.
    """
    deadline = trio.current_time() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            value = await predicate()
            if value:
                return value
        except GiveUp:
            raise
        except Exception as exc:  # "not yet": reported at the deadline
            last = exc
        if trio.current_time() > deadline:
            extra = f"; last error: {last!r}" if last else ""
            more = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for: {what}{extra}{more}")
        await trio.sleep(interval_s)


class BrokerNode:
    """One `minilog serve` process of the cluster; keeps its id, address and data dir across restarts."""

    def __init__(self, broker_id: int, base_dir: str, etcd_endpoint: str, settings: dict[str, str]) -> None:
        self.broker_id = broker_id
        self.host = host_of(broker_id)
        self.port = free_port(self.host)
        self.data_dir = os.path.join(base_dir, f"broker-{broker_id}")
        self.log_path = os.path.join(base_dir, f"broker-{broker_id}.log")
        self.etcd_endpoint = etcd_endpoint
        self.settings = dict(settings)
        self.proxy: FaultProxy | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0
        self._log_mark = 0

    @property
    def advertised(self) -> tuple[str, int]:
        """Where clients and other brokers reach it (its proxy when it has one)."""
        return self.proxy.address if self.proxy is not None else (self.host, self.port)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def argv(self) -> list[str]:
        metadata = "etcd://" + self.etcd_endpoint.split("://", 1)[-1]
        settings = dict(self.settings)
        if self.proxy is not None:
            settings["advertised.listeners"] = "native://{}:{}".format(*self.proxy.address)
        sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
        return [*_SERVE, "--broker-id", str(self.broker_id), "--metadata", metadata,
                "--data-dir", self.data_dir, "--host", self.host, "--port", str(self.port),
                "--log-level", os.environ.get("MINILOG_FAULT_LOG_LEVEL", "INFO"), *sets]

    def spawn(self) -> None:
        assert not self.alive, f"broker {self.broker_id} is already running"
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {self.starts} at {time.time():.3f}\n".encode())
            self._log_mark = log.tell()
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.starts += 1
        self.paused = False

    async def wait_listening(self, timeout_s: float = START_TIMEOUT_S) -> None:
        async def listening() -> bool:
            if not self.alive:
                raise GiveUp(f"broker {self.broker_id} exited with {self.proc and self.proc.returncode}:"
                                     f"\n{self.log_tail()}")
            return "listening on" in self.log_since_start()

        await wait_for(listening, f"broker {self.broker_id} listening", timeout_s,
                       on_timeout=self.log_tail)

    async def start(self) -> None:
        self.spawn()
        await self.wait_listening()

    def kill(self) -> None:
        """SIGKILL and reap (a paused process is continued first, so it dies now)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            if self.paused:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGCONT)
            self.proc.wait()
        self.paused = False

    def pause(self) -> None:
        assert self.alive and not self.paused
        self.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        self.paused = True

    def resume(self) -> None:
        assert self.alive and self.paused
        self.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
        self.paused = False

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (a controlled shutdown) and wait for the exit; SIGKILL after `timeout_s`."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        deadline = trio.current_time() + timeout_s
        while self.proc.poll() is None and trio.current_time() < deadline:
            await trio.sleep(0.02)
        if self.proc.poll() is None:
            self.kill()
            raise AssertionError(f"broker {self.broker_id} did not stop within {timeout_s} s:\n"
                                 f"{self.log_tail()}")
        return self.proc.returncode

    def log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_mark)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return f"(no log for broker {self.broker_id})"
        return f"--- broker {self.broker_id} log (end) ---\n{text[-chars:]}"

    def partition_dir(self, topic: str, partition: int) -> str:
        return os.path.join(self.data_dir, partition_dir_name(topic, partition))


class LocalCluster:
    """etcd + brokers 1..n; see the module docstring. Runs in one trio loop; not thread-safe."""

    def __init__(self, base_dir: str, etcd: LocalEtcd, nodes: dict[int, BrokerNode]) -> None:
        self.base_dir = base_dir
        self.etcd = etcd
        self.nodes = nodes
        self._etcd_proc: subprocess.Popen[bytes] | None = None   # a restarted etcd

    @property
    def bootstrap(self) -> str:
        """Every broker's advertised address, "h1:p1,h2:p2,...", as clients take it."""
        return ",".join("{}:{}".format(*n.advertised) for n in self.nodes.values())

    def __getitem__(self, broker_id: int) -> BrokerNode:
        return self.nodes[broker_id]

    def live(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.alive and not n.paused]

    def logs(self) -> str:
        return "\n".join(n.log_tail() for n in self.nodes.values())

    def admin(self, **options: Any) -> AsyncAdmin:
        """An Admin client bootstrapping from the running brokers first (a paused one answers nothing)."""
        options.setdefault("request_timeout_ms", 5000)
        options.setdefault("socket_connection_setup_timeout_ms", 3000)
        order = sorted(self.nodes.values(), key=lambda n: not (n.alive and not n.paused))
        return AsyncAdmin(",".join("{}:{}".format(*n.advertised) for n in order), **options)

    # -- faults ----------------------------------------------------------

    def kill(self, broker_id: int) -> None:
        self.nodes[broker_id].kill()

    def pause(self, broker_id: int) -> None:
        self.nodes[broker_id].pause()

    def resume(self, broker_id: int) -> None:
        self.nodes[broker_id].resume()

    async def restart(self, broker_id: int) -> None:
        node = self.nodes[broker_id]
        node.kill()
        await node.start()

    async def stop(self, broker_id: int) -> int:
        return await self.nodes[broker_id].stop()

    def kill_etcd(self) -> None:
        proc = self._etcd_proc or self.etcd.proc
        proc.kill()
        proc.wait()

    async def restart_etcd(self) -> None:
        """Start etcd again with the same data dir and ports (its argv)."""
        assert (self._etcd_proc or self.etcd.proc).poll() is not None, "etcd is running"
        with open(self.etcd.log_path, "ab") as log:
            self._etcd_proc = subprocess.Popen(list(self.etcd.proc.args), stdout=log,  # type: ignore[arg-type]
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        endpoint = self.etcd.endpoint

        async def healthy() -> bool:
            def probe() -> bool:
                import urllib.request
                with urllib.request.urlopen(endpoint + "/health", timeout=1.0) as r:
                    return b'"true"' in r.read()
            return await trio.to_thread.run_sync(probe)

        await wait_for(healthy, "etcd healthy again", 30.0)

    # -- what the cluster looks like ----------------------------------------

    async def partitions(self, topic: str) -> list[Any]:
        """The topic's partitions (leader, leader_epoch, replicas, isr) from a live broker's Metadata."""
        async with self.admin() as admin:
            await admin._cluster.refresh([topic])
            meta = admin._cluster.topics.get(topic)
            if meta is None or meta.error_code:
                raise AssertionError(f"topic {topic!r} not in metadata")
            return list(meta.partitions)

    async def wait_ready(self, topic: str | None = None, *, isr_size: int | None = None,
                         brokers: list[int] | None = None, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Every broker in `brokers` (default: every live one) registered; with `topic`, each of its
        partitions led by a live broker with an ISR of `isr_size` (default: its replica count)."""
        want = set(self.live() if brokers is None else brokers)

        async def ready() -> bool:
            async with self.admin() as admin:
                meta = await admin.metadata()
                if not want <= set(meta.brokers):
                    return False
                if topic is None:
                    return True
                await admin._cluster.refresh([topic])
                tmeta = admin._cluster.topics.get(topic)
                if tmeta is None or tmeta.error_code or not tmeta.partitions:
                    return False
                live = set(self.live())
                return all(p.leader in live and p.error_code == 0
                           and len(p.isr) == (isr_size or len(p.replicas)) for p in tmeta.partitions)

        await wait_for(ready, f"cluster ready (brokers {sorted(want)}, topic {topic})", timeout_s,
                       on_timeout=self.logs)

    async def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 3,
                           config: dict[str, str] | None = None) -> None:
        async with self.admin() as admin:
            await admin.create_topic(name, partitions, replication_factor, config=config or {})
        await self.wait_ready(name)

    async def leader(self, topic: str, partition: int = 0) -> int:
        """The partition's leader as metadata says now (-1 when it has none)."""
        return int((await self.partitions(topic))[partition].leader)

    async def wait_leader(self, topic: str, partition: int = 0, *, not_in: tuple[int, ...] = (),
                          timeout_s: float = READY_TIMEOUT_S) -> int:
        """A live leader for the partition, other than `not_in`; returns its id."""
        async def elected() -> int:
            p = (await self.partitions(topic))[partition]
            return p.leader if p.leader in self.live() and p.leader not in not_in else 0

        return await wait_for(elected, f"a leader of {topic}-{partition} not in {not_in}", timeout_s,
                              on_timeout=self.logs)

    async def wait_isr(self, topic: str, partition: int, want: Callable[[tuple[int, ...]], bool], what: str,
                       timeout_s: float = READY_TIMEOUT_S) -> tuple[int, ...]:
        async def isr() -> tuple[int, ...] | None:
            p = (await self.partitions(topic))[partition]
            return tuple(p.isr) if want(tuple(p.isr)) else None

        return await wait_for(isr, f"ISR of {topic}-{partition}: {what}", timeout_s, on_timeout=self.logs)

    async def read_partition(self, topic: str, partition: int,
                             timeout_s: float = READY_TIMEOUT_S) -> list[tuple[int, bytes]]:
        """Every record of a partition, (offset, value), read from its leader up to the high watermark."""
        async def read() -> list[tuple[int, bytes]] | None:
            async with AsyncConsumer(self.bootstrap, request_timeout_ms=5000,
                                     auto_offset_reset="earliest") as consumer:
                end = (await consumer.end_offsets([(topic, partition)]))[(topic, partition)]
                consumer.assign([(topic, partition)])
                consumer.seek_to_beginning()
                out: list[tuple[int, bytes]] = []
                with trio.fail_after(timeout_s):
                    while not out or out[-1][0] < end - 1:
                        if end == 0:
                            break
                        for r in await consumer.poll(timeout_ms=500):
                            out.append((r.offset, r.value))
                return out

        return await wait_for(read, f"{topic}-{partition} read whole from its leader", timeout_s,
                              on_timeout=self.logs)

    def replica_batches(self, broker_id: int, topic: str, partition: int, end_offset: int) -> list[bytes]:
        """The batches broker `broker_id` holds for the partition below `end_offset`, bytes as on disk.

        Reads the segment files (in base-offset order) directly: call it on a
        stopped broker, or below a high watermark (bytes there never change).
        """
        pdir = self.nodes[broker_id].partition_dir(topic, partition)
        data = b""
        for name in sorted(os.listdir(pdir)):
            if name.endswith(".log"):
                with open(os.path.join(pdir, name), "rb") as f:
                    data += f.read()
        return [bytes(batch) for header, batch in iter_batches(data) if header.base_offset < end_offset]


@contextlib.asynccontextmanager
async def open_cluster(base_dir: str, n: int = 3, *, settings: dict[str, str] | None = None,
                       proxied: bool = False, start: bool = True) -> AsyncIterator[LocalCluster]:
    """etcd and brokers 1..n (see the module docstring); everything is killed on exit."""
    binary = etcd_binary()
    if binary is None:
        import pytest
        if os.environ.get("CI") == "true":
            pytest.fail("etcd binary not found under CI: .ci/run must install Debian's etcd-server")
        pytest.skip("etcd binary not found (install Debian's etcd-server)")
    merged = {**CLUSTER_SETTINGS, **(settings or {})}
    stack = contextlib.ExitStack()
    os.makedirs(os.path.join(base_dir, "etcd"), exist_ok=True)
    etcd = await trio.to_thread.run_sync(stack.enter_context, run_etcd(binary, os.path.join(base_dir, "etcd")))
    cluster = LocalCluster(base_dir, etcd, {i: BrokerNode(i, base_dir, etcd.endpoint, merged)
                                            for i in range(1, n + 1)})
    try:
        async with trio.open_nursery() as nursery:
            if proxied:
                for node in cluster.nodes.values():
                    node.proxy = FaultProxy((node.host, node.port), listen_host=node.host)
                    await nursery.start(node.proxy.run)
            try:
                if start:
                    for node in cluster.nodes.values():
                        node.spawn()
                    for node in cluster.nodes.values():
                        await node.wait_listening()
                    await cluster.wait_ready()
                yield cluster
            finally:
                nursery.cancel_scope.cancel()
    finally:
        for node in cluster.nodes.values():
            node.kill()
        if cluster._etcd_proc is not None and cluster._etcd_proc.poll() is None:
            cluster._etcd_proc.kill()
            cluster._etcd_proc.wait()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(stack.close)


class ProduceWorkload:
    """One producer writing unique values round-robin over a topic's partitions, recording a `History`.

    `run` (a task) produces `chunk` values, flushes (every delivery report
    comes back, acked or failed), and repeats until `stop()`; acks=all by
    default, retries through failovers within `delivery_timeout_ms`.
    `wait_acked(n)` waits until n more values were acknowledged.
    """

    def __init__(self, cluster: LocalCluster, topic: str, partitions: int, history: Any, *,
                 tag: str = "v", chunk: int = 20, **options: Any) -> None:
        self.cluster = cluster
        self.topic = topic
        self.partitions = partitions
        self.history = history
        self.tag = tag
        self.chunk = chunk
        self.options = {"acks": "all", "linger_ms": 2, "request_timeout_ms": 3000,
                        "delivery_timeout_ms": 30000, "retry_backoff_ms": 50,
                        "socket_connection_setup_timeout_ms": 2000, **options}
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.errors: list[BaseException] = []
        self.order: dict[int, list[bytes]] = {p: [] for p in range(partitions)}   # send order per partition
        self._stop = trio.Event()
        self._progress = trio.Event()

    def stop(self) -> None:
        self._stop.set()

    def _report(self, err: BaseException | None, report: Any) -> None:
        if err is None:
            self.history.acked(report.value, (report.topic, report.partition), report.offset)
            self.acked += 1
        else:
            self.history.failed(report.value, err)
            self.errors.append(err)
            self.failed += 1
        self._progress.set()
        self._progress = trio.Event()

    async def run(self) -> None:
        from minilog.client.producer import AsyncProducer

        async with AsyncProducer(self.cluster.bootstrap, **self.options) as producer:
            while not self._stop.is_set():
                for _ in range(self.chunk):
                    p = self.sent % self.partitions
                    value = self.history.sent((self.topic, p), f"{self.tag}-{self.sent}".encode())
                    self.order[p].append(value)
                    self.sent += 1
                    await producer.produce(self.topic, value, partition=p, on_delivery=self._report)
                await producer.flush()

    async def wait_acked(self, more: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until `more` further values are acknowledged (service is back)."""
        target = self.acked + more
        with trio.move_on_after(timeout_s):
            while self.acked < target:
                await self._progress.wait()
            return
        raise AssertionError(f"{self.topic}: only {self.acked - target + more} of {more} more values "
                             f"acknowledged within {timeout_s:g} s (last errors: {self.errors[-3:]})\n"
                             f"{self.cluster.logs()}")
