"""A local cluster for `minilog cluster up | down`: one etcd and N brokers on loopback.

Theory of operation: `start_cluster` spawns a single-member etcd (Debian's
`etcd-server` binary) and N `minilog serve --broker-id i --metadata etcd://...`
processes, each in its own session (`start_new_session`), with stdin from
/dev/null and stdout/stderr to a log file, so they outlive the command that
started them and a Ctrl-C in its terminal does not reach them. Every
process is recorded in the state file `DIR/cluster.json` (pid, command line,
address, log) as soon as it is spawned, so `stop_cluster` can find it even
if `start_cluster` failed half-way. `start_cluster` waits until etcd answers
/health, every broker printed its "listening on" line and the cluster's
Metadata lists all N brokers (each holds its registration lease); on any
failure it stops what it started and raises `ClusterError`. On a DIR whose
recorded cluster partly runs (a broker was killed) it starts only the
stopped processes again, from their recorded command lines.

Layout of DIR (Kafka keeps one data dir per broker too):

    DIR/cluster.json        the state file (JSON, written atomically)
    DIR/.lock               flock'd while up/down run, so two never race
    DIR/etcd/               etcd's data (kept by `down`: `up` again restarts the cluster)
    DIR/broker-<i>/         broker i's data dir
    DIR/logs/etcd.log, DIR/logs/broker-<i>.log

Rules:
- A pid is "ours" only while /proc/<pid>/cmdline is the command line we
  recorded and the process is not a zombie: a recycled pid is never
  signalled, and a zombie (the launcher exited, its orphans are reaped by
  whoever PID 1 is) counts as stopped.
- Ports are picked free on loopback when spawning and recorded in the
  command line, so a broker restarted by hand from its recorded command
  listens where it did before. etcd reuses its recorded ports on a later
  `up` when they are still free.

This module blocks (subprocess, sockets, sleeps between polls of other
processes): it is for the CLI's main thread, never for a trio thread.

Error handling: everything an operator can cause (etcd missing, DIR already
running, nothing running, a process that died on start) raises
`ClusterError` with a one-line message; `OSError` from the file system
escapes as is (the CLI prints it as one line).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

__all__ = [
    "STATE_FILE",
    "ClusterError",
    "ProcessRecord",
    "BrokerRecord",
    "ClusterState",
    "read_state",
    "process_alive",
    "start_cluster",
    "stop_cluster",
]

STATE_FILE = "cluster.json"
STATE_VERSION = 1
BROKERS_MAX = 32              # `cluster up --brokers`: a local cluster, not a data center
START_TIMEOUT_S = 60.0        # default: spawn -> all brokers registered (2 loaded cores are slow)
STOP_TIMEOUT_S = 30.0         # default: SIGTERM grace (controlled shutdown) before SIGKILL
POLL_INTERVAL_S = 0.05        # between looks at another process (nothing to wait on but its answer)
ETCD_HEARTBEAT_MS = 100       # etcd's defaults: its minimum lease TTL is then 2 s,
ETCD_ELECTION_TIMEOUT_MS = 1000  # under broker.session.timeout.ms's default of 6 s
OFFSETS_RF_KEY = "offsets.topic.replication.factor"
OFFSETS_RF_DEFAULT = 3        # `cluster up` passes min(this, brokers) unless --set names the key
LOG_TAIL_LINES = 1            # lines of a dead process's log quoted in the error
_SERVE = [sys.executable, "-m", "minilog.cli", "serve"]
_RUN_MARK = "--- minilog cluster up:"  # a line written to a broker's log before each start


class ClusterError(Exception):
    """An operating error of the local cluster: one line for the operator."""


@dataclass
class ProcessRecord:
    name: str                 # "etcd", "broker-0", ...
    pid: int
    argv: list[str]
    log_path: str


@dataclass
class BrokerRecord:
    broker_id: int
    host: str
    port: int
    data_dir: str
    process: ProcessRecord

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class ClusterState:
    data_dir: str
    etcd_endpoint: str        # http://127.0.0.1:PORT
    etcd: ProcessRecord | None
    brokers: list[BrokerRecord] = field(default_factory=list)
    version: int = STATE_VERSION

    @property
    def bootstrap(self) -> str:
        return ",".join(b.address for b in self.brokers)

    @property
    def metadata_url(self) -> str:
        return "etcd://" + self.etcd_endpoint.removeprefix("http://")

    def processes(self) -> list[ProcessRecord]:
        """Brokers first, etcd last: the order to stop them in."""
        return [b.process for b in self.brokers] + ([self.etcd] if self.etcd else [])


# ----------------------------------------------------------------------------
# The state file


def _state_path(data_dir: str) -> str:
    return os.path.join(data_dir, STATE_FILE)


def read_state(data_dir: str) -> ClusterState | None:
    """The recorded cluster of DIR, None when there is none.

    Raises:
        ClusterError: the state file is not one this version wrote.
    """
    try:
        with open(_state_path(data_dir), encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as exc:
        raise ClusterError(f"cannot read {_state_path(data_dir)}: {exc}") from None
    try:
        etcd = ProcessRecord(**raw["etcd"]) if raw.get("etcd") else None
        brokers = [BrokerRecord(b["broker_id"], b["host"], b["port"], b["data_dir"],
                                ProcessRecord(**b["process"])) for b in raw["brokers"]]
        return ClusterState(raw["data_dir"], raw["etcd_endpoint"], etcd, brokers, raw["version"])
    except (KeyError, TypeError) as exc:
        raise ClusterError(f"{_state_path(data_dir)} is not a minilog cluster state file ({exc})") from None


def _write_state(state: ClusterState) -> None:
    """Temp file, fsync, rename, fsync the directory (STYLE: write metadata atomically)."""
    path = _state_path(state.data_dir)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(state.data_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove_state(data_dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_state_path(data_dir))


@contextlib.contextmanager
def _locked(data_dir: str) -> Iterator[None]:
    """Hold DIR/.lock: a second `up` or `down` on DIR fails at once instead of racing."""
    os.makedirs(data_dir, exist_ok=True)
    fd = os.open(os.path.join(data_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ClusterError(f"another `minilog cluster` command is working on {data_dir}") from None
        yield
    finally:
        os.close(fd)  # releases the lock


# ----------------------------------------------------------------------------
# Processes


def process_alive(record: ProcessRecord) -> bool:
    """True while the recorded process runs: same pid, same command line, not a zombie."""
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process took the pid
    try:
        with open(f"/proc/{record.pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")[:-1]
        with open(f"/proc/{record.pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return False   # it exited between the two looks
    except OSError:
        return True    # no /proc: trust the pid
    return state != b"Z" and [os.fsdecode(a) for a in cmdline] == record.argv


def _spawn(name: str, argv: list[str], log_path: str) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start `argv` detached: own session, stdin /dev/null, output appended to `log_path`."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    return proc, ProcessRecord(name, proc.pid, argv, log_path)


def _signal(record: ProcessRecord, sig: int) -> None:
    if process_alive(record):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, sig)


def _wait_stopped(records: list[ProcessRecord], timeout_s: float) -> list[ProcessRecord]:
    """Wait until none of `records` is alive or the time is up; returns those still alive."""
    deadline = time.monotonic() + timeout_s
    alive = [r for r in records if process_alive(r)]
    while alive and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        alive = [r for r in alive if process_alive(r)]
    return alive


def stop_processes(records: list[ProcessRecord], timeout_s: float) -> list[str]:
    """SIGTERM each, wait up to `timeout_s`, SIGKILL the rest. Returns the names killed."""
    for record in records:
        _signal(record, signal.SIGTERM)
    stubborn = _wait_stopped(records, timeout_s)
    for record in stubborn:
        _signal(record, signal.SIGKILL)
    _wait_stopped(stubborn, STOP_TIMEOUT_S)
    return [r.name for r in stubborn]


def _log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = [line.strip() for line in f.read().splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# ----------------------------------------------------------------------------
# etcd


def _etcd_healthy(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/health", timeout=1.0) as response:
            return b'"true"' in response.read()
    except (urllib.error.URLError, OSError):
        return False


def _etcd_ports(previous: ClusterState | None, host: str) -> tuple[int, int]:
    """etcd's recorded client and peer ports when both are still free, else new ones."""
    if previous is not None and previous.etcd is not None:
        argv = previous.etcd.argv
        with contextlib.suppress(ValueError, IndexError):
            client = int(argv[argv.index("--listen-client-urls") + 1].rsplit(":", 1)[1])
            peer = int(argv[argv.index("--listen-peer-urls") + 1].rsplit(":", 1)[1])
            if _port_free(host, client) and _port_free(host, peer):
                return client, peer
    return _free_port(host), _free_port(host)


