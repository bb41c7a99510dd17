"""A consumer-group member as a subprocess, for the process tests.

Usage: python tests/group_consumer_proc.py BOOTSTRAP GROUP TOPIC OUT_FILE [options]

Writes one JSON object per line to OUT_FILE (flushed at once), each with
`t` (time.time()) and `ev`:
  ready                                     the consumer started
  assign / revoke   parts=[[topic, p], ...] on_assign / on_revoke ran
  recs              p, first, last          a poll returned offsets first..last of p
  commit            offsets={p: offset}     a commit succeeded
  log               level, msg              a warning from the group membership
  closed                                    clean exit after SIGTERM
Nothing else is printed; SIGTERM closes the consumer (commit + leave).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time

import trio


class _Out:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", buffering=1)

    def __call__(self, ev: str, **fields) -> None:
        fields.update(t=time.time(), ev=ev)
        self.f.write(json.dumps(fields) + "\n")
        self.f.flush()


class _LogToOut(logging.Handler):
    def __init__(self, out: _Out) -> None:
        super().__init__(logging.DEBUG)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("committed "):
            return
        if record.levelno >= logging.WARNING:
            self.out("log", level=record.levelname, msg=msg)


async def main(args) -> None:
    from minilog.client.consumer import AsyncConsumer
    import minilog.client._membership as membership

    out = _Out(args.out)
    logging.getLogger("minilog.consumer.group").addHandler(_LogToOut(out))
    logging.getLogger("minilog.consumer.group").setLevel(logging.INFO)

    original_commit = membership.GroupMembership._commit

    async def logged_commit(self, offsets):
        await original_commit(self, offsets)
        if offsets:
            out("commit", offsets={f"{t}:{p}": o for (t, p), o in offsets.items()})

    membership.GroupMembership._commit = logged_commit

    consumer = AsyncConsumer(
        args.bootstrap, group_id=args.group, auto_offset_reset=args.reset,
        session_timeout_ms=args.session_ms, auto_commit_interval_ms=args.auto_commit_ms,
        max_poll_interval_ms=args.max_poll_interval_ms,
        partition_assignment_strategy=args.assignor, client_id=args.client_id)
    stop = trio.Event()

    async def signals():
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as rx:
            async for _ in rx:
                stop.set()
                return

    async with consumer, trio.open_nursery() as nursery:
        nursery.start_soon(signals)
        await consumer.subscribe(
            [args.topic],
            on_assign=lambda parts: out("assign", parts=[list(tp) for tp in parts]),
            on_revoke=lambda parts: out("revoke", parts=[list(tp) for tp in parts]))
        out("ready")
        while not stop.is_set():
            records = await consumer.poll(timeout_ms=100)
            ranges: dict[int, list[int]] = {}
            for r in records:
                rng = ranges.get(r.partition)
                if rng is None:
                    ranges[r.partition] = [r.offset, r.offset]
                else:
                    rng[1] = r.offset
            for p, (first, last) in sorted(ranges.items()):
                out("recs", p=p, first=first, last=last)
            if args.process_ms and records:
                await trio.sleep(args.process_ms / 1000)
        nursery.cancel_scope.cancel()
    out("closed")   # the consumer left its group when its block ended


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("group")
    ap.add_argument("topic")
    ap.add_argument("out")
    ap.add_argument("--session-ms", type=int, default=1500)
    ap.add_argument("--auto-commit-ms", type=int, default=200)
    ap.add_argument("--max-poll-interval-ms", type=int, default=30000)
    ap.add_argument("--process-ms", type=int, default=0)
    ap.add_argument("--reset", default="earliest")
    ap.add_argument("--assignor", default="sticky")
    ap.add_argument("--client-id", default="proc")
    try:
        trio.run(main, ap.parse_args())
    except trio.Cancelled:
        pass
    sys.exit(0)
