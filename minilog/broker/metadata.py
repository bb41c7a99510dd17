"""Cluster metadata behind an interface, and the data-dir implementation.

`MetadataStore` (an ABC) is what the broker asks about topics, topic ids,
producer-id blocks and replica placement; `DataDirMetadata` keeps it in the
data dir of a single broker. An etcd-backed implementation (several
brokers) implements the same interface.

Rules (data dir):
- The metadata file is the source of truth for which topics and partitions
  exist. Partition directories not named by it are orphans (a crash during
  topic deletion) and are removed at start-up.
- Every change goes through `DataDirMetadata._apply`, which writes the whole
  file atomically (temp, fsync, rename, fsync dir) before the in-memory
  state changes. A crash leaves the old or the new file, never a mix.
- Topic names follow Kafka: [a-zA-Z0-9._-], 1..249 chars, not "." or "..".
- A full disk must not stop a deletion (the one operation that frees
  space; issue 8 item 10): `topics.json.reserve` keeps real blocks at
  least the size of `topics.json` (zeros, at least 64 KiB). When writing
  the file for a deletion fails with ENOSPC, the reserve is unlinked and
  the (smaller) file written into the space it held. The reserve is
  rebuilt by the next metadata write (or start) that finds room. Other
  writes never use it: they add nothing that frees space.
- Every file operation goes through the injected `FileSystem` (storage's
  seam), so disk faults are tested through it.

File layout (`<data-dir>/topics.json`, UTF-8 JSON)::

    {"version": 1,
     "topics": {"<name>": {"topic_id": "<uuid hex>", "partitions": <int>,
                           "replication_factor": 1, "leader_epoch": <int>,
                           "configs": {"<kafka key>": "<string>"}, "internal": <bool>}}}

`<data-dir>/topics.json.reserve` holds zeros (see the rules).
`<data-dir>/meta.properties` holds `broker.id` and `cluster.id` (as Kafka's).
`<data-dir>/producer-ids` holds the end of the last producer-id block
handed out: "0\\nnext-block <int>\\n".

Task-safety: not thread-safe; used from the trio thread only. Writes are
small and happen only on admin operations, so they run on the loop.
"""

from __future__ import annotations

import abc
import errno
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from minilog.storage import OS_FS, FileSystem, atomic_write

__all__ = ["TopicMeta", "MetadataStore", "DataDirMetadata", "ProducerIdManager",
           "ReplicaPlacementError", "validate_topic_name", "TOPICS_FILE"]

log = logging.getLogger("minilog.broker")

TOPICS_FILE = "topics.json"
RESERVE_FILE = TOPICS_FILE + ".reserve"
_RESERVE_BYTES_MIN = 64 * 1024          # the reserve's smallest size
_METADATA_BYTES_MAX = 1 << 30           # largest topics.json / meta.properties read
META_PROPERTIES = "meta.properties"
_FORMAT_VERSION = 1
TOPIC_NAME_BYTES_MAX = 249
_LEGAL = re.compile(r"^[a-zA-Z0-9._-]+$")


def validate_topic_name(name: str) -> str | None:
    """Return why `name` is not a legal topic name, or None when it is (Kafka's rules)."""
    if not name:
        return "topic name is empty"
    if name in (".", ".."):
        return "topic name cannot be '.' or '..'"
    if len(name) > TOPIC_NAME_BYTES_MAX:
        return f"topic name is longer than {TOPIC_NAME_BYTES_MAX} characters"
    if not _LEGAL.match(name):
        return "topic name may contain only ASCII letters, digits, '.', '_' and '-'"
    return None


@dataclass(frozen=True)
class TopicMeta:
    name: str
    topic_id: str
    partitions: int                       # partition count
    replication_factor: int = 1
    leader_epoch: int = 0                 # same for every partition on a single broker
    configs: dict[str, str] = field(default_factory=dict)   # overrides only: Kafka key -> str
    internal: bool = False
    # Replicas per partition, preferred leader first (a cluster's placement; empty on a
    # single broker, where this broker holds the one replica of every partition).
    assignment: tuple[tuple[int, ...], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"topic_id": self.topic_id, "partitions": self.partitions,
                "replication_factor": self.replication_factor, "leader_epoch": self.leader_epoch,
                "configs": dict(self.configs), "internal": self.internal}

    @classmethod
    def from_json(cls, name: str, obj: dict[str, Any]) -> TopicMeta:
        return cls(name=name, topic_id=str(obj["topic_id"]), partitions=int(obj["partitions"]),
                   replication_factor=int(obj.get("replication_factor", 1)),
                   leader_epoch=int(obj.get("leader_epoch", 0)),
                   configs={str(k): str(v) for k, v in obj.get("configs", {}).items()},
                   internal=bool(obj.get("internal", False)))


class ReplicaPlacementError(Exception):
    """The replicas asked for cannot be placed on the live brokers."""


