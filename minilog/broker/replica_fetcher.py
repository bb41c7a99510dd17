"""Followers' side of replication: fetch from the leaders, truncate by epoch, append.

Kafka's ReplicaFetcherManager / ReplicaFetcherThread are the model: one
fetcher per source broker fetches every partition this broker follows
from it, in one long-poll Fetch per round.

Rules:
- A partition enters a fetcher "truncating" (after every leader change,
  and when the leader reports a diverging epoch or an offset out of
  range): before its next fetch the fetcher asks the leader
  OffsetForLeaderEpoch for the follower's latest epoch and cuts the log as
  `replication.truncation_offset` says, repeating until that is done
  (KIP-101/KIP-279). Only then is it fetched, from its log end, with its
  latest epoch as `last_fetched_epoch` (the leader checks it, KIP-595).
- Fetched batches are appended with the leader's offsets and epochs as
  they are (`Partition.append_as_follower`): the epoch cache and the
  idempotent producers' state follow from the batches. The follower's HW is
  min(leader's HW, own log end).
- A response is applied only if the partition is still followed in the
  same leader epoch it was requested in (a role change meanwhile drops it).
- Errors: NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH
  / UNKNOWN_TOPIC_OR_PARTITION back the partition off for at most 100 ms (a
  leader that has not applied its state yet; a newer state re-adds the
  partition at once); a broken connection backs the whole fetcher off
  (replica.fetch.backoff.ms) and reconnects, asking `ClusterLink.broker_address`
  again each time.
- The connection is bound to this broker's listener host when that is a
  specific address, so a test can cut one follower off from one leader by
  source address (brokers listen on 127.0.0.1/2/3).

Theory of operation: `ReplicaFetcherManager.follow(part)` puts a partition
in the fetcher of `part.leader_id` (creating and starting that fetcher
task when needed) and takes it out of any other; `unfollow(part)` takes it
out. A fetcher with no partitions closes its connection and waits. The
connection (`FetcherConnection`) speaks the native codec, one request at a
time; the broker package never imports the client package.

Task-safety: the trio thread only.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from minilog._logsafe import logsafe
from minilog.protocol import (
    NEED_DATA,
    ApiKey,
    CorruptBatchError,
    ErrorCode,
    FrameDecoder,
    FrameError,
    batch_size_at,
    encode_request,
)

from .partition import PartitionError
from .replication import UNDEFINED_EPOCH, epoch_end_offset, truncation_offset

if TYPE_CHECKING:
    from ._cluster_link import ClusterLink
    from .partition import Partition

__all__ = ["FetcherSettings", "FetcherConnection", "ReplicaFetcherManager", "FetcherError"]

log = logging.getLogger("minilog.broker.fetcher")

_RECV_BYTES = 1 << 20
_PARTITION_BACKOFF_MS_MAX = 100   # a partition's pause after an error answer (leader not ready)
_BACKOFF_CODES = frozenset({ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.FENCED_LEADER_EPOCH,
                            ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                            ErrorCode.LEADER_NOT_AVAILABLE})


def _error_code(value: int) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.UNKNOWN_SERVER_ERROR


class FetcherError(Exception):
    """The connection to a leader failed (refused, lost, timed out, malformed answer)."""


@dataclass(frozen=True)
class FetcherSettings:
    """The follower's Kafka settings (replica.*), in their units."""

    fetch_wait_max_ms: int = 500            # replica.fetch.wait.max.ms
    fetch_max_bytes: int = 1 << 20          # replica.fetch.max.bytes (per partition)
    fetch_response_max_bytes: int = 10 << 20  # replica.fetch.response.max.bytes
    fetch_backoff_ms: int = 1000            # replica.fetch.backoff.ms
    socket_timeout_ms: int = 30_000         # replica.socket.timeout.ms


