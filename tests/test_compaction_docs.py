"""docs/compaction.md's event-sourcing example runs as written against a real broker.

The doc marks its blocks with HTML comments (as docs/quickstart.md does):

    <!-- compaction: file=NAME.py -->     write this python block to NAME.py
    <!-- compaction: run id=ID -->        run this sh block
    <!-- compaction: output id=ID -->     what the run block ID prints

The `after-cleaning` block is re-run until it prints its documented output
(the cleaner runs in the background; a condition with a deadline, no fixed
sleep); every other run block must print its output the first time.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "compaction.md"
_BLOCK = re.compile(r"<!--\s*compaction:\s*(?:(?P<kind>\w+)\s+)?(?P<key>\w+)=(?P<value>[\w.-]+)\s*-->\s*\n"
                    r"```\w*\n(?P<body>.*?)\n```", re.S)
_DEADLINE_S = 60.0


def _blocks() -> list[tuple[str, str, str]]:
    return [(m["kind"] or m["key"], m["value"], m["body"]) for m in _BLOCK.finditer(DOC.read_text())]


def _run(script: str, cwd: pathlib.Path, bootstrap: str) -> str:
    env = {**os.environ, "MINILOG_BOOTSTRAP_SERVER": bootstrap,
           "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_doc_has_the_example():
    kinds = [(kind, value) for kind, value, _ in _blocks()]
    assert ("run", "produce") in kinds and ("output", "after-cleaning") in kinds


def test_order_read_model_example_runs(broker_factory, tmp_path):
    """The producer and read-model scripts print what the doc shows, before and after the
    cleaner compacted the topic."""
    broker = broker_factory("--set", "log.cleaner.backoff.ms=50")
    outputs = {value: body.strip() for kind, value, body in _blocks() if kind == "output"}
    for kind, value, body in _blocks():
        if kind == "file":
            (tmp_path / value).write_text(body + "\n")
        elif kind == "run" and value != "after-cleaning":
            assert _run(body, tmp_path, broker.bootstrap) == outputs[value]
        elif kind == "run":
            deadline = time.monotonic() + _DEADLINE_S
            got = _run(body, tmp_path, broker.bootstrap)
            while got != outputs[value] and time.monotonic() < deadline:
                got = _run(body, tmp_path, broker.bootstrap)
            assert got == outputs[value], broker.logs()
