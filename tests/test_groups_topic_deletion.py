"""Committed offsets of a deleted topic go with the topic (issue 8, item 13), against a
real `minilog serve`: deleted at once and durably (kill -9 and restart), not inherited by
a re-created topic of the same name, deleted at start when a crash came between the two,
and `minilog groups describe` copes with offsets of a missing topic and shows a commit
past the log end as a negative lag."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import wait_until
from minilog.broker.groups import OFFSETS_TOPIC, group_partition
from minilog.protocol import ApiKey, build_batch
from test_groups_broker import GROUP_SETTINGS, commit, fetch_offsets

pytestmark = pytest.mark.slow

OFFSETS_PARTITIONS = 5            # GROUP_SETTINGS: offsets.topic.num.partitions=5
_CLI = [sys.executable, "-c", "import sys; from minilog.cli import main; sys.exit(main())"]


@pytest.fixture
def gbroker(broker_factory):
    return broker_factory(*GROUP_SETTINGS)


def delete_topic(c, name: str) -> None:
    r = c.request(ApiKey.DELETE_TOPICS, {"topics": [name], "timeout_ms": 5000}).payload
    assert r["topics"][0]["error_code"] == 0, r


def offsets_log_end(c, group: str) -> int:
    """Log end of the `__consumer_offsets` partition that holds `group`."""
    p = group_partition(group, OFFSETS_PARTITIONS)
    r = c.list_offset(OFFSETS_TOPIC, p, -1)
    assert r["error_code"] == 0, r
    return r["offset"]


def wait_appended(c, group: str, before: int) -> None:
    """Wait until the group's offsets partition grew past `before` (a record was appended)."""
    wait_until(lambda: offsets_log_end(c, group) > before, f"a record appended for {group}")


def groups_cli(broker, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*_CLI, "groups", *args, "--bootstrap-server", broker.bootstrap],
                          capture_output=True, text=True, timeout=60)


