"""Shared plumbing for the perf scripts: a private broker, progress, percentiles, output.

Theory of operation. Every script measures through minilog's public API
against a real `minilog serve` process, the way kafka-producer-perf-test
measures a real cluster. With `--bootstrap-server HOST:PORT` the script uses
that broker; without it, `BrokerProcess` starts a private one on a free port
(`--port 0`) with a temp data dir, reads the address the broker prints on
start, and stops it with SIGTERM (then SIGKILL) when the script ends.

Timing is `time.perf_counter_ns()`; percentiles are nearest-rank over the
raw samples (no histogram buckets, so p999 is a real sample). Progress goes
to stderr through rich and is updated once per chunk of records, never per
record, so the bar costs nothing measurable. `--json` prints exactly one
JSON object on stdout; the human summary also goes to stdout otherwise.

Profiling: `--profile-broker FILE` and `--profile-client FILE` attach
`py-spy record` to the broker process or to this process (all threads, so
the client's background trio thread is included) for the measured phase
only, and write a speedscope JSON (or an SVG flamegraph if FILE ends in
.svg, or py-spy's raw folded stacks if it ends in .txt).

Resource handling: the broker subprocess, its temp dir and any py-spy
processes are owned by context managers and always cleaned up.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from contextlib import contextmanager
from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

MiB = 1024 * 1024
BROKER_START_TIMEOUT_S = 30.0   # time for `minilog serve` to print its address
BROKER_STOP_TIMEOUT_S = 10.0    # SIGTERM grace before SIGKILL

_ADDRESS_RE = re.compile(
    r"(?P<host>\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-fA-F:]+\]):(?P<port>\d{2,5})\b"
)

stderr_console = Console(stderr=True)


# --------------------------------------------------------------------------- options


def add_common_args(parser: argparse.ArgumentParser, *, partitions: int = 1) -> None:
    """Options every script shares (Kafka's perf-test names where they exist)."""
    parser.add_argument("--bootstrap-server", default=os.environ.get("MINILOG_BOOTSTRAP_SERVER"),
                        help="HOST:PORT of a running broker; default: start a private broker")
    parser.add_argument("--topic", default=None, help="topic name; default: a fresh unique name")
    parser.add_argument("--partitions", type=int, default=partitions,
                        help=f"partitions of the topic created for the run (default {partitions})")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--broker-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra `minilog serve --set` for the private broker (repeatable)")
    parser.add_argument("--data-dir", default=None,
                        help="data dir of the private broker; default: a temp dir, deleted after")
    parser.add_argument("--profile-broker", default=None, metavar="FILE",
                        help="py-spy record the broker during the measured phase into FILE")
    parser.add_argument("--profile-client", default=None, metavar="FILE",
                        help="py-spy record this process (all threads) during the measured phase")
    parser.add_argument("--profile-gil", action="store_true",
                        help="profile only samples holding the GIL (py-spy --gil): where the "
                             "Python time goes, without GIL waits and idle polls")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_producer_args(parser: argparse.ArgumentParser, **tool_defaults) -> None:
    """Producer settings, as kafka-producer-perf-test's --producer-props would set them.

    Every option defaults to None, meaning the client's own default (not
    passed to `Producer`); a tool that must differ says so in
    `tool_defaults` (e.g. e2e_latency's `linger_ms=0`), and
    `producer_settings()` lists what differs, for the output.
    """
    parser.add_argument("--acks", default=None, choices=["0", "1", "all", "-1"],
                        help="producer acks (default: the client's)")
    parser.add_argument("--linger-ms", type=int, default=None,
                        help="producer linger_ms (default: the client's)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="producer batch_size in bytes (default: the client's)")
    parser.add_argument("--compression-type", default=None,
                        choices=["none", "gzip", "lz4", "zstd"],
                        help="producer compression_type (default: the client's)")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="producer max_in_flight requests per broker (default: the client's)")
    parser.set_defaults(**{k: (str(v) if k == "acks" else v) for k, v in tool_defaults.items()})


PRODUCER_OPTIONS = ("acks", "linger_ms", "batch_size", "compression_type", "max_in_flight")


def producer_settings(args: argparse.Namespace) -> dict:
    """The producer keyword arguments the run sets, i.e. every one that differs from
    the client's default; the tools pass exactly these and print them beside the figure."""
    out = {}
    for name in PRODUCER_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = acks_value(value) if name == "acks" else value
    return out


def acks_value(text: str):
    """`"all"`/`"-1"` -> `"all"`, else the int."""
    return "all" if text in ("all", "-1") else int(text)


def topic_name(args: argparse.Namespace, prefix: str) -> str:
    return args.topic or f"{prefix}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"


# --------------------------------------------------------------------------- the broker


class BrokerProcess:
    """A `minilog serve` subprocess on a free port with its own data dir.

    Use as a context manager; `address` is "host:port" once entered, `pid`
    the broker's process id. The broker's stdout and stderr are drained by
    two daemon threads (so a chatty broker never blocks on a full pipe) and
    the last lines are kept for the error message if it dies.

    Error handling: raises RuntimeError if the broker exits or prints no
    address within BROKER_START_TIMEOUT_S.
    Resource handling: SIGTERM on exit, SIGKILL after BROKER_STOP_TIMEOUT_S;
    the temp data dir is removed unless the caller passed one.
    """

    def __init__(self, data_dir: str | None = None, settings: Sequence[str] = (),
                 extra_args: Sequence[str] = ()) -> None:
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="minilog-perf-")
        self._settings = list(settings)
        self._extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None
        self._lines: deque[str] = deque(maxlen=50)
        self._found = threading.Event()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [sys.executable, "-c", "from minilog.cli import main; main()",
               "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", self.data_dir]
        for kv in self._settings:
            cmd += ["--set", kv]
        return cmd + self._extra_args

    def _drain(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self._lines.append(line)
            if not self._found.is_set():
                m = _ADDRESS_RE.search(line)
                if m:
                    host = m.group("host").strip("[]")
                    if host in ("0.0.0.0", "::"):
                        host = "127.0.0.1"
                    self.address = f"{host}:{m.group('port')}"
                    self._found.set()
        stream.close()

    def __enter__(self) -> BrokerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        while not self._found.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)   # __exit__ does not run when __enter__ raises
                tail = "\n".join(self._lines)
                raise RuntimeError(f"minilog serve did not start (rc={self.proc.returncode}):\n{tail}")
        try:
            wait_port(self.address)
        except OSError:
            self.__exit__(None, None, None)
            raise
        return self

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(BROKER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self) -> str:
        return "\n".join(self._lines)


def wait_port(address: str, timeout_s: float = 10.0) -> None:
    host, port = split_address(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@contextmanager
def broker_for(args: argparse.Namespace) -> Iterator[tuple[str, BrokerProcess | None]]:
    """Yield (bootstrap address, BrokerProcess or None if the user gave one)."""
    if args.bootstrap_server:
        yield args.bootstrap_server, None
        return
    with BrokerProcess(args.data_dir, args.broker_set) as broker:
        yield broker.address, broker


def create_topic(bootstrap: str, topic: str, partitions: int, config: dict | None = None) -> None:
    """Create `topic` through the public Admin API; an existing topic is fine."""
    import minilog

    admin = minilog.Admin(bootstrap)
    try:
        try:
            admin.create_topic(topic, partitions, 1, config or {})
        except Exception as exc:
            if "exist" not in f"{type(exc).__name__} {exc}".lower():
                raise
    finally:
        admin.close()


# --------------------------------------------------------------------------- profiling


class _Profiler:
    """`py-spy record` attached to one pid until `stop()` (SIGINT makes it write FILE)."""

    def __init__(self, pid: int, path: str, rate_hz: int = 250, gil: bool = False) -> None:
        fmt = "flamegraph" if path.endswith(".svg") else "raw" if path.endswith(".txt") else "speedscope"
        self.path = path
        self.proc = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--threads", "--rate", str(rate_hz),
             "--format", fmt, "--output", path, *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.3)  # let it attach before the measured phase starts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        stderr_console.print(f"[dim]profile written: {self.path}[/dim]")


@contextmanager
def profiled(args: argparse.Namespace, broker: BrokerProcess | None) -> Iterator[None]:
    """Attach the requested py-spy profilers around the measured phase."""
    profilers = []
    if args.profile_broker:
        if broker is None:
            raise SystemExit("--profile-broker needs the private broker (no --bootstrap-server)")
        profilers.append(_Profiler(broker.pid, args.profile_broker, gil=args.profile_gil))
    if args.profile_client:
        profilers.append(_Profiler(os.getpid(), args.profile_client, gil=args.profile_gil))
    try:
        yield
    finally:
        for p in profilers:
            p.stop()


# --------------------------------------------------------------------------- progress and math


@contextmanager
def progress(args: argparse.Namespace, description: str, total: int):
    """A rich progress bar on stderr; yields `advance(n)`. Disabled by --no-progress."""
    if getattr(args, "no_progress", False) or (not stderr_console.is_terminal and args.json):
        yield lambda n: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=stderr_console, transient=True,
                  refresh_per_second=8) as bar:
        task = bar.add_task(description, total=total, rate="")
        start = time.perf_counter()

        def advance(n: int) -> None:
            done = bar.tasks[0].completed + n
            elapsed = time.perf_counter() - start
            rate = f"{done / elapsed:,.0f} rec/s" if elapsed > 0 else ""
            bar.update(task, advance=n, rate=rate)

        yield advance


