"""Topic metadata of a single broker, persisted in the data dir.

Rules:
- The metadata file is the source of truth for which topics and partitions
  exist. Partition directories not named by it are orphans (a crash during
  topic deletion) and are removed at start-up.
- Every change goes through `MetadataStore._apply`, which writes the whole
  file atomically (temp, fsync, rename, fsync dir) before the in-memory
  state changes. A crash leaves the old or the new file, never a mix.
- Topic names follow Kafka: [a-zA-Z0-9._-], 1..249 chars, not "." or "..".

File layout (`<data-dir>/topics.json`, UTF-8 JSON)::

    {"version": 1,
     "topics": {"<name>": {"topic_id": "<uuid hex>", "partitions": <int>,
                           "replication_factor": 1, "leader_epoch": <int>,
                           "configs": {"<kafka key>": "<string>"}, "internal": <bool>}}}

`<data-dir>/meta.properties` holds `broker.id` and `cluster.id` (as Kafka's).

Task-safety: not thread-safe; used from the trio thread only. Writes are
small and happen only on admin operations, so they run on the loop.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from minilog.storage import atomic_write

__all__ = ["TopicMeta", "MetadataStore", "validate_topic_name", "TOPICS_FILE"]

TOPICS_FILE = "topics.json"
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
    configs: dict = field(default_factory=dict)   # overrides only: Kafka key -> str
    internal: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"topic_id": self.topic_id, "partitions": self.partitions,
                "replication_factor": self.replication_factor, "leader_epoch": self.leader_epoch,
                "configs": dict(self.configs), "internal": self.internal}

    @classmethod
    def from_json(cls, name: str, obj: dict) -> TopicMeta:
        return cls(name=name, topic_id=str(obj["topic_id"]), partitions=int(obj["partitions"]),
                   replication_factor=int(obj.get("replication_factor", 1)),
                   leader_epoch=int(obj.get("leader_epoch", 0)),
                   configs={str(k): str(v) for k, v in obj.get("configs", {}).items()},
                   internal=bool(obj.get("internal", False)))


class MetadataStore:
    """Topics of this broker; loaded from and saved to the data dir."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self._path = os.path.join(data_dir, TOPICS_FILE)
        self.topics: dict[str, TopicMeta] = {}
        self.cluster_id = ""

    def load(self, broker_id: int) -> None:
        """Read topics.json and meta.properties (creating them on first start).

        Raises:
            ValueError: a file exists but is malformed (the operator must look).
        """
        os.makedirs(self.data_dir, exist_ok=True)
        self._load_properties(broker_id)
        try:
            with open(self._path, "rb") as f:
                doc = json.loads(f.read().decode("utf-8"))
        except FileNotFoundError:
            self._apply({})
            return
        if not isinstance(doc, dict) or doc.get("version") != _FORMAT_VERSION:
            raise ValueError(f"{self._path}: unknown format version")
        self.topics = {name: TopicMeta.from_json(name, obj) for name, obj in doc["topics"].items()}

    def _load_properties(self, broker_id: int) -> None:
        path = os.path.join(self.data_dir, META_PROPERTIES)
        props: dict[str, str] = {}
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    name, sep, value = line.strip().partition("=")
                    if sep and not name.startswith("#"):
                        props[name] = value
        except FileNotFoundError:
            pass
        self.cluster_id = props.get("cluster.id") or uuid.uuid4().hex[:22]
        if props.get("broker.id") != str(broker_id) or "cluster.id" not in props:
            text = f"version=0\nbroker.id={broker_id}\ncluster.id={self.cluster_id}\n"
            atomic_write(path, text.encode())

    def _apply(self, topics: dict[str, TopicMeta]) -> None:
        """The one mutation path: persist `topics`, then make it current."""
        doc = {"version": _FORMAT_VERSION,
               "topics": {name: meta.to_json() for name, meta in sorted(topics.items())}}
        atomic_write(self._path, json.dumps(doc, indent=1).encode("utf-8"))
        self.topics = topics

    @staticmethod
    def new_topic(name: str, partitions: int, configs: dict[str, str], *,
                  internal: bool = False) -> TopicMeta:
        """A new topic's metadata (not yet stored: see `put`)."""
        assert validate_topic_name(name) is None
        return TopicMeta(name, uuid.uuid4().hex, partitions, configs=dict(configs), internal=internal)

    def put(self, meta: TopicMeta) -> None:
        """Store a topic's metadata (new or changed)."""
        self._apply({**self.topics, meta.name: meta})

    def delete(self, name: str) -> None:
        topics = dict(self.topics)
        del topics[name]
        self._apply(topics)

    def with_partitions(self, name: str, count: int) -> TopicMeta:
        """The topic's metadata with a new partition count (not yet stored: see `put`)."""
        return replace(self.topics[name], partitions=count)

    def set_configs(self, name: str, configs: dict[str, str]) -> TopicMeta:
        meta = replace(self.topics[name], configs=dict(configs))
        self._apply({**self.topics, name: meta})
        return meta