def describe_rows(out: str) -> dict[tuple[str, int], list[str]]:
    """`groups describe` table rows by (topic, partition): [current, log end, lag, member]."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("TOPIC"))
    rows = {}
    for line in lines[header + 1:]:
        if not line.strip():
            break
        topic, partition, *rest = line.split()
        rows[(topic, int(partition))] = rest
    return rows


def test_deleting_a_topic_deletes_its_offsets_durably_and_a_new_topic_starts_clean(gbroker):
    c = gbroker.client()
    assert c.create_topic("t", 2) == 0 and c.create_topic("u", 1) == 0
    assert commit(c, "g", "", -1, {0: 5, 1: 7}) == {0: 0, 1: 0}
    assert commit(c, "g", "", -1, {0: 3}, topic="u") == {0: 0}
    assert commit(c, "h", "", -1, {1: 2}) == {1: 0}
    ends = {g: offsets_log_end(c, g) for g in ("g", "h")}

    delete_topic(c, "t")
    assert fetch_offsets(c, "g") == {("u", 0): 3}          # at once
    assert fetch_offsets(c, "h") == {}
    for g in ("g", "h"):                                   # and in __consumer_offsets
        wait_appended(c, g, ends[g])
    proc = groups_cli(gbroker, "describe", "g")
    assert proc.returncode == 0, proc.stderr
    assert set(describe_rows(proc.stdout)) == {("u", 0)}

    assert c.create_topic("t", 2) == 0                     # same name, new topic
    assert fetch_offsets(c, "g") == {("u", 0): 3}
    for restart in (gbroker.kill, gbroker.stop):           # kill -9, then a clean stop
        restart()
        gbroker.start()
        c = gbroker.client()
        assert fetch_offsets(c, "g") == {("u", 0): 3}
        assert fetch_offsets(c, "h") == {}

    # A commit to the new topic after the deletion outlives a restart (the deletion
    # record is before it in the log, so replay applies them in that order).
    assert commit(c, "g", "", -1, {1: 4}) == {1: 0}
    gbroker.kill()
    gbroker.start()
    assert fetch_offsets(gbroker.client(), "g") == {("t", 1): 4, ("u", 0): 3}


def test_offsets_of_a_topic_deleted_just_before_a_crash_are_deleted_at_start(gbroker):
    """The topic is gone from the metadata but its offsets' deletion never reached the
    log (kill -9 in between: simulated by removing the topic from topics.json while the
    broker is down). The next start deletes them, durably."""
    c = gbroker.client()
    assert c.create_topic("t", 1) == 0 and c.create_topic("u", 1) == 0
    assert commit(c, "g", "", -1, {0: 9}) == {0: 0}
    assert commit(c, "g", "", -1, {0: 1}, topic="u") == {0: 0}
    before = offsets_log_end(c, "g")
    gbroker.kill()
    path = os.path.join(gbroker.data_dir, "topics.json")
    with open(path) as f:
        meta = json.load(f)
    del meta["topics"]["t"]
    with open(path, "w") as f:
        json.dump(meta, f)

    gbroker.start()
    c = gbroker.client()
    assert fetch_offsets(c, "g") == {("u", 0): 1}
    wait_appended(c, "g", before)
    gbroker.kill()
    gbroker.start()
    c = gbroker.client()
    assert c.create_topic("t", 1) == 0
    assert fetch_offsets(c, "g") == {("u", 0): 1}
    assert "committed offsets of deleted topic t removed" in gbroker.logs()


def test_describe_shows_missing_partitions_and_a_commit_past_the_log_end(gbroker):
    """A committed offset past the log end shows a negative lag (not 0); offsets of a
    partition that does not exist show '-' for log end and lag, and describe exits 0."""
    c = gbroker.client()
    assert c.create_topic("t", 2) == 0
    assert c.produce("t", 0, bytearray(build_batch([b"x"] * 5)))["error_code"] == 0
    assert c.produce("t", 1, bytearray(build_batch([b"x"] * 5)))["error_code"] == 0
    assert commit(c, "g", "", -1, {0: 2, 1: 12}) == {0: 0, 1: 0}
    proc = groups_cli(gbroker, "describe", "g")
    assert proc.returncode == 0, proc.stderr
    rows = describe_rows(proc.stdout)
    assert rows[("t", 0)][:3] == ["2", "5", "3"]
    assert rows[("t", 1)][:3] == ["12", "5", "-7"]
    assert "Total lag: 3" in proc.stdout                 # a negative lag offsets nothing


async def test_describe_copes_with_offsets_of_a_missing_topic(tmp_path):
    """Offsets of a topic that no longer exists (left by a broker from before offsets
    were deleted with their topic; put into the running coordinator's store here) do
    not make describe fail: their log end and lag are unknown (-1 / None)."""
    import minilog
    from conftest import AsyncRawClient, open_inproc_broker
    from minilog.broker.groups._offsets import encode_commit, iter_offset_records

    async with open_inproc_broker(str(tmp_path / "d")) as broker:
        c = await AsyncRawClient.connect(broker.port)
        assert await c.create_topic("t", 1) == 0
        await c.aclose()
        for _, key, value in iter_offset_records(encode_commit(
                "g", [("t", 0, 0, -1, None), ("gone", 0, 4, -1, None), ("gone", 1, 6, -1, None)],
                timestamp_ms=0)):
            broker.groups.store.apply(key, value)
        async with minilog.AsyncAdmin(f"127.0.0.1:{broker.port}") as admin:
            d = await admin.describe_group("g")
    rows = {(o.topic, o.partition): (o.committed, o.log_end_offset, o.lag) for o in d.offsets}
    assert rows == {("t", 0): (0, 0, 0), ("gone", 0): (4, -1, None), ("gone", 1): (6, -1, None)}
    assert d.total_lag == 0
