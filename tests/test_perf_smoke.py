"""The perf scripts run end to end against a real `minilog serve` and print the JSON they promise.

These are smoke tests with tiny counts: they check fields and counts, never a
rate or a latency (benchmarks are never timed assertions; see
docs/performance.md for the figures).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PERF = ROOT / "perf"
TIMEOUT_S = 120

LATENCY_FIELDS = {"count", "p50", "p99", "p999", "avg", "max"}


def run_script(name: str, *args: str) -> dict:
    """Run perf/NAME with --json --no-progress; return its one JSON object."""
    proc = subprocess.run([sys.executable, str(PERF / name), "--json", "--no-progress", *args],
                          capture_output=True, text=True, timeout=TIMEOUT_S, cwd=ROOT)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"{name} must print exactly one JSON line, got:\n{proc.stdout}"
    return json.loads(lines[0])


def test_producer_perf_reports_rates_and_sampled_latency():
    """producer_perf acks every record and reports records/s, MB/s and delivery percentiles."""
    out = run_script("producer_perf.py", "--num-records", "2000", "--record-size", "50",
                     "--latency-sample-every", "10", "--partitions", "2")
    assert out["tool"] == "producer_perf"
    assert out["num_records"] == 2000
    assert out["acked"] == 2000 and out["errors"] == 0
    assert out["records_per_sec"] > 0 and out["mb_per_sec"] > 0
    assert set(out["latency_ms"]) >= LATENCY_FIELDS
    assert out["latency_ms"]["count"] == 200


@pytest.mark.parametrize("latency", ["all", "none"])
def test_producer_perf_latency_modes(latency):
    """--latency all times every record; --latency none passes no callback."""
    out = run_script("producer_perf.py", "--num-records", "300", "--latency", latency)
    assert out["num_records"] == 300
    assert out["latency_ms"]["count"] == (300 if latency == "all" else 0)


def test_consumer_perf_reads_every_record():
    """consumer_perf fills the topic, then polls back exactly the records it wrote."""
    out = run_script("consumer_perf.py", "--num-records", "3000", "--record-size", "40",
                     "--partitions", "3", "--touch")
    assert out["tool"] == "consumer_perf"
    assert out["records"] == 3000
    assert out["value_bytes"] == 3000 * 40
    assert out["timed_out"] is False
    assert out["populate"]["records_per_sec"] > 0
    assert set(out["poll_latency_ms"]) >= LATENCY_FIELDS


def test_e2e_latency_measures_baseline_and_broker_path():
    """e2e_latency receives every record it produced and reports both latency sets."""
    out = run_script("e2e_latency.py", "--num-records", "50", "--warmup", "5", "--rate", "500",
                     "--hops")
    assert out["tool"] == "e2e_latency"
    assert "hops_ms" in out or "hops_unavailable" in out
    assert out["timeouts"] == 0
    assert out["latency_ms"]["count"] == 50
    assert out["baseline_trio_round_trip_ms"]["count"] == 50
    assert out["baseline_trio_round_trip_back_to_back_ms"]["count"] == 50


def test_large_values_compares_with_a_plain_socket():
    """large_values moves the same bytes through a socket and through minilog, both ways."""
    out = run_script("large_values.py", "--num-records", "4", "--record-size", str(256 * 1024))
    assert out["socket"]["bytes"] == 4 * 256 * 1024
    assert out["produce"]["errors"] == 0
    assert out["consume"]["records"] == 4
    assert out["consume"]["bytes"] == 4 * 256 * 1024
    assert out["produce_vs_socket"] > 0 and out["consume_vs_socket"] > 0


def test_broker_memory_reports_every_stage():
    """broker_memory reads the broker's RSS after each stage and keeps the connections open."""
    out = run_script("broker_memory.py", "--partitions", "20", "--topics", "2",
                     "--connections", "5", "--settle-s", "0")
    assert set(out["stages"]) == {"started", "topics", "data", "connections"}
    for stage in out["stages"].values():
        assert stage["rss_bytes"] > 0 and stage["open_fds"] > 0
    assert out["connections_alive"] == 5
    assert out["rss_mb"] == out["stages"]["connections"]["rss_mb"]