def bind_address(host: str | None) -> str | None:
    """`host` when it is a specific IP address to connect from, else None."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return None if address.is_unspecified else host


class FetcherConnection:
    """One connection to a leader on the native codec; one request at a time.

    Raises (every method): FetcherError.
    """

    def __init__(self, host: str, port: int, *, source_host: str | None, client_id: str,
                 timeout_s: float) -> None:
        self.host, self.port = host, port
        self._source = bind_address(source_host)
        self._client_id = client_id
        self._timeout_s = timeout_s
        self._stream: trio.SocketStream | None = None
        self._decoder = FrameDecoder("client")
        self._correlation_id = 0

    async def open(self) -> None:
        try:
            with trio.fail_after(self._timeout_s):
                self._stream = await trio.open_tcp_stream(self.host, self.port,
                                                          local_address=self._source)
        except (OSError, trio.TooSlowError) as exc:
            raise FetcherError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def request(self, api_key: int, payload: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """Send one request; return the response's (payload, attachments)."""
        if self._stream is None:
            raise FetcherError("not connected")
        self._correlation_id += 1
        cid = self._correlation_id
        try:
            with trio.fail_after(self._timeout_s):
                await self._stream.send_all(b"".join(
                    encode_request(api_key, 0, cid, self._client_id, payload)))
                while True:
                    frame: Any = self._decoder.next_frame()
                    if frame is not NEED_DATA:
                        break
                    data = await self._stream.receive_some(_RECV_BYTES)
                    if not data:
                        raise FetcherError(f"{self.host}:{self.port} closed the connection")
                    self._decoder.feed(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
                FrameError) as exc:
            raise FetcherError(f"request to {self.host}:{self.port} failed: {exc!r}") from exc
        if frame.correlation_id != cid:
            raise FetcherError(f"response {frame.correlation_id} to request {cid}")
        error = frame.payload.get("error_code", 0)
        if error:
            raise FetcherError(f"{_error_code(error).name}: {frame.payload.get('error_message')}")
        return frame.payload, frame.attachments


@dataclass(eq=False)
class _Follow:
    """One partition in a fetcher: followed in `leader_epoch`."""

    part: Partition
    leader_epoch: int
    truncating: bool = True
    retry_at: float = 0.0                  # trio clock: backed off until then


