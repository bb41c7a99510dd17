"""docs/quickstart.md runs as written against a real broker, and says what it shows.

Theory of operation: the doc marks each fenced block with an HTML comment
just above it:

    <!-- quickstart: run id=NAME [requires=groups] -->   run this sh block, check by NAME
    <!-- quickstart: file=NAME.py -->                      write this python block to NAME.py
    <!-- quickstart: skip (why) -->                        not run (serve, pip install)

The test extracts the blocks in order, writes the files into a temp dir and
runs the sh blocks there with bash, with MINILOG_BOOTSTRAP_SERVER pointing
at the `broker` fixture (the doc itself uses the default localhost:9092 and
the Python files read the same variable), then checks each block's output.
Every run block runs: `requires=groups` is kept in the doc as a label
only (consumer groups have landed, so a groups regression fails this test
instead of skipping the block).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass


DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "quickstart.md"
_MARKED_BLOCK = re.compile(
    r"<!--\s*quickstart:\s*(?P<directive>[^>]*?)\s*-->\s*\n```(?P<lang>\w*)\n(?P<body>.*?)\n```",
    re.S,
)
_ANY_BLOCK = re.compile(r"^```(\w+)\n", re.M)
_BLOCK_TIMEOUT_S = 120


@dataclass
class Block:
    kind: str          # "run", "file" or "skip"
    name: str          # id for run blocks, file name for file blocks
    requires: str | None
    lang: str
    body: str


def parse_blocks(text: str) -> list[Block]:
    blocks = []
    for match in _MARKED_BLOCK.finditer(text):
        words = match["directive"].split()
        options = dict(w.split("=", 1) for w in words if "=" in w)
        if "file" in options:
            kind, name = "file", options["file"]
        else:
            kind, name = words[0], options.get("id", "")
        blocks.append(Block(kind, name, options.get("requires"), match["lang"], match["body"]))
    return blocks


def test_every_code_block_is_marked():
    """A new sh or python block in the doc must say whether it runs, so none goes untested."""
    text = DOC.read_text()
    langs = [m.group(1) for m in _ANY_BLOCK.finditer(text) if m.group(1) in ("sh", "python")]
    blocks = parse_blocks(text)
    assert len(blocks) == len(langs), "every ```sh / ```python block needs a <!-- quickstart: --> line"
    assert {b.kind for b in blocks} <= {"run", "file", "skip"}
    assert [b.name for b in blocks if b.kind == "run"] == [
        "create", "produce", "describe", "consume-cli", "consume-python", "groups", "delete"]


def _bootstrap(broker) -> str:
    for attr in ("bootstrap", "bootstrap_servers", "bootstrap_server", "address"):
        value = getattr(broker, attr, None)
        if isinstance(value, str):
            return value
    if getattr(broker, "port", None):
        return f"{broker.host}:{broker.port}"
    assert isinstance(broker, str), f"cannot find the address of {broker!r}"
    return broker


def _env(bootstrap: str) -> dict:
    env = dict(os.environ)
    env["MINILOG_BOOTSTRAP_SERVER"] = bootstrap
    # `python` and `minilog` in the doc are this interpreter and its entry point.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(block: Block, cwd: pathlib.Path, env: dict) -> str:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.body], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=_BLOCK_TIMEOUT_S)
    assert proc.returncode == 0, (
        f"quickstart block {block.name!r} exited {proc.returncode}\n"
        f"--- script\n{block.body}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


_DESCRIBE_ROW = re.compile(
    r"^\s*(?P<partition>\d+)\s+(?P<leader>-?\d+)\s+(?P<epoch>\d+)\s+(?P<replicas>[\d,]+)\s+"
    r"(?P<isr>[\d,]*)\s+(?P<start>\d+)\s+(?P<end>\d+)\s+(?P<hw>\d+)\s+", re.M)


def _check(block: Block, out: str, state: dict, env: dict) -> None:
    """What each block must show; `state` carries facts from one block to the next."""
    orders = {f"order_{12345 + n}" for n in range(10)}
    if block.name == "create":
        listed = subprocess.run(["minilog", "topics", "list"], env=env, capture_output=True,
                                text=True, check=True).stdout.split()
        assert "order-events" in listed
    elif block.name == "produce":
        delivered = re.findall(r"^Delivered to order-events\[(\d+)\] @ offset (\d+)$", out, re.M)
        assert len(delivered) == 10, out
        assert "Delivery failed" not in out
        assert out.rstrip().endswith("Events published successfully")
        state["delivered"] = sorted((int(p), int(o)) for p, o in delivered)
    elif block.name == "describe":
        rows = [m.groupdict() for m in _DESCRIBE_ROW.finditer(out)]
        assert sorted(int(r["partition"]) for r in rows) == list(range(12)), out
        assert sum(int(r["end"]) for r in rows) == 10, out
        assert all(r["replicas"] == r["isr"] == r["leader"] for r in rows), out
        for key, value in [("retention.ms", "604800000"), ("cleanup.policy", "delete"),
                           ("max.message.bytes", "1048576"), ("segment.bytes", "1073741824"),
                           ("min.insync.replicas", "1"), ("compression.type", "lz4")]:
            assert re.search(rf"^\s*{re.escape(key)}\s+{value}\s+topic\s*$", out, re.M), (key, out)
    elif block.name == "consume-cli":
        lines = out.splitlines()
        assert len(lines) == 10, out
        seen = []
        for line in lines:
            partition, offset, key, value = line.split(" ", 3)
            event = json.loads(value)
            assert event["eventType"] == "OrderPlaced" and event["aggregateId"] == key
            seen.append((key, int(partition), int(offset)))
        assert {k for k, _, _ in seen} == orders
        assert sorted((p, o) for _, p, o in seen) == state["delivered"]
        state["placement"] = {k: (p, o) for k, p, o in seen}
    elif block.name == "consume-python":
        found = re.findall(r"^(order_\d+) OrderPlaced partition=(\d+) offset=(\d+)$", out, re.M)
        assert len(found) == 10 == len(out.splitlines()), out
        assert {k: (int(p), int(o)) for k, p, o in found} == state["placement"]
    elif block.name == "groups":
        assert "fulfillment-service" in out and "order-events" in out, out
        replayed = re.findall(r"^order_\d+$", out, re.M)
        assert sorted(replayed) == sorted(orders), out  # reset to earliest replays all ten
    elif block.name == "delete":
        listed = subprocess.run(["minilog", "topics", "list"], env=env, capture_output=True,
                                text=True, check=True).stdout.split()
        assert "order-events" not in listed
        # `groups describe` after the delete works (exit 0, checked by _run) and shows
        # the group without the deleted topic's offsets.
        described = out[out.index("Group: fulfillment-service"):]
        assert "order-events" not in described, out
    else:
        raise AssertionError(f"no check for quickstart block {block.name!r}")


def test_quickstart_runs_as_written(broker, tmp_path):
    """Every marked block of docs/quickstart.md runs in order against a real broker and shows
    what the doc says: 10 delivered events, a 12-partition describe, the same events read back."""
    env = _env(_bootstrap(broker))
    state: dict = {}
    ran = []
    for block in parse_blocks(DOC.read_text()):
        if block.kind == "file":
            (tmp_path / block.name).write_text(block.body + "\n")
        elif block.kind == "run":
            _check(block, _run(block, tmp_path, env), state, env)
            ran.append(block.name)
    assert ran[:5] == ["create", "produce", "describe", "consume-cli", "consume-python"]
    assert ran[-1] == "delete"
    assert "groups" in ran
