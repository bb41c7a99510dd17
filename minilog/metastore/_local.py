"""Start a single-member etcd on loopback, for tests, benchmarks and `minilog cluster up`.

The binary is Debian's `etcd-server` package (`/usr/bin/etcd`). The member
listens on free loopback ports and keeps its data in the directory given;
leaving the context stops the process (SIGTERM, then SIGKILL) and, unless
asked to keep it, removes the data.

This module blocks (subprocess, polling /health): call it from synchronous
code or a worker thread, never from the trio thread of a running broker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["LocalEtcd", "etcd_binary", "run_local_etcd"]

START_TIMEOUT_S = 30.0  # from spawn to a healthy /health
START_ATTEMPTS = 3  # a probed free port can be taken before etcd binds it
STOP_TIMEOUT_S = 10.0  # SIGTERM grace before SIGKILL


@dataclass(frozen=True)
class LocalEtcd:
    endpoint: str  # http://127.0.0.1:PORT, for EtcdStore.connect
    data_dir: str
    log_path: str
    proc: subprocess.Popen[bytes]


def etcd_binary() -> str | None:
    """The etcd executable, None when not installed.

    `MINILOG_ETCD_BINARY` names it explicitly (a path that is not an
    executable means "not installed"); otherwise `etcd` on PATH, then
    Debian's /usr/bin/etcd.
    """
    explicit = os.environ.get("MINILOG_ETCD_BINARY")
    if explicit is not None:
        return explicit if os.path.isfile(explicit) and os.access(explicit, os.X_OK) else None
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/health", timeout=1.0) as response:
            return b'"true"' in response.read()
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def run_local_etcd(
    base_dir: str,
    *,
    binary: str | None = None,
    heartbeat_ms: int = 100,
    election_timeout_ms: int = 1000,
    keep_data: bool = False,
) -> Iterator[LocalEtcd]:
    """One single-member etcd on free loopback ports, data under `base_dir`.

    etcd's defaults are heartbeat 100 ms and election timeout 1000 ms; its
    minimum lease TTL is 1.5 election timeouts rounded up to a second (2 s
    by default; 1 s with an election timeout of 100 ms, as the tests use).

    Raises:
        FileNotFoundError: no etcd binary.
        RuntimeError: etcd did not become healthy (the end of its log is in the message).
    """
    binary = binary or etcd_binary()
    if binary is None:
        raise FileNotFoundError("etcd not found: install Debian's etcd-server (apt-get install -y etcd-server)")
    last_log = ""
    for attempt in range(START_ATTEMPTS):
        client_port, peer_port = _free_port(), _free_port()
        data_dir = os.path.join(base_dir, f"etcd-data-{attempt}")
        log_path = os.path.join(base_dir, f"etcd-{attempt}.log")
        endpoint, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        argv = [
            binary,
            "--name", "minilog",
            "--data-dir", data_dir,
            "--listen-client-urls", endpoint,
            "--advertise-client-urls", endpoint,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"minilog={peer}",
            "--heartbeat-interval", str(heartbeat_ms),
            "--election-timeout", str(election_timeout_ms),
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline and not _healthy(endpoint):
            time.sleep(0.05)  # nothing to wait on but the process's answer
        if proc.poll() is None and _healthy(endpoint):
            try:
                yield LocalEtcd(endpoint, data_dir, log_path, proc)
            finally:
                _stop(proc)
                if not keep_data:
                    shutil.rmtree(data_dir, ignore_errors=True)
            return
        _stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
        with open(log_path, errors="replace") as f:
            last_log = f.read()[-2000:]
    raise RuntimeError(f"etcd did not become healthy in {START_ATTEMPTS} attempts; its log ends:\n{last_log}")