def _etcd_argv(binary: str, data_dir: str, host: str, client_port: int, peer_port: int) -> list[str]:
    """The same flags as minilog.metastore.run_local_etcd: one member named minilog."""
    endpoint, peer = f"http://{host}:{client_port}", f"http://{host}:{peer_port}"
    return [
        binary,
        "--name", "minilog",
        "--data-dir", data_dir,
        "--listen-client-urls", endpoint,
        "--advertise-client-urls", endpoint,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"minilog={peer}",
        "--heartbeat-interval", str(ETCD_HEARTBEAT_MS),
        "--election-timeout", str(ETCD_ELECTION_TIMEOUT_MS),
    ]  # fmt: skip


def _wait(what: str, ready: Callable[[], bool], died: Callable[[], str | None], deadline: float) -> None:
    """Poll `ready` until true; raise ClusterError when `died` names a reason or time is up."""
    while True:
        if ready():
            return
        reason = died()
        if reason is not None:
            raise ClusterError(reason)
        if time.monotonic() >= deadline:
            raise ClusterError(f"timed out waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def _exited(proc: subprocess.Popen[bytes], record: ProcessRecord, what: str) -> Callable[[], str | None]:
    def check() -> str | None:
        code = proc.poll()
        if code is None:
            return None
        tail = _log_tail(record.log_path)
        return (f"{record.name} exited with code {code} before {what}"
                + (f": {tail}" if tail else "") + f" (log: {record.log_path})")
    return check


# ----------------------------------------------------------------------------
# up / down


def running_processes(state: ClusterState) -> list[ProcessRecord]:
    return [p for p in state.processes() if process_alive(p)]


def start_cluster(data_dir: str, brokers: int | None, *, etcd_binary: str | None, host: str = "127.0.0.1",
                  settings: list[str] | None = None, timeout_s: float = START_TIMEOUT_S,
                  registered: Callable[[ClusterState], bool]) -> tuple[ClusterState, list[str]]:
    """Start etcd and `brokers` brokers (default 3) under `data_dir`, or bring back the
    processes of a recorded cluster that have stopped; return the state and the names of
    the processes restarted (empty for a new cluster).

    A recorded cluster whose processes have all exited starts anew (same data, etcd on
    its old ports when free); one whose processes partly run gets the stopped ones
    started again from their recorded command lines (same ports, same data), which is
    how a killed broker comes back. `registered(state)` says whether every broker of
    `state` is registered (the CLI asks the cluster's Metadata through the client); it
    is polled until true.

    Raises:
        ClusterError: etcd missing, DIR already running (every process), a broker
            count that differs from the running cluster's, a process died or the
            cluster did not form within `timeout_s` (a new cluster is stopped again).
    """
    assert brokers is None or 1 <= brokers <= BROKERS_MAX
    data_dir = os.path.abspath(data_dir)
    if etcd_binary is None:
        raise ClusterError("etcd not found: install Debian's etcd-server (apt-get install etcd-server) "
                           "or name the binary in MINILOG_ETCD_BINARY")
    with _locked(data_dir):
        previous = read_state(data_dir)
        deadline = time.monotonic() + timeout_s
        if previous is not None:
            alive = running_processes(previous)
            if len(alive) == len(previous.processes()):
                raise ClusterError(
                    f"a cluster is already running in {data_dir} ({', '.join(p.name for p in alive)}); "
                    f"stop it with `minilog cluster down --data-dir {data_dir}`")
            if alive:
                if brokers is not None and brokers != len(previous.brokers):
                    raise ClusterError(f"the cluster in {data_dir} has {len(previous.brokers)} brokers, "
                                       f"not {brokers}; `cluster down` it first to change that")
                return previous, _restart_stopped(previous, deadline, registered)
        os.makedirs(os.path.join(data_dir, "logs"), exist_ok=True)
        client_port, peer_port = _etcd_ports(previous, host)
        etcd_argv = _etcd_argv(etcd_binary, os.path.join(data_dir, "etcd"), host, client_port, peer_port)
        etcd_proc, etcd = _spawn("etcd", etcd_argv, os.path.join(data_dir, "logs", "etcd.log"))
        state = ClusterState(data_dir, f"http://{host}:{client_port}", etcd)
        try:
            _write_state(state)
            _wait("etcd to answer /health", lambda: _etcd_healthy(state.etcd_endpoint),
                  _exited(etcd_proc, etcd, "it was healthy"), deadline)
            procs = _start_brokers(state, 3 if brokers is None else brokers, host, list(settings or ()))
            _wait_brokers(state, list(zip(procs, state.brokers)), deadline, registered)
        except BaseException:
            stop_processes(state.processes(), STOP_TIMEOUT_S)
            _remove_state(data_dir)
            raise
        return state, []


def _wait_brokers(state: ClusterState, started: list[tuple[subprocess.Popen[bytes], BrokerRecord]],
                  deadline: float, registered: Callable[[ClusterState], bool]) -> None:
    """Wait until each started broker printed its address, then until all are registered."""
    for proc, broker in started:
        _wait(f"{broker.process.name} to listen",
              lambda b=broker: "listening on" in _read(b.process.log_path),  # type: ignore[misc]
              _exited(proc, broker.process, "it listened"), deadline)
    checks = [_exited(p, b.process, "it registered") for p, b in started]
    _wait(f"all {len(state.brokers)} brokers to register", lambda: registered(state),
          lambda: next((r for r in (c() for c in checks) if r is not None), None), deadline)


def _restart_stopped(state: ClusterState, deadline: float,
                     registered: Callable[[ClusterState], bool]) -> list[str]:
    """Start the recorded processes of `state` that are not running, from their recorded
    command lines; the ones already running are left alone (and nothing is stopped on failure)."""
    restarted = []
    if state.etcd is not None and not process_alive(state.etcd):
        proc, state.etcd = _spawn("etcd", state.etcd.argv, state.etcd.log_path)
        _write_state(state)
        restarted.append("etcd")
        _wait("etcd to answer /health", lambda: _etcd_healthy(state.etcd_endpoint),
              _exited(proc, state.etcd, "it was healthy"), deadline)
    started = []
    for broker in state.brokers:
        if process_alive(broker.process):
            continue
        _mark_log(broker.process.log_path, broker.process.argv)
        proc, broker.process = _spawn(broker.process.name, broker.process.argv, broker.process.log_path)
        _write_state(state)
        restarted.append(broker.process.name)
        started.append((proc, broker))
    _wait_brokers(state, started, deadline, registered)
    return restarted


def _mark_log(log_path: str, argv: list[str]) -> None:
    """Mark where a broker's run starts in its kept log (the "listening on" check reads after it)."""
    with open(log_path, "ab") as log:
        log.write(f"{_RUN_MARK} {' '.join(argv)}\n".encode())


def _start_brokers(state: ClusterState, count: int, host: str,
                   settings: list[str]) -> list[subprocess.Popen[bytes]]:
    if not any(pair.partition("=")[0].strip() == OFFSETS_RF_KEY for pair in settings):
        # Kafka's default of 3 (minilog's is 1, for a lone broker): group offsets survive a broker
        settings = [f"{OFFSETS_RF_KEY}={min(OFFSETS_RF_DEFAULT, count)}", *settings]
    procs = []
    for broker_id in range(count):
        broker_dir = os.path.join(state.data_dir, f"broker-{broker_id}")
        port = _free_port(host)
        argv = [*_SERVE, "--broker-id", str(broker_id), "--metadata", state.metadata_url,
                "--data-dir", broker_dir, "--host", host, "--port", str(port)]
        for pair in settings:
            argv += ["--set", pair]
        name = f"broker-{broker_id}"
        log_path = os.path.join(state.data_dir, "logs", f"{name}.log")
        _mark_log(log_path, argv)
        proc, record = _spawn(name, argv, log_path)
        procs.append(proc)
        state.brokers.append(BrokerRecord(broker_id, host, port, broker_dir, record))
        _write_state(state)
    return procs


def _read(path: str) -> str:
    """The part of a broker's log written by its current run (after the last `---` marker)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().rsplit(_RUN_MARK, 1)[-1]
    except OSError:
        return ""


def stop_cluster(data_dir: str, *, timeout_s: float = STOP_TIMEOUT_S) -> tuple[ClusterState, list[str]]:
    """Stop the brokers (SIGTERM, then SIGKILL after `timeout_s`), then etcd.

    Returns the state that was recorded and the names of processes that had to
    be killed. Data and logs stay; the state file goes.

    Raises:
        ClusterError: no cluster recorded in DIR, or none of its processes runs
            (the stale state file is removed then).
    """
    data_dir = os.path.abspath(data_dir)
    if not os.path.isdir(data_dir):
        raise ClusterError(f"no cluster running in {data_dir} (no such directory)")
    with _locked(data_dir):
        state = read_state(data_dir)
        if state is None:
            raise ClusterError(f"no cluster running in {data_dir} (no {STATE_FILE})")
        if not running_processes(state):
            _remove_state(data_dir)
            raise ClusterError(f"no cluster running in {data_dir} (its processes have all exited)")
        killed = stop_processes([b.process for b in state.brokers], timeout_s)
        if state.etcd is not None:
            killed += stop_processes([state.etcd], timeout_s)
        _remove_state(data_dir)
        return state, killed
