"""Compaction in a running broker: the cleaner threads, produce validation, topic alter.

Real broker subprocesses (`broker_factory`) and the public Python client;
every wait is a condition with a deadline.
"""

from __future__ import annotations

import os

import pytest

from conftest import wait_until
from minilog import Admin, Consumer, Producer
from minilog.protocol import ErrorCode, build_batch

FAST_CLEANER = ("--set", "log.cleaner.backoff.ms=50")
COMPACT = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}


def read_all(bootstrap: str, topic: str, partition: int = 0) -> list:
    """Every record of one partition, from its start to its end when the read began."""
    with Consumer(bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([(topic, partition)])
        end = consumer.end_offsets([(topic, partition)])[(topic, partition)]
        records = []
        while consumer.position(topic, partition) < end:
            records += consumer.poll(timeout_ms=1000)
        return records


def produce_raw(broker, topic: str, batch: bytes, partition: int = 0) -> int:
    client = broker.client()
    try:
        return client.produce(topic, partition, batch)["error_code"]
    finally:
        client.close()


def test_compacted_topic_is_cleaned_while_served(broker_factory):
    """A compacted topic shrinks to the latest record per key in the background, and the
    broker keeps taking appends and reads meanwhile."""
    broker = broker_factory(*FAST_CLEANER)
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("state", config=COMPACT)
    latest = {}
    with Producer(broker.bootstrap, linger_ms=0) as producer:
        for i in range(1500):
            key, value = b"k%d" % (i % 20), b"value-%d" % i
            producer.produce("state", value, key=key, partition=0)
            latest[key] = value
            if i % 50 == 49:
                producer.flush()              # small batches: the active segment stays small

    def compacted() -> bool:
        records = read_all(broker.bootstrap, "state")
        return len(records) < 400 and {r.key: r.value for r in records} == latest

    wait_until(compacted, "the cleaner compacted the topic", timeout_s=60)
    records = read_all(broker.bootstrap, "state")
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets) and offsets[-1] == 1499
    with Producer(broker.bootstrap, linger_ms=0) as producer:
        producer.produce("state", b"after", key=b"k0", partition=0)
        producer.flush()
    assert {r.key: r.value for r in read_all(broker.bootstrap, "state")}[b"k0"] == b"after"


def test_keyless_records_refused_in_compacted_topic(broker_factory):
    """A batch holding a record without a key is refused with INVALID_RECORD and nothing of
    it is stored; the same batch is accepted once the topic's policy is delete again, and
    refused again after altering back to compact."""
    broker = broker_factory(*FAST_CLEANER)
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("t", config={"cleanup.policy": "compact"})
        mixed = build_batch([b"a", b"b"], [b"k", None])
        assert produce_raw(broker, "t", mixed) == ErrorCode.INVALID_RECORD
        assert produce_raw(broker, "t", build_batch([b"a"], [b"k"]) + mixed) == ErrorCode.INVALID_RECORD
        assert read_all(broker.bootstrap, "t") == []
        admin.alter_configs("t", {"cleanup.policy": "delete"})
        assert produce_raw(broker, "t", mixed) == ErrorCode.NONE
        admin.alter_configs("t", {"cleanup.policy": "compact,delete"})
        assert produce_raw(broker, "t", mixed) == ErrorCode.INVALID_RECORD
        assert admin.describe_configs("t")["cleanup.policy"] == "compact,delete"
    assert [r.value for r in read_all(broker.bootstrap, "t")] == [b"a", b"b"]


