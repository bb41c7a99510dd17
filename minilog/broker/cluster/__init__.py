"""minilog.broker.cluster: the control plane of a replicated cluster, on etcd.

Imported only by a broker started with `--metadata etcd://HOST:PORT` (a
single broker never imports it, nor etcd's client). One module per job:

    node.py           the broker's membership: etcd connection, registration under a
                      lease, re-registration after a lost lease, controlled shutdown
    picture.py        every cluster record in memory, as of one etcd revision (pure)
    follower.py       keeps the picture current: one prefix read, then a watch
    applier.py        makes this broker's replicas match the picture (ReplicaControl)
    election.py       the controller's rules as one pure function (a decision table)
    controller.py     the controller loop: campaign, then keep every partition's
                      leader and ISR right, fenced by its term
    etcd_metadata.py  MetadataStore on etcd (topics, placement, producer-id blocks)
    admin.py          topic administration as etcd writes (create, delete, alter)
    link.py           ClusterLink on etcd (broker addresses, alter_isr by CAS)
    view.py           ClusterView: what METADATA and FIND_COORDINATOR answer from

docs/cluster.md describes the keys, the rules and how to run a cluster.
"""

from __future__ import annotations

from .admin import ClusterTopicAdmin
from .applier import Applier, LocalReplicas
from .controller import Controller, ControllerStatistics
from .election import RULES, ClusterView, next_state
from .etcd_metadata import EtcdMetadata
from .follower import Backoff, MetadataFollower
from .link import EtcdClusterLink
from .node import ClusterNode, NodeParts, advertised_addresses, parse_metadata_url
from .picture import ClusterPicture
from .view import PictureView

__all__ = [
    "ClusterNode",
    "NodeParts",
    "ClusterPicture",
    "MetadataFollower",
    "Backoff",
    "Applier",
    "LocalReplicas",
    "Controller",
    "ControllerStatistics",
    "ClusterView",
    "next_state",
    "RULES",
    "EtcdMetadata",
    "ClusterTopicAdmin",
    "EtcdClusterLink",
    "PictureView",
    "advertised_addresses",
    "parse_metadata_url",
]