class MetadataStore(abc.ABC):
    """Topics, topic ids, producer-id blocks and replica placement, for one broker.

    Reads are synchronous (from memory); writes are awaitable and durable
    before they return (single broker: a small atomic file write, only on
    admin operations; a cluster: an etcd transaction, after which this
    broker's picture includes the change). Task-safety: the trio thread only.
    """

    cluster_id: str

    @abc.abstractmethod
    async def load(self, broker_id: int) -> None:
        """Read the stored metadata (creating it on first start)."""

    @abc.abstractmethod
    def topic(self, name: str) -> TopicMeta | None: ...

    @abc.abstractmethod
    def topic_names(self) -> list[str]:
        """Every topic's name, sorted."""

    @abc.abstractmethod
    def topics_snapshot(self) -> dict[str, TopicMeta]: ...

    @abc.abstractmethod
    def new_topic(self, name: str, partitions: int, replication_factor: int,
                  configs: dict[str, str], *, internal: bool = False) -> TopicMeta:
        """A new topic's metadata with a fresh topic id and its replicas placed (not
        yet stored: see `put`). Raises ReplicaPlacementError."""

    @abc.abstractmethod
    def check_replication_factor(self, replication_factor: int) -> str | None:
        """Why `replication_factor` cannot be placed now, or None."""

    @abc.abstractmethod
    async def put(self, meta: TopicMeta) -> None:
        """Store a topic's metadata (new or changed)."""

    async def put_many(self, metas: list[TopicMeta]) -> None:
        """Store several topics' metadata; a store that can writes them at once."""
        for meta in metas:
            await self.put(meta)

    @abc.abstractmethod
    async def delete(self, name: str) -> None: ...

    @abc.abstractmethod
    def with_partitions(self, name: str, count: int) -> TopicMeta:
        """The topic's metadata with a new partition count, the new partitions placed
        (not yet stored: see `put`). Raises ReplicaPlacementError."""

    @abc.abstractmethod
    async def set_configs(self, name: str, configs: dict[str, str]) -> TopicMeta: ...

    @abc.abstractmethod
    async def allocate_producer_id(self) -> int:
        """A producer id never handed out before (across restarts)."""

    @abc.abstractmethod
    def producer_id_issued(self, producer_id: int) -> bool:
        """Whether `producer_id` was handed out by this cluster."""


class ProducerIdManager:
    """Hands out increasing producer ids, persisted in blocks.

    File `<data-dir>/producer-ids`: "0\\nnext-block <int>\\n". Before ids from
    a block are handed out, the end of the block is written (atomically), so
    after any crash the next start begins above every id ever given out.
    """

    BLOCK = 1000

    def __init__(self, data_dir: str) -> None:
        self._path = os.path.join(data_dir, "producer-ids")
        try:
            with open(self._path, encoding="ascii") as f:
                version, line = f.read().split("\n")[:2]
            assert version == "0"
            self._block_end = int(line.split()[1])
        except FileNotFoundError:
            self._block_end = 0
        self.next_id = self._block_end
        self._lock = trio.Lock()

    async def allocate(self) -> int:
        async with self._lock:
            if self.next_id >= self._block_end:
                end = self.next_id + self.BLOCK
                await trio.to_thread.run_sync(atomic_write, self._path, f"0\nnext-block {end}\n".encode())
                self._block_end = end
            pid = self.next_id
            self.next_id += 1
            return pid


def _read_small(fs: FileSystem, path: str) -> bytes:
    """A whole small file through `fs` (FileNotFoundError when absent)."""
    fd = fs.open(path, os.O_RDONLY)
    try:
        return fs.pread(fd, min(fs.fsize(fd), _METADATA_BYTES_MAX), 0)
    finally:
        fs.close(fd)