def test_alter_to_compact_cleans_existing_data(broker_factory):
    """A delete topic altered to compact is cleaned by the running broker; keyless records
    written before are dropped, as Kafka does."""
    broker = broker_factory(*FAST_CLEANER)
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("t", config={"segment.bytes": "2048"})
        with Producer(broker.bootstrap, linger_ms=0) as producer:
            producer.produce("t", b"no key", partition=0)
            for i in range(400):
                producer.produce("t", b"v%d" % i, key=b"k%d" % (i % 4), partition=0)
                if i % 50 == 49:
                    producer.flush()
        assert len(read_all(broker.bootstrap, "t")) == 401
        admin.alter_configs("t", {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"})

    def cleaned() -> bool:
        return all(r.key is not None for r in read_all(broker.bootstrap, "t"))

    wait_until(cleaned, "the altered topic was compacted", timeout_s=60)
    records = read_all(broker.bootstrap, "t")
    assert {r.key for r in records} == {b"k0", b"k1", b"k2", b"k3"} and len(records) < 200


def test_uncleanable_partition_is_skipped_and_served(broker_factory, tmp_path):
    """A partition whose closed segment cannot be decoded is marked uncleanable and logged;
    the broker keeps serving it and still cleans the other partition."""
    data_dir = str(tmp_path / "data")
    broker = broker_factory("--set", "log.cleaner.enable=false", data_dir=data_dir)
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("t", partitions=2, config=COMPACT)
    with Producer(broker.bootstrap, linger_ms=0) as producer:
        for i in range(600):
            for p in (0, 1):
                producer.produce("t", b"value-%d" % i, key=b"k%d" % (i % 5), partition=p)
            if i % 50 == 49:
                producer.flush()
    broker.stop()
    first = os.path.join(data_dir, "t-0", "00000000000000000000.log")
    with open(first, "r+b") as f:              # a byte of the first record flipped: CRC fails
        f.seek(70)
        byte = f.read(1)
        f.seek(70)
        f.write(bytes([byte[0] ^ 0xFF]))
    broker.extra = list(FAST_CLEANER)
    broker.start()

    def p1_cleaned() -> bool:
        return len(read_all(broker.bootstrap, "t", 1)) < 300

    wait_until(p1_cleaned, "partition 1 was compacted", timeout_s=60)
    wait_until(lambda: "t-0: marked uncleanable" in broker.logs(), "t-0 marked uncleanable")
    with Producer(broker.bootstrap, linger_ms=0) as producer:
        producer.produce("t", b"still served", key=b"k", partition=0)
        producer.flush()
    with Consumer(broker.bootstrap, auto_offset_reset="latest") as consumer:
        consumer.assign([("t", 0)])
        end = consumer.end_offsets([("t", 0)])[("t", 0)]
        assert end == 601


@pytest.mark.parametrize("policy", ["delete", "compact", "compact,delete"])
def test_describe_shows_policy(broker_factory, policy):
    """`describe_configs` reports the policy as set."""
    broker = broker_factory()
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("t", config={"cleanup.policy": policy})
        assert admin.describe_configs("t")["cleanup.policy"] == policy


async def test_broker_statistics_report_cleaner_progress(tmp_path):
    """Broker.statistics().cleaner counts passes, bytes and records, the last run, and
    lists no uncleanable partition after a clean pass; appends keep working meanwhile."""
    import trio

    from conftest import open_inproc_broker

    async with open_inproc_broker(str(tmp_path / "data"), {"log.cleaner.backoff.ms": 20},
                                  group_coordinator=False) as broker:
        assert broker.statistics().cleaner.passes_total == 0
        await broker.admin.create_topic("t", 1, 1, {**COMPACT, "segment.bytes": "1024"})
        part = broker.partition("t", 0)
        for i in range(200):
            part.append_nowait(build_batch([b"v%d" % i], [b"k%d" % (i % 3)]))
        with trio.fail_after(30):
            while broker.statistics().cleaner.passes_total == 0:
                await trio.sleep(0.01)
        stats = broker.statistics().cleaner
        assert stats.bytes_read_total > 0 and stats.records_read_total > 0
        assert 0 < stats.records_kept_total < stats.records_read_total
        assert stats.last_run_ms > 0 and stats.last_partition == "t-0"
        assert stats.uncleanable_partitions == () and stats.threads == 1


def test_topics_describe_shows_policy_and_cleanable_ratio(broker_factory):
    """`minilog topics describe` prints the cleanup policy, and for a compacted topic each
    partition's cleanable ratio."""
    import subprocess
    import sys

    broker = broker_factory("--set", "log.cleaner.enable=false")
    with Admin(broker.bootstrap) as admin:
        admin.create_topic("c", config=COMPACT)
        admin.create_topic("d")
        assert admin.describe_topic("c").partitions[0].cleanable_ratio == 0.0
        assert admin.describe_topic("d").partitions[0].cleanable_ratio is None

    def describe(topic: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from minilog.cli import main; sys.exit(main())",
             "topics", "describe", topic, "--bootstrap-server", broker.bootstrap],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "250"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = describe("c")
    assert "CleanupPolicy: compact" in out and "CLEANABLE-RATIO" in out and "0.00" in out
    out = describe("d")
    assert "CleanupPolicy: delete" in out and "CLEANABLE-RATIO" not in out
