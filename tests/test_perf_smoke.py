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


def _workloads():
    """perf/_workloads.py (perf/ is not a package: the scripts import it by path)."""
    sys.path.insert(0, str(PERF))
    try:
        import _workloads
    finally:
        sys.path.remove(str(PERF))
    return _workloads


def test_workloads_are_deterministic_and_in_shape():
    """Each workload is the same for the same seed; keys and event sizes are in range."""
    import json

    w = _workloads()
    for name in w.WORKLOADS:
        assert w.generate(name, 500, seed=3) == w.generate(name, 500, seed=3)
        assert w.generate(name, 500, seed=3) != w.generate(name, 500, seed=4) or name == "uniform"
    uniform = w.generate("uniform", 300, record_size=40)
    assert uniform.keys is None and {len(v) for v in uniform.values} == {40}
    keyed = w.generate("keyed", 3000, record_size=40)
    assert {len(v) for v in keyed.values} == {40}
    assert {len(k) for k in keyed.keys} > {4, 36} and all(4 <= len(k) <= 36 for k in keyed.keys)
    assert len(set(keyed.keys)) < len(keyed.keys)   # keys repeat
    events = w.generate("events", 3000, seed=1)
    sizes = [len(v) for v in events.values]
    assert w.EVENT_BYTES_MIN <= min(sizes) and max(sizes) <= w.EVENT_BYTES_MAX
    assert max(sizes) - min(sizes) > 100
    versions: dict = {}
    for key, value in zip(events.keys, events.values):
        event = json.loads(value)
        assert event["aggregateId"].encode() == key == event["payload"]["orderId"].encode()
        assert event["version"] == versions.get(key, 0) + 1   # each aggregate's events in order
        versions[key] = event["version"]
        assert int(value[w.EVENT_ID_SLICE], 16) >= 0 and event["eventId"].startswith("evt_")
        assert {"customerId", "items", "totalAmount"} <= set(event["payload"])
    assert len(versions) < len(events.keys)        # aggregates repeat
    assert events.value_bytes(4000) == sum(sizes) + sum(sizes[:1000])


@pytest.mark.parametrize("workload", ["keyed", "events"])
def test_producer_perf_runs_each_workload_at_client_defaults(workload):
    """producer_perf sends keyed records and events, acks them all, and changes no setting."""
    out = run_script("producer_perf.py", "--workload", workload, "--num-records", "1500",
                     "--record-size", "30", "--partitions", "3")
    assert out["workload"]["name"] == workload
    assert out["settings"] == {}
    assert out["acked"] == 1500 and out["errors"] == 0
    expected = _workloads().generate(workload, 1500, record_size=30).value_bytes(1500)
    assert out["avg_value_bytes"] == expected / 1500


def test_producer_perf_prints_every_changed_setting():
    """A setting given on the command line appears under `settings`; the rest stay the client's."""
    out = run_script("producer_perf.py", "--num-records", "200", "--batch-size", "1048576",
                     "--acks", "all", "--latency", "none")
    assert out["settings"] == {"batch_size": 1048576, "acks": "all"}


@pytest.mark.parametrize("workload", ["keyed", "events"])
def test_consumer_perf_reads_back_each_workload(workload):
    """consumer_perf polls back every record of the workload, value bytes included."""
    out = run_script("consumer_perf.py", "--workload", workload, "--num-records", "1500",
                     "--record-size", "30", "--partitions", "3", "--touch")
    assert out["records"] == 1500 and out["timed_out"] is False
    expected = _workloads().generate(workload, 1500, record_size=30).value_bytes(1500)
    assert out["value_bytes"] == expected
    assert out["settings"] == {"producer": {}, "consumer": {}}


@pytest.mark.parametrize("workload, busy", [("keyed", False), ("events", False),
                                            ("events", True)])
def test_e2e_latency_runs_each_workload(workload, busy):
    """e2e_latency matches every record of the workload, with a sleeping or a spinning caller."""
    out = run_script("e2e_latency.py", "--workload", workload, "--num-records", "40",
                     "--warmup", "5", "--rate", "400", "--partitions", "2", "--skip-baseline",
                     *(["--busy-caller"] if busy else []))
    assert out["busy_caller"] is busy
    assert out["settings"] == {"linger_ms": 0}
    assert out["timeouts"] == 0
    assert out["latency_ms"]["count"] == 40


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
