"""The native codec's payload schemas and versions, written as data.

Each API has a request schema and a response schema: a dict maps field
name -> spec, a one-element list means "list of spec", `OPT(spec)` allows
None or absence (an absent optional field is filled in with None, so
handlers may index it), and a Python type is a leaf. `check(spec, value)`
walks a payload and raises `FrameError` naming the first bad field, so a
well-formed frame with a bad body gets INVALID_REQUEST instead of crashing a
handler. Unknown extra fields are ignored (forward compatibility); missing
fields are errors.

The field names are the request model's (`protocol/_messages.py`): the
native codec converts a payload to the model's object by name, and these
schemas name the bad field when that fails.

Conventions shared by every API:
- Every response payload may carry a top-level `error_code` (and
  `error_message`): non-zero means the request failed as a whole.
- A field holding record batches holds an attachment index (see `_frames`),
  -1 for none.
"""

from __future__ import annotations

from typing import Any

from .._api import ApiKey
from .._errors import FrameError

__all__ = [
    "SUPPORTED_VERSIONS",
    "REQUEST_SCHEMAS",
    "RESPONSE_SCHEMAS",
    "OPT",
    "check",
]

# (min, max) version per API this build speaks. Bump max when a schema gains
# fields a peer must understand; ApiVersions lets both sides pick.
SUPPORTED_VERSIONS: dict[int, tuple[int, int]] = {}        # filled below, one per schema


class OPT:
    """Spec wrapper: the field may be None."""

    __slots__ = ("spec",)

    def __init__(self, spec: Any) -> None:
        self.spec = spec


def check(spec: Any, value: Any, path: str = "payload") -> None:
    """Raise FrameError unless `value` matches `spec` (see module docstring)."""
    if isinstance(spec, OPT):
        if value is None:
            return
        spec = spec.spec
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise FrameError(f"{path}: expected a map")
        for name, sub in spec.items():
            if name not in value:
                if isinstance(sub, OPT):
                    value[name] = None  # absent optional field: normalised to None
                    continue
                raise FrameError(f"{path}.{name}: missing")
            check(sub, value[name], f"{path}.{name}")
    elif isinstance(spec, list):
        if not isinstance(value, list):
            raise FrameError(f"{path}: expected a list")
        (sub,) = spec
        for i, item in enumerate(value):
            check(sub, item, f"{path}[{i}]")
    elif spec is int:
        if type(value) is not int and type(value) is not bool:
            raise FrameError(f"{path}: expected an integer")
    elif spec is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise FrameError(f"{path}: expected a number")
    elif spec is Any:
        return
    elif not isinstance(value, spec):
        raise FrameError(f"{path}: expected {spec.__name__}")


_TP = {"topic": str, "partitions": [int]}  # a topic with a list of partition numbers