class _Fetcher:
    """The fetcher of one source broker (see the module docstring)."""

    def __init__(self, manager: ReplicaFetcherManager, source_id: int) -> None:
        self._manager = manager
        self.source_id = source_id
        self.follows: dict[tuple[str, int], _Follow] = {}
        self.changed = trio.Event()
        self.rounds_total = 0

    def _wake(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def run(self) -> None:
        manager = self._manager
        settings = manager.settings
        backoff_s = settings.fetch_backoff_ms / 1000
        while True:
            if not self.follows:
                await self.changed.wait()
                continue
            address = manager.link.broker_address(self.source_id)
            if address is None:
                log.debug("broker %d has no address yet", self.source_id)
                await self._sleep(backoff_s)
                continue
            conn = FetcherConnection(address[0], address[1], source_host=manager.source_host,
                                     client_id=f"replica-fetcher-{manager.broker_id}",
                                     timeout_s=settings.socket_timeout_ms / 1000)
            try:
                await conn.open()
                while self.follows:
                    await self._round(conn)
            except FetcherError as exc:
                log.info("fetcher %d->%d: %s; retrying in %d ms", manager.broker_id,
                         self.source_id, exc, settings.fetch_backoff_ms)
                await self._sleep(backoff_s)
            except Exception:      # a bug here must not take the broker (and its leaders) down
                log.exception("fetcher %d->%d failed; retrying in %d ms", manager.broker_id,
                              self.source_id, settings.fetch_backoff_ms)
                await self._sleep(backoff_s)
            finally:
                await conn.aclose()

    async def _sleep(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self.changed.wait()

    async def _round(self, conn: FetcherConnection) -> None:
        """Truncate what needs it, then one long-poll fetch of the rest."""
        self.rounds_total += 1
        now = trio.current_time()
        due = [f for f in self.follows.values() if f.retry_at <= now]
        truncating = [f for f in due if f.truncating]
        if truncating:
            await self._truncate(conn, truncating)
        fetching = [f for f in due if not f.truncating and self._current(f)]
        if not fetching:
            soonest = min((f.retry_at for f in self.follows.values()), default=now)
            if not truncating:
                await self._sleep(max(soonest - now, 0.001))
            return
        await self._fetch(conn, fetching)

    def _current(self, follow: _Follow) -> bool:
        part = follow.part
        return (self.follows.get((part.topic, part.partition)) is follow and not part.closed
                and not part.is_leader and part.leader_epoch == follow.leader_epoch)

    def _back_off(self, follow: _Follow, code: ErrorCode) -> None:
        log.debug("fetcher %d->%d: %s-%d: %s", self._manager.broker_id, self.source_id,
                  logsafe(follow.part.topic), follow.part.partition, code.name)
        # Short: a new state (the usual cure) re-adds the partition at once anyway.
        delay_ms = min(self._manager.settings.fetch_backoff_ms, _PARTITION_BACKOFF_MS_MAX)
        follow.retry_at = trio.current_time() + delay_ms / 1000

    # -- truncation (OffsetForLeaderEpoch) -------------------------------------------------

    async def _truncate(self, conn: FetcherConnection, follows: list[_Follow]) -> None:
        asks = []
        for f in follows:
            latest = f.part.log.epoch_cache.latest_epoch
            if latest == UNDEFINED_EPOCH:
                await self._cut(f, min(f.part.high_watermark, f.part.log_end_offset), True)
            else:
                asks.append((f, latest))
        if not asks:
            return
        topics: dict[str, list[dict[str, int]]] = {}
        for f, latest in asks:
            topics.setdefault(f.part.topic, []).append(
                {"partition": f.part.partition, "current_leader_epoch": f.leader_epoch,
                 "leader_epoch": latest})
        payload = {"replica_id": self._manager.broker_id,
                   "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()]}
        response, _ = await conn.request(ApiKey.OFFSET_FOR_LEADER_EPOCH, payload)
        answers = {(t["topic"], p["partition"]): p for t in response["topics"] for p in t["partitions"]}
        for f, _latest in asks:
            answer = answers.get((f.part.topic, f.part.partition))
            if answer is None or not self._current(f):
                continue
            code = _error_code(answer["error_code"])
            if code != ErrorCode.NONE:
                self._back_off(f, code)
                continue
            part = f.part
            entries, leo = part.log.epoch_cache.entries, part.log_end_offset
            offset, done = truncation_offset(
                answer["leader_epoch"], answer["end_offset"],
                functools.partial(epoch_end_offset, entries, log_end_offset=leo),
                leo, part.high_watermark)
            await self._cut(f, offset, done)

    async def _cut(self, follow: _Follow, offset: int, done: bool) -> None:
        part = follow.part
        before = part.log_end_offset
        try:
            await part.truncate_to(offset)
        except PartitionError as exc:
            log.error("%s-%d: truncation to %d failed: %s", logsafe(part.topic), part.partition,
                      offset, exc)
            self._back_off(follow, exc.code)
            return
        if part.log_end_offset < before:
            log.info("%s-%d: truncated %d..%d (leader %d, epoch %d)", logsafe(part.topic),
                     part.partition, part.log_end_offset, before, self.source_id, follow.leader_epoch)
        follow.truncating = not done

    # -- fetching --------------------------------------------------------------------------

    async def _fetch(self, conn: FetcherConnection, follows: list[_Follow]) -> None:
        settings = self._manager.settings
        topics: dict[str, list[dict[str, Any]]] = {}
        asked = {}
        for f in follows:
            part = f.part
            asked[(part.topic, part.partition)] = (f, part.log_end_offset)
            latest = part.log.epoch_cache.latest_epoch
            topics.setdefault(part.topic, []).append(
                {"partition": part.partition, "fetch_offset": part.log_end_offset,
                 "partition_max_bytes": settings.fetch_max_bytes,
                 "current_leader_epoch": f.leader_epoch,
                 "last_fetched_epoch": latest if latest >= 0 else None})
        payload = {"replica_id": self._manager.broker_id, "max_wait_ms": settings.fetch_wait_max_ms,
                   "min_bytes": 1, "max_bytes": settings.fetch_response_max_bytes,
                   "isolation_level": 0,
                   "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()]}
        response, attachments = await conn.request(ApiKey.FETCH, payload)
        for t in response["topics"]:
            for p in t["partitions"]:
                entry = asked.get((t["topic"], p["partition"]))
                if entry is None:
                    continue
                f, offset = entry
                if not self._current(f) or f.part.log_end_offset != offset:
                    continue                        # role changed, or truncated meanwhile
                index = p["records"]
                records = attachments[index] if 0 <= index < len(attachments) else None
                self._apply(f, p, records)

    def _apply(self, follow: _Follow, p: dict[str, Any], records: Any) -> None:
        part = follow.part
        code = _error_code(p["error_code"])
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            if 0 <= part.log_end_offset < p["log_start_offset"]:
                follow.truncating = False
                self._manager.nursery_start(self._restart_at, follow, p["log_start_offset"])
            else:
                follow.truncating = True            # ahead of the leader: cut by epoch
            return
        if code != ErrorCode.NONE:
            self._back_off(follow, code)
            return
        diverging = p.get("diverging_end_offset")
        if diverging is not None and diverging >= 0:
            follow.truncating = True
            return
        if records:
            try:
                append_batches(part, records)
            except PartitionError as exc:
                if exc.code == ErrorCode.OFFSET_OUT_OF_RANGE:
                    follow.truncating = True
                else:
                    log.error("%s-%d: cannot append the leader's batches: %s", logsafe(part.topic),
                              part.partition, exc.message)
                    self._back_off(follow, exc.code)
                return
        part.update_high_watermark_as_follower(p["high_watermark"])

    async def _restart_at(self, follow: _Follow, offset: int) -> None:
        part = follow.part
        if not self._current(follow):
            return
        log.info("%s-%d: log end %d is below the leader's log start %d: restarting there",
                 logsafe(part.topic), part.partition, part.log_end_offset, offset)
        try:
            await part.truncate_fully_and_start_at(offset)
        except PartitionError as exc:
            self._back_off(follow, exc.code)


def append_batches(part: Partition, records: Any) -> int:
    """Append every whole batch of `records` that continues the log; returns how many.

    Raises:
        PartitionError: from the partition (OFFSET_OUT_OF_RANGE: not a continuation).
    """
    view = memoryview(records)
    total, pos, count = len(view), 0, 0
    while total - pos >= 12:
        try:
            size = batch_size_at(view, pos)
        except CorruptBatchError as exc:
            raise PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from exc
        if size > total - pos:
            break                                   # a partial batch at the end: fetch it again
        part.append_as_follower(view[pos:pos + size])
        pos += size
        count += 1
    return count


class ReplicaFetcherManager:
    """The fetchers of this broker, one per source broker.

    Args:
        broker_id: this broker (sent as replica_id).
        link: where the leaders listen.
        settings: replica.fetch.* settings.
        source_host: the address to connect from (this broker's listener host).
    """

    def __init__(self, broker_id: int, link: ClusterLink, settings: FetcherSettings,
                 source_host: str | None = None) -> None:
        self.broker_id = broker_id
        self.link = link
        self.settings = settings
        self.source_host = source_host
        self._fetchers: dict[int, _Fetcher] = {}
        self._where: dict[tuple[str, int], int] = {}      # partition -> source broker
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every fetcher (also those created later) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for fetcher in self._fetchers.values():
                nursery.start_soon(fetcher.run)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def nursery_start(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def follow(self, part: Partition) -> None:
        """Fetch `part` from its leader at its leader epoch, truncating first."""
        key = (part.topic, part.partition)
        self.unfollow(part)
        if part.leader_id < 0:
            return
        fetcher = self._fetchers.get(part.leader_id)
        if fetcher is None:
            fetcher = self._fetchers[part.leader_id] = _Fetcher(self, part.leader_id)
            if self._nursery is not None:
                self._nursery.start_soon(fetcher.run)
        fetcher.follows[key] = _Follow(part, part.leader_epoch)
        self._where[key] = part.leader_id
        fetcher._wake()

    def unfollow(self, part: Partition) -> None:
        key = (part.topic, part.partition)
        source = self._where.pop(key, None)
        if source is not None:
            fetcher = self._fetchers[source]
            fetcher.follows.pop(key, None)
            fetcher._wake()

    def following(self, topic: str, partition: int) -> int | None:
        """The broker `topic`-`partition` is fetched from, or None."""
        return self._where.get((topic, partition))

    def truncating(self, topic: str, partition: int) -> bool:
        source = self._where.get((topic, partition))
        if source is None:
            return False
        follow = self._fetchers[source].follows.get((topic, partition))
        return follow is not None and follow.truncating