def chunks(total: int, chunk: int) -> Iterator[int]:
    """Sizes of consecutive chunks adding up to `total` (progress granularity)."""
    while total > 0:
        n = min(chunk, total)
        yield n
        total -= n


def percentiles_ms(samples_ns: Sequence[int], points=(50, 99, 99.9)) -> dict:
    """Nearest-rank percentiles of nanosecond samples, in milliseconds.

    Returns {"p50": ..., "p99": ..., "p999": ..., "avg": ..., "max": ..., "count": n};
    values are None when there are no samples.
    """
    data = sorted(samples_ns)
    n = len(data)
    out: dict = {"count": n}
    for p in points:
        key = "p" + (f"{p:g}".replace(".", ""))
        if n == 0:
            out[key] = None
            continue
        rank = max(1, -(-(round(p * 1000) * n) // 100_000))  # ceil(p/100 * n), in integers
        out[key] = data[min(rank, n) - 1] / 1e6
    out["avg"] = (sum(data) / n / 1e6) if n else None
    out["max"] = (data[-1] / 1e6) if n else None
    return out


def rss_bytes(pid: int) -> dict:
    """Current and peak resident set size of `pid`, from /proc (Linux)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value, unit = line.split()
                assert unit == "kB"
                out["rss_bytes" if key == "VmRSS:" else "rss_peak_bytes"] = int(value) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by `pid` (all threads), from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_meter(broker: BrokerProcess | None, out: dict) -> Iterator[None]:
    """Put the CPU seconds this process and the broker used inside the block into `out`.

    With wall time this says who is busy: a side near 1 CPU-second per second
    is bound by its own Python work (the GIL), not by waiting on the other.
    """
    pids = {"client": os.getpid()}
    if broker is not None:
        pids["broker"] = broker.pid
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.perf_counter()
    try:
        yield
    finally:
        wall = time.perf_counter() - t0
        for k, p in pids.items():
            used = cpu_seconds(p) - before[k]
            out[f"{k}_cpu_s"] = used
            out[f"{k}_cpu_util"] = used / wall if wall > 0 else None


# --------------------------------------------------------------------------- output


def emit(args: argparse.Namespace, title: str, result: dict) -> None:
    """Print `result` as JSON (--json) or as a small table."""
    if args.json:
        print(json.dumps(result, sort_keys=True, default=str))
        return
    table = Table(title=title, show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    for key, value in _flatten(result):
        table.add_row(key, _fmt(value))
    Console().print(table)


def _flatten(d: dict, prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in d.items():
        if isinstance(value, dict) and not value and "settings" in f"{prefix}{key}":
            yield f"{prefix}{key}", "client defaults"
        elif isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def environment() -> dict:
    """What a reader needs to compare figures across runs."""
    return {"python": sys.version.split()[0], "cpus": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0],  # other work on the 2 cores skews figures
            "argv": " ".join(sys.argv)}