REQUEST_SCHEMAS: dict[int, Any] = {
    ApiKey.API_VERSIONS: {"client_software_name": str, "client_software_version": str},
    ApiKey.METADATA: {"topics": OPT([str]), "allow_auto_topic_creation": bool},
    ApiKey.PRODUCE: {
        "acks": int,
        "timeout_ms": int,
        "topics": [{"topic": str, "partitions": [{"partition": int, "records": int}]}],
    },
    ApiKey.FETCH: {
        "replica_id": int,            # -1 for consumers; the broker id for followers
        "max_wait_ms": int,
        "min_bytes": int,
        "max_bytes": int,
        "isolation_level": int,
        "topics": [
            {
                "topic": str,
                "partitions": [
                    {
                        "partition": int,
                        "fetch_offset": int,
                        "partition_max_bytes": int,
                        "current_leader_epoch": int,
                        "last_fetched_epoch": OPT(int),   # followers (absent: None)
                    }
                ],
            }
        ],
    },
    ApiKey.OFFSET_FOR_LEADER_EPOCH: {
        "replica_id": int,
        "topics": [
            {
                "topic": str,
                "partitions": [{"partition": int, "current_leader_epoch": int, "leader_epoch": int}],
            }
        ],
    },
    ApiKey.LIST_OFFSETS: {
        "replica_id": int,
        "isolation_level": int,
        "topics": [{"topic": str, "partitions": [{"partition": int, "timestamp": int}]}],
    },
    ApiKey.CREATE_TOPICS: {
        "topics": [
            {"name": str, "num_partitions": int, "replication_factor": int, "configs": {}}
        ],
        "timeout_ms": int,
        "validate_only": bool,
    },
    ApiKey.DELETE_TOPICS: {"topics": [str], "timeout_ms": int},
    ApiKey.CREATE_PARTITIONS: {
        "topics": [{"name": str, "count": int}],
        "timeout_ms": int,
        "validate_only": bool,
    },
    ApiKey.DESCRIBE_CONFIGS: {
        "resources": [{"resource_type": int, "resource_name": str, "config_names": OPT([str])}]
    },
    ApiKey.INCREMENTAL_ALTER_CONFIGS: {
        "resources": [
            {
                "resource_type": int,
                "resource_name": str,
                "configs": [{"name": str, "op": int, "value": OPT(str)}],
            }
        ],
        "validate_only": bool,
    },
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: {"topics": OPT([str])},
    ApiKey.INIT_PRODUCER_ID: {
        "transactional_id": OPT(str),
        "transaction_timeout_ms": int,
        "producer_id": int,
        "producer_epoch": int,
    },
    ApiKey.FIND_COORDINATOR: {"key_type": int, "keys": [str]},
    ApiKey.CONSUMER_GROUP_HEARTBEAT: {
        "group_id": str,
        "member_id": str,             # "" to join; the coordinator assigns one
        "member_epoch": int,          # 0 to join, -1 to leave, else the current epoch
        "rebalance_timeout_ms": int,  # max.poll.interval.ms
        "subscribed_topic_names": OPT([str]),   # None = unchanged since last heartbeat
        "server_assignor": OPT(str),
        "topic_partitions": OPT([_TP]),         # partitions the member owns now
        "client_id": str,
        "session_timeout_ms": OPT(int),         # None = broker default; clamped to group.min/max
    },
    ApiKey.CONSUMER_GROUP_DESCRIBE: {"group_ids": [str]},
    ApiKey.OFFSET_COMMIT: {
        "group_id": str,
        "member_id": str,
        "member_epoch": int,          # -1 for a commit outside group membership
        "topics": [
            {
                "topic": str,
                "partitions": [
                    {
                        "partition": int,
                        "committed_offset": int,
                        "committed_leader_epoch": int,
                        "committed_metadata": OPT(str),
                    }
                ],
            }
        ],
    },
    ApiKey.OFFSET_FETCH: {
        "group_id": str,
        "member_id": OPT(str),
        "member_epoch": int,
        "topics": OPT([_TP]),         # None = every partition the group has committed
    },
    ApiKey.LIST_GROUPS: {"states_filter": [str]},
    ApiKey.DELETE_GROUPS: {"group_ids": [str]},
}

_PARTITION_META = {
    "partition": int,
    "error_code": int,
    "leader": int,
    "leader_epoch": int,
    "replicas": [int],
    "isr": [int],
}

