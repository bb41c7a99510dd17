"""Shared fixtures: a real `minilog serve` subprocess, an in-process trio broker,
and a tiny raw protocol client that checks every response against its schema.

Rules: free ports only (the broker binds port 0 and prints the address);
every wait is a condition with a deadline, never a fixed sleep; every
process started here is killed on teardown.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
import trio

from minilog.protocol import (
    RESPONSE_SCHEMAS,
    ApiKey,
    FrameDecoder,
    check,
    encode_request,
)

pytest_plugins = ["_etcd_fixtures"]  # etcd and metadata-store fixtures (tests/_etcd_fixtures.py)

START_TIMEOUT_S = 20.0
_SERVE = [sys.executable, "-c", "import sys; from minilog.cli import main; sys.exit(main())", "serve"]


class BrokerProcess:
    """`minilog serve` as a subprocess on a free port with a data dir."""

    def __init__(self, data_dir: str, log_path: str, extra: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra = list(extra or [])
        self.proc: subprocess.Popen | None = None
        self.more_lines: list[str] = []
        self.host = "127.0.0.1"
        self.port = 0

    def start(self) -> BrokerProcess:
        assert self.proc is None or self.proc.poll() is not None
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*_SERVE, "--data-dir", self.data_dir, "--port", "0", *self.extra],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        lines = _readline_with_deadline(self.proc, START_TIMEOUT_S).splitlines() or [""]
        line, self.more_lines = lines[0], lines[1:]     # more listeners may have been read too
        assert "listening on" in line, f"broker did not start: {line!r}\n{self.logs()}"
        address = line.rsplit(" ", 1)[1]
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        wait_until(self.accepts_connections, "broker accepts connections")
        return self

    @property
    def bootstrap(self) -> str:
        """"host:port", as `--bootstrap-server` takes it."""
        return f"{self.host}:{self.port}"

    def accepts_connections(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> BrokerProcess:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        return self.start()

    def logs(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def client(self) -> RawClient:
        return RawClient(self.host, self.port)


def _readline_with_deadline(proc: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (proc.poll() is not None and not sel.select(0)):
                break
            if sel.select(remaining):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
    finally:
        sel.close()
    return buf.decode(errors="replace").strip()


def wait_until(predicate, what: str, timeout_s: float = 10.0, interval_s: float = 0.01):
    """Poll `predicate` until truthy or fail after `timeout_s` (a condition with a deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(interval_s)


class RawClient:
    """Blocking protocol client for tests: pipelining, schema-checked responses."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.decoder = FrameDecoder("client")
        self.correlation_id = 0
        self.pending: dict[int, int] = {}

    def send(self, api_key: int, payload: dict, attachments=(), version: int = 0) -> int:
        self.correlation_id += 1
        pieces = encode_request(api_key, version, self.correlation_id, "tests", payload, attachments)
        self.sock.sendall(b"".join(bytes(p) for p in pieces))
        self.pending[self.correlation_id] = api_key
        return self.correlation_id

    def receive(self, *, check_schema: bool = True):
        while True:
            frame = self.decoder.next_frame()
            if isinstance(frame, tuple):
                break
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.decoder.feed(data)
        api_key = self.pending.pop(frame.correlation_id)
        if check_schema and api_key in RESPONSE_SCHEMAS:
            check(RESPONSE_SCHEMAS[api_key], frame.payload)
        return frame

    def request(self, api_key: int, payload: dict, attachments=(), **kw):
        self.send(api_key, payload, attachments, **kw)
        return self.receive()

    def is_closed_by_peer(self, timeout_s: float = 5.0) -> bool:
        self.sock.settimeout(timeout_s)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    # -- payload helpers --------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, configs: dict | None = None) -> int:
        r = self.request(ApiKey.CREATE_TOPICS, {
            "topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1,
                        "configs": configs or {}}], "timeout_ms": 5000, "validate_only": False})
        return r.payload["topics"][0]["error_code"]

    def produce(self, topic: str, partition: int, batch, acks: int = -1) -> dict:
        payload = produce_payload(topic, partition, acks)
        if acks == 0:
            self.send(ApiKey.PRODUCE, payload, [batch])
            return {}
        r = self.request(ApiKey.PRODUCE, payload, [batch])
        return r.payload["topics"][0]["partitions"][0]

    def fetch(self, topic: str, partition: int, offset: int, *, max_wait_ms: int = 0,
              min_bytes: int = 1, max_bytes: int = 1 << 20) -> tuple[dict, bytes]:
        r = self.request(ApiKey.FETCH, fetch_payload(topic, partition, offset, max_wait_ms=max_wait_ms,
                                                     min_bytes=min_bytes, max_bytes=max_bytes))
        p = r.payload["topics"][0]["partitions"][0]
        data = bytes(r.attachments[p["records"]]) if p["records"] >= 0 else b""
        return p, data

    def list_offset(self, topic: str, partition: int, timestamp: int) -> dict:
        r = self.request(ApiKey.LIST_OFFSETS, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"topic": topic, "partitions": [{"partition": partition, "timestamp": timestamp}]}]})
        return r.payload["topics"][0]["partitions"][0]


def produce_payload(topic: str, partition: int, acks: int = -1, records: int = 0) -> dict:
    return {"acks": acks, "timeout_ms": 5000, "topics": [
        {"topic": topic, "partitions": [{"partition": partition, "records": records}]}]}


def fetch_payload(topic: str, partition: int, offset: int, *, max_wait_ms: int = 0,
                  min_bytes: int = 1, max_bytes: int = 1 << 20) -> dict[str, Any]:
    return {"replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": min_bytes,
            "max_bytes": max_bytes, "isolation_level": 0, "topics": [
                {"topic": topic, "partitions": [
                    {"partition": partition, "fetch_offset": offset,
                     "partition_max_bytes": max_bytes, "current_leader_epoch": -1}]}]}


@pytest.fixture
def broker_factory(tmp_path):
    """Start `minilog serve` subprocesses; every one is killed on teardown."""
    started: list[BrokerProcess] = []

    def make(*extra: str, data_dir: str | None = None) -> BrokerProcess:
        b = BrokerProcess(data_dir or str(tmp_path / f"data{len(started)}"),
                          str(tmp_path / f"broker{len(started)}.log"), list(extra))
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.kill()


@pytest.fixture
def broker(broker_factory):
    """One running `minilog serve` subprocess (real process, real socket, tmp data dir)."""
    return broker_factory()


@contextlib.asynccontextmanager
async def open_inproc_broker(data_dir: str, settings: dict | None = None, **kw):
    """Run a Broker in the current trio loop; shut it down (gracefully) on exit."""
    from minilog.broker.app import Broker
    from minilog.broker.config import BrokerConfig

    b = Broker(BrokerConfig.from_sources(settings or {}), data_dir, port=0, **kw)
    async with trio.open_nursery() as nursery:
        await nursery.start(b.run)
        try:
            yield b
        finally:
            b.request_shutdown()


@pytest.fixture
async def inproc_broker(tmp_path):
    """A Broker running in this test's trio loop (fast; no process)."""
    async with open_inproc_broker(str(tmp_path / "inproc")) as b:
        yield b


class AsyncRawClient:
    """The trio twin of RawClient, for tests against `inproc_broker`."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder("client")
        self.correlation_id = 0
        self.pending: dict[int, int] = {}

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> AsyncRawClient:
        return cls(await trio.open_tcp_stream(host, port))

    async def send(self, api_key: int, payload: dict, attachments=(), version: int = 0) -> int:
        self.correlation_id += 1
        pieces = encode_request(api_key, version, self.correlation_id, "tests", payload, attachments)
        # Before sending: another task may receive the answer before send_all returns.
        self.pending[self.correlation_id] = api_key
        await self.stream.send_all(b"".join(bytes(p) for p in pieces))
        return self.correlation_id

    async def receive(self):
        while True:
            frame = self.decoder.next_frame()
            if isinstance(frame, tuple):
                break
            data = await self.stream.receive_some(1 << 20)
            if not data:
                raise ConnectionError("broker closed the connection")
            self.decoder.feed(data)
        api_key = self.pending.pop(frame.correlation_id)
        if api_key in RESPONSE_SCHEMAS:
            check(RESPONSE_SCHEMAS[api_key], frame.payload)
        return frame

    async def request(self, api_key: int, payload: dict, attachments=(), **kw):
        await self.send(api_key, payload, attachments, **kw)
        return await self.receive()

    async def create_topic(self, name: str, partitions: int = 1, configs: dict | None = None) -> int:
        r = await self.request(ApiKey.CREATE_TOPICS, {
            "topics": [{"name": name, "num_partitions": partitions, "replication_factor": 1,
                        "configs": configs or {}}], "timeout_ms": 5000, "validate_only": False})
        return r.payload["topics"][0]["error_code"]

    async def aclose(self) -> None:
        await self.stream.aclose()
