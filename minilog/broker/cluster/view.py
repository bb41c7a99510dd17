"""`ClusterView` over the picture: what METADATA, FIND_COORDINATOR and describe answer from.

Task-safety: the trio thread only; every read is synchronous.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .._services import PartitionState
from .link import service_state
from .picture import ClusterPicture

__all__ = ["PictureView"]


class PictureView:
    """Implements `minilog.broker._services.ClusterView` on a `ClusterPicture`."""

    def __init__(self, picture: ClusterPicture, ensure_offsets_topic: Callable[[], Awaitable[None]]) -> None:
        self._picture = picture
        self._ensure_offsets_topic = ensure_offsets_topic

    @property
    def controller_id(self) -> int:
        return self._picture.controller_id

    def live_brokers(self, listener: str) -> list[tuple[int, str, int]]:
        out = []
        for broker_id, reg in sorted(self._picture.brokers.items()):
            address = reg.address(listener)
            if address is not None:
                out.append((broker_id, address[0], address[1]))
        return out

    def endpoint(self, broker_id: int, listener: str) -> tuple[str, int] | None:
        reg = self._picture.brokers.get(broker_id)
        return reg.address(listener) if reg is not None else None

    def partition_state(self, topic: str, partition: int) -> PartitionState | None:
        state = self._picture.state(topic, partition)
        return service_state(state) if state is not None else None

    async def ensure_offsets_topic(self) -> None:
        await self._ensure_offsets_topic()