RESPONSE_SCHEMAS: dict[int, Any] = {
    ApiKey.API_VERSIONS: {
        "error_code": int,
        "api_versions": [[int]],      # [api_key, min_version, max_version]
        "broker_version": str,
        "broker_id": int,
    },
    ApiKey.METADATA: {
        "brokers": [{"node_id": int, "host": str, "port": int}],
        "cluster_id": str,
        "controller_id": int,
        "topics": [{"topic": str, "error_code": int, "partitions": [_PARTITION_META]}],
    },
    ApiKey.PRODUCE: {
        "topics": [
            {
                "topic": str,
                "partitions": [
                    {
                        "partition": int,
                        "error_code": int,
                        "error_message": OPT(str),
                        "base_offset": int,
                        "log_append_time": int,
                        "log_start_offset": int,
                    }
                ],
            }
        ]
    },
    ApiKey.FETCH: {
        "error_code": int,
        "topics": [
            {
                "topic": str,
                "partitions": [
                    {
                        "partition": int,
                        "error_code": int,
                        "high_watermark": int,
                        "last_stable_offset": int,
                        "log_start_offset": int,
                        "records": int,        # attachment index, -1 for none
                        "diverging_epoch": OPT(int),        # followers: truncate first
                        "diverging_end_offset": OPT(int),
                    }
                ],
            }
        ],
    },
    ApiKey.OFFSET_FOR_LEADER_EPOCH: {
        "topics": [
            {
                "topic": str,
                "partitions": [
                    {"partition": int, "error_code": int, "leader_epoch": int, "end_offset": int}
                ],
            }
        ]
    },
    ApiKey.LIST_OFFSETS: {
        "topics": [
            {
                "topic": str,
                "partitions": [
                    {
                        "partition": int,
                        "error_code": int,
                        "timestamp": int,
                        "offset": int,
                        "leader_epoch": int,
                    }
                ],
            }
        ]
    },
    ApiKey.CREATE_TOPICS: {
        "topics": [{"name": str, "error_code": int, "error_message": OPT(str)}]
    },
    ApiKey.DELETE_TOPICS: {
        "topics": [{"name": str, "error_code": int, "error_message": OPT(str)}]
    },
    ApiKey.CREATE_PARTITIONS: {
        "results": [{"name": str, "error_code": int, "error_message": OPT(str)}]
    },
    ApiKey.DESCRIBE_CONFIGS: {
        "results": [
            {
                "resource_type": int,
                "resource_name": str,
                "error_code": int,
                "error_message": OPT(str),
                "configs": [
                    {"name": str, "value": OPT(str), "read_only": bool, "is_default": bool,
                     "source": str}
                ],
            }
        ]
    },
    ApiKey.INCREMENTAL_ALTER_CONFIGS: {
        "results": [
            {"resource_type": int, "resource_name": str, "error_code": int,
             "error_message": OPT(str)}
        ]
    },
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: {
        "topics": [
            {
                "topic": str,
                "error_code": int,
                "partitions": [
                    {
                        **_PARTITION_META,
                        "log_start_offset": int,
                        "log_end_offset": int,
                        "high_watermark": int,
                        "size_bytes": int,
                        "cleanable_ratio": OPT(float),
                    }
                ],
            }
        ]
    },
    ApiKey.INIT_PRODUCER_ID: {"error_code": int, "producer_id": int, "producer_epoch": int},
    ApiKey.FIND_COORDINATOR: {
        "coordinators": [
            {"key": str, "node_id": int, "host": str, "port": int, "error_code": int,
             "error_message": OPT(str)}
        ]
    },
    ApiKey.CONSUMER_GROUP_HEARTBEAT: {
        "error_code": int,
        "error_message": OPT(str),
        "member_id": OPT(str),
        "member_epoch": int,
        "heartbeat_interval_ms": int,
        "assignment": OPT([_TP]),     # None = unchanged; else the full target for this member
    },
    ApiKey.CONSUMER_GROUP_DESCRIBE: {
        "groups": [
            {
                "group_id": str,
                "error_code": int,
                "error_message": OPT(str),
                "group_state": str,   # empty | assigning | reconciling | stable | dead
                "group_epoch": int,
                "assignment_epoch": int,
                "assignor_name": str,
                "members": [
                    {
                        "member_id": str,
                        "client_id": str,
                        "client_host": str,
                        "member_epoch": int,
                        "subscribed_topic_names": [str],
                        "assignment": [_TP],
                    }
                ],
            }
        ]
    },
    ApiKey.OFFSET_COMMIT: {
        "topics": [{"topic": str, "partitions": [{"partition": int, "error_code": int}]}]
    },
    ApiKey.OFFSET_FETCH: {
        "error_code": int,
        "topics": [
            {
                "topic": str,
                "partitions": [
                    {"partition": int, "committed_offset": int, "committed_leader_epoch": int,
                     "metadata": OPT(str), "error_code": int}
                ],
            }
        ],
    },
    ApiKey.LIST_GROUPS: {
        "error_code": int,
        "groups": [{"group_id": str, "protocol_type": str, "group_state": str}],
    },
    ApiKey.DELETE_GROUPS: {"results": [{"group_id": str, "error_code": int}]},
}

assert set(REQUEST_SCHEMAS) == set(RESPONSE_SCHEMAS) <= set(ApiKey)
SUPPORTED_VERSIONS.update({key: (0, 0) for key in REQUEST_SCHEMAS})
