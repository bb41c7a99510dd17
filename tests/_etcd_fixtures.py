"""Fixtures for the metadata store: a real etcd process, and `kv` over both backends.

- `etcd_server` (session): etcd started from the Debian package's binary on
  free loopback ports with its data in a temp dir; stopped and removed at
  the end. Without the binary it skips with the reason, except under CI
  (CI=true), where a missing etcd is a failure: .ci/run installs it.
- `meta_backend` ("etcd" | "memory") parametrizes every contract test.
- `store_clock`: a `MockClock` that jumps when idle for the memory backend
  (so leases expire in virtual time), `None` (trio's real clock) for etcd,
  where time is the etcd process's own. A test names it in its signature so
  that pytest-trio runs the test under it.
- `kv`: an open store of the chosen backend; the etcd one starts with an
  empty key space (every key deleted), so tests may share one process.

Rules: every wait has a deadline; the etcd process is killed on teardown.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from trio.testing import MockClock

from minilog.metastore import EtcdStore, KVStore, LocalEtcd, MemoryStore, etcd_binary, run_local_etcd

__all__ = ["etcd_binary", "run_etcd"]


def run_etcd(binary: str, base_dir: str) -> contextlib.AbstractContextManager[LocalEtcd]:
    """A test etcd: short heartbeat and election timeouts make its minimum lease TTL 1 s."""
    return run_local_etcd(base_dir, binary=binary, heartbeat_ms=10, election_timeout_ms=100)


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEtcd]:
    binary = etcd_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("etcd binary not found under CI: .ci/run must install Debian's etcd-server")
        pytest.skip("etcd binary not found (install Debian's etcd-server: apt-get install -y etcd-server)")
    with run_etcd(binary, str(tmp_path_factory.mktemp("etcd"))) as server:
        yield server


@pytest.fixture(params=["etcd", "memory"])
def meta_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_clock(meta_backend: str) -> MockClock | None:
    return MockClock(autojump_threshold=0) if meta_backend == "memory" else None


@pytest.fixture
def etcd_endpoint(meta_backend: str, request: pytest.FixtureRequest) -> str | None:
    """The shared etcd's endpoint for the etcd backend (started on first use), None for memory."""
    if meta_backend != "etcd":
        return None
    server: LocalEtcd = request.getfixturevalue("etcd_server")
    return server.endpoint


@pytest.fixture
async def kv(etcd_endpoint: str | None) -> AsyncIterator[KVStore]:
    if etcd_endpoint is None:
        async with MemoryStore.open() as store:
            yield store
        return
    async with EtcdStore.connect(etcd_endpoint) as etcd:
        await etcd.delete(b"", prefix=True)
        yield etcd
