"""Issue 8 item 10, the broker's side of a full disk, through the file-system seam:
deleting a topic works on a full disk (the metadata reserve), produce errors name the
disk and the file, reads of what is stored go on, and writes recover once space returns.

The disk is the real one under a `CapacityFs`: storage's `FileSystem` seam over `OS_FS`
with a capacity (what the data dir's files may hold in all), so the broker runs its real
code on real files and sees ENOSPC exactly where a full disk gives it. The metadata store
alone is also checked on storage's `SimulatedFileSystem`.
"""

from __future__ import annotations

import errno
import json
import os
import random
from collections.abc import Sequence

import pytest
import trio

from minilog.broker.metadata import RESERVE_FILE, TOPICS_FILE, DataDirMetadata
from minilog.protocol import ApiKey, ErrorCode, build_batch
from minilog.storage import OS_FS, SimulatedFileSystem
from minilog.storage._fs import Buffer

from conftest import AsyncRawClient, fetch_payload, open_inproc_broker, produce_payload


class CapacityFs:
    """`OS_FS` with a disk size: the files under `root` hold at most `capacity_bytes`.

    A write that does not fit writes what fits and returns a short count; a write with
    no room raises ENOSPC naming the file (as Linux does). Used bytes are the files'
    sizes, measured on the real disk, so removing files (shutil.rmtree of a deleted
    topic) frees space. Everything else passes through to `OS_FS`.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.capacity_bytes: int | None = None
        self._paths: dict[int, str] = {}

    def used_bytes(self) -> int:
        total = 0
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    pass
        return total

    def _room(self, fd: int, size: int, offset: int) -> int:
        if self.capacity_bytes is None:
            return size
        growth = max(0, offset + size - os.fstat(fd).st_size)
        free = max(0, self.capacity_bytes - self.used_bytes())
        if growth <= free:
            return size
        fits = size - (growth - free)
        if fits <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._paths.get(fd, "?"))
        return fits

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        fd = OS_FS.open(path, flags, mode)
        self._paths[fd] = path
        return fd

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        OS_FS.close(fd)

    def pwrite(self, fd: int, data: Buffer, offset: int) -> int:
        fits = self._room(fd, len(data), offset)
        return OS_FS.pwrite(fd, memoryview(data)[:fits], offset)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        fits = self._room(fd, sum(len(b) for b in buffers), offset)
        return OS_FS.pwrite(fd, b"".join(bytes(b) for b in buffers)[:fits], offset)

    def __getattr__(self, name: str):
        return getattr(OS_FS, name)


async def _produce(c: AsyncRawClient, topic: str, batch: bytes) -> dict:
    r = await c.request(ApiKey.PRODUCE, produce_payload(topic, 0), [batch])
    return r.payload["topics"][0]["partitions"][0]


async def _fetch(c: AsyncRawClient, topic: str) -> tuple[dict, bytes]:
    r = await c.request(ApiKey.FETCH, fetch_payload(topic, 0, 0))
    p = r.payload["topics"][0]["partitions"][0]
    return p, (bytes(r.attachments[p["records"]]) if p["records"] >= 0 else b"")


async def _delete(c: AsyncRawClient, topic: str) -> dict:
    r = await c.request(ApiKey.DELETE_TOPICS, {"topics": [topic], "timeout_ms": 5000})
    return r.payload["topics"][0]


async def test_issue_8_item_10_delete_on_a_full_disk_and_writes_recover(tmp_path):
    """Disk full: a produce says "no space left on device" with the partition's file and
    stores nothing; what is stored still reads; deleting the big topic works (no
    topics.json.tmp left); its space comes back and the next produce succeeds, dense."""
    data_dir = str(tmp_path / "data")
    fs = CapacityFs(data_dir)
    settings = {"offsets.topic.num.partitions": 1, "log.flush.interval.messages": 1}
    async with open_inproc_broker(data_dir, settings, fs=fs) as b:
        c = await AsyncRawClient.connect(b.port)
        assert await c.create_topic("big") == 0 and await c.create_topic("t") == 0
        for _ in range(8):
            assert (await _produce(c, "big", build_batch([os.urandom(100_000)])))["error_code"] == 0
        assert (await _produce(c, "t", build_batch([b"first"])))["base_offset"] == 0
        stored_p, stored = await _fetch(c, "t")

        fs.capacity_bytes = fs.used_bytes()                    # not one byte free
        answer = await _produce(c, "t", build_batch([b"x" * 4000]))
        assert answer["error_code"] == ErrorCode.KAFKA_STORAGE_ERROR, answer
        message = answer["error_message"]
        assert "no space left on device" in message, message
        assert os.path.join(data_dir, "t-0") in message, message
        p, data = await _fetch(c, "t")                           # reads of what is stored
        assert p["error_code"] == 0 and data == stored and p["high_watermark"] == 1

        assert (await _delete(c, "big"))["error_code"] == 0      # frees space on a full disk
        assert not os.path.exists(os.path.join(data_dir, TOPICS_FILE + ".tmp"))
        with open(os.path.join(data_dir, TOPICS_FILE), "rb") as f:
            assert "big" not in json.loads(f.read())["topics"]
        with trio.fail_after(10):                                 # removed in the background
            while fs.used_bytes() >= fs.capacity_bytes - 700_000:
                await trio.sleep(0.01)

        answer = await _produce(c, "t", build_batch([b"after"]))  # no restart
        assert answer["error_code"] == 0 and answer["base_offset"] == 1, answer
        p, _ = await _fetch(c, "t")
        assert p["high_watermark"] == 2 and stored_p["high_watermark"] == 1
        assert await c.create_topic("u") == 0                    # the next write rebuilds it
        assert os.path.getsize(os.path.join(data_dir, RESERVE_FILE)) >= 64 * 1024
        await c.aclose()


async def test_issue_8_item_10_a_delete_without_a_reserve_is_a_clear_storage_error(tmp_path):
    """With the reserve gone and the disk full, a deletion is KAFKA_STORAGE_ERROR naming the
    disk and topics.json, changes nothing, leaves no .tmp, and works once space returns."""
    data_dir = str(tmp_path / "data")
    fs = CapacityFs(data_dir)
    async with open_inproc_broker(data_dir, {"offsets.topic.num.partitions": 1}, fs=fs) as b:
        c = await AsyncRawClient.connect(b.port)
        assert await c.create_topic("t") == 0
        os.unlink(os.path.join(data_dir, RESERVE_FILE))
        fs.capacity_bytes = fs.used_bytes()
        answer = await _delete(c, "t")
        assert answer["error_code"] == ErrorCode.KAFKA_STORAGE_ERROR, answer
        assert "No space left on device" in answer["error_message"]
        assert TOPICS_FILE in answer["error_message"]
        assert not os.path.exists(os.path.join(data_dir, TOPICS_FILE + ".tmp"))
        assert b.topic_metadata("t") is not None
        fs.capacity_bytes = None
        assert (await _delete(c, "t"))["error_code"] == 0
        assert b.topic_metadata("t") is None
        await c.aclose()


async def _simulated_store(fs: SimulatedFileSystem) -> DataDirMetadata:
    meta = DataDirMetadata("/data", fs=fs)
    await meta.load(0)
    return meta


async def test_data_dir_metadata_deletes_on_a_full_simulated_disk():
    """DataDirMetadata on the simulated disk: at capacity, puts fail with ENOSPC (nothing
    changes, no .tmp), a delete succeeds through the reserve and survives a crash; with no
    reserve a delete fails cleanly; with space back the reserve is rebuilt."""
    fs = SimulatedFileSystem(random.Random(10))
    meta = await _simulated_store(fs)
    for name in ("a", "b", "c"):
        await meta.put(meta.new_topic(name, 3, 1, {"retention.ms": "1000"}))
    assert fs.exists("/data/" + RESERVE_FILE)
    fs.capacity_bytes = fs.used_bytes

    with pytest.raises(OSError) as e:
        await meta.put(meta.new_topic("d", 1, 1, {}))
    assert e.value.errno == errno.ENOSPC and meta.topic_names() == ["a", "b", "c"]
    await meta.delete("a")                                            # the reserve's space
    assert meta.topic_names() == ["b", "c"]
    assert not fs.exists("/data/" + TOPICS_FILE + ".tmp")
    fs.crash()
    assert (await _simulated_store(fs)).topic_names() == ["b", "c"]    # durable

    fs.unlink("/data/" + RESERVE_FILE)                          # no reserve, and no room
    fs.capacity_bytes = fs.used_bytes                           # to rebuild it at load
    meta = DataDirMetadata("/data", fs=fs)
    await meta.load(0)
    assert not fs.exists("/data/" + RESERVE_FILE)
    with pytest.raises(OSError) as e:
        await meta.delete("b")
    assert e.value.errno == errno.ENOSPC and TOPICS_FILE in str(e.value)
    assert meta.topic_names() == ["b", "c"]
    assert not fs.exists("/data/" + TOPICS_FILE + ".tmp")
    fs.capacity_bytes = None                                    # space is back
    await meta.delete("b")
    assert meta.topic_names() == ["c"]
    assert len(fs.read_bytes("/data/" + RESERVE_FILE)) >= 64 * 1024