class DataDirMetadata(MetadataStore):
    """The metadata of a single broker, in its data dir (see the module docstring).

    Args:
        data_dir: the broker's data dir.
        fs: the file system its files are written through (the real disk by default).
    """

    def __init__(self, data_dir: str, *, fs: FileSystem = OS_FS) -> None:
        self.data_dir = data_dir
        self._fs = fs
        self._path = os.path.join(data_dir, TOPICS_FILE)
        self._reserve_path = os.path.join(data_dir, RESERVE_FILE)
        self._reserve_bytes = 0           # the reserve's size, as last seen (0: none)
        self.topics: dict[str, TopicMeta] = {}
        self.cluster_id = ""
        self._broker_id = 0
        self._producer_ids: ProducerIdManager | None = None

    def topic(self, name: str) -> TopicMeta | None:
        return self.topics.get(name)

    def topic_names(self) -> list[str]:
        return sorted(self.topics)

    def topics_snapshot(self) -> dict[str, TopicMeta]:
        return dict(self.topics)

    def check_replication_factor(self, replication_factor: int) -> str | None:
        """A single broker holds exactly one replica of each partition."""
        if replication_factor < 1:
            return "replication factor must be at least 1"
        if replication_factor > 1:
            return f"replication factor {replication_factor} is larger than the 1 available broker"
        return None

    async def allocate_producer_id(self) -> int:
        assert self._producer_ids is not None, "load() first"
        return await self._producer_ids.allocate()

    def producer_id_issued(self, producer_id: int) -> bool:
        assert self._producer_ids is not None, "load() first"
        return 0 <= producer_id < self._producer_ids.next_id

    async def load(self, broker_id: int) -> None:
        """Read topics.json and meta.properties (creating them on first start).

        Raises:
            ValueError: a file exists but is malformed (the operator must look).
        """
        self._fs.makedirs(self.data_dir)
        self._broker_id = broker_id
        self._load_properties(broker_id)
        self._producer_ids = ProducerIdManager(self.data_dir)
        try:
            data = _read_small(self._fs, self._path)
        except FileNotFoundError:
            self._apply({})
            return
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{self._path}: unknown format version")
        self.topics = {name: TopicMeta.from_json(name, obj) for name, obj in doc["topics"].items()}
        self._keep_reserve(len(data))

    def _load_properties(self, broker_id: int) -> None:
        path = os.path.join(self.data_dir, META_PROPERTIES)
        props: dict[str, str] = {}
        try:
            for line in _read_small(self._fs, path).decode("utf-8").splitlines():
                name, sep, value = line.strip().partition("=")
                if sep and not name.startswith("#"):
                    props[name] = value
        except FileNotFoundError:
            pass
        self.cluster_id = props.get("cluster.id") or uuid.uuid4().hex[:22]
        if props.get("broker.id") != str(broker_id) or "cluster.id" not in props:
            text = f"version=0\nbroker.id={broker_id}\ncluster.id={self.cluster_id}\n"
            atomic_write(path, text.encode(), fs=self._fs)

    def _apply(self, topics: dict[str, TopicMeta], *, may_use_reserve: bool = False) -> None:
        """The one mutation path: persist `topics`, then make it current.

        Args:
            may_use_reserve: on ENOSPC, give up the reserve and write again (deletions).

        Raises:
            OSError: the file cannot be written (the old one stays; no .tmp is left).
        """
        doc = {"version": _FORMAT_VERSION,
               "topics": {name: meta.to_json() for name, meta in sorted(topics.items())}}
        data = json.dumps(doc, indent=1).encode("utf-8")
        try:
            atomic_write(self._path, data, fs=self._fs)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or not may_use_reserve or not self._release_reserve():
                raise
            log.warning("%s: no space left on device; writing it into the space of %s",
                        self._path, RESERVE_FILE)
            atomic_write(self._path, data, fs=self._fs)
        self.topics = topics
        self._keep_reserve(len(data))

    def _release_reserve(self) -> bool:
        """Unlink the reserve to free its blocks; False when there was none."""
        try:
            self._fs.unlink(self._reserve_path)
        except FileNotFoundError:
            return False
        self._reserve_bytes = 0
        return True

    def _keep_reserve(self, file_bytes: int) -> None:
        """Make the reserve at least `file_bytes` (twice that when rebuilt, so a growing
        file rewrites it rarely). Best effort: a full disk leaves it as it is, and the
        next write tries again."""
        if self._reserve_bytes >= file_bytes:
            return
        try:
            fd = self._fs.open(self._reserve_path, os.O_RDONLY)
            try:
                self._reserve_bytes = self._fs.fsize(fd)
            finally:
                self._fs.close(fd)
        except FileNotFoundError:
            self._reserve_bytes = 0
        if self._reserve_bytes >= file_bytes:
            return
        size = max(_RESERVE_BYTES_MIN, 2 * file_bytes)
        try:
            atomic_write(self._reserve_path, bytes(size), fs=self._fs, sync=False)
        except OSError as exc:
            log.warning("cannot keep %s (%d bytes) for deleting topics on a full disk: %s",
                        RESERVE_FILE, size, exc)
            return
        self._reserve_bytes = size

    def new_topic(self, name: str, partitions: int, replication_factor: int,
                  configs: dict[str, str], *, internal: bool = False) -> TopicMeta:
        """A new topic's metadata (not yet stored: see `put`)."""
        assert validate_topic_name(name) is None
        problem = self.check_replication_factor(replication_factor)
        if problem:
            raise ReplicaPlacementError(problem)
        return TopicMeta(name, uuid.uuid4().hex, partitions, replication_factor=replication_factor,
                         configs=dict(configs), internal=internal)

    async def put(self, meta: TopicMeta) -> None:
        """Store a topic's metadata (new or changed)."""
        self._apply({**self.topics, meta.name: meta})

    async def put_many(self, metas: list[TopicMeta]) -> None:
        """Store several topics in one write of the file (2,000 auto-created topics
        rewrote and fsynced it 2,000 times: issue 8, item 3)."""
        if metas:
            self._apply({**self.topics, **{meta.name: meta for meta in metas}})

    async def delete(self, name: str) -> None:
        """Forget a topic; works on a full disk while the reserve exists (module doc)."""
        topics = dict(self.topics)
        del topics[name]
        self._apply(topics, may_use_reserve=True)

    def with_partitions(self, name: str, count: int) -> TopicMeta:
        """The topic's metadata with a new partition count (not yet stored: see `put`)."""
        return replace(self.topics[name], partitions=count)

    async def set_configs(self, name: str, configs: dict[str, str]) -> TopicMeta:
        meta = replace(self.topics[name], configs=dict(configs))
        self._apply({**self.topics, name: meta})
        return meta
