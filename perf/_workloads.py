"""Record shapes the perf tools produce: `uniform`, `keyed` and `events`.

Theory of operation. A workload is a deterministic list of (key, value)
records made from a seed before the measured phase starts, so generating
them costs nothing inside the timed window and two runs with the same seed
send the same bytes. A run of N records cycles through a pool of at most
`POOL_RECORDS_MAX` distinct records (`records[i % len(pool)]`), which
bounds the tool's memory for runs of millions of records.

- `uniform`: no key, one `--record-size`-byte random value reused for every
  record (the shape the headline figures were measured with).
- `keyed`: the same values, with keys of varying length (4 to 36 bytes) drawn
  from `KEYS_DISTINCT` distinct keys, so keys repeat as user or device ids do.
- `events`: JSON events of 250-450 bytes in the shape of the article's
  OrderPlaced event (event id, type, aggregate id, version, timestamp, and a
  payload with order id, customer id, items, amounts and a free-text note),
  keyed by aggregate id (`order_<n>`). Each aggregate goes through
  OrderPlaced, OrderConfirmed, OrderShipped, so ids repeat like an event
  store's streams. `--record-size` is ignored.

`describe(workload)` is the line the tools print beside their figures.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

WORKLOADS = ("uniform", "keyed", "events")
POOL_RECORDS_MAX = 65536     # distinct records generated per run (cycled)
KEYS_DISTINCT = 10_000       # keyed: distinct keys in the pool
AGGREGATES_DISTINCT = 20_000  # events: distinct order ids in the pool
EVENT_BYTES_MIN = 250        # events: JSON size range, bytes
EVENT_BYTES_MAX = 450
_EVENT_TYPES = ("OrderPlaced", "OrderConfirmed", "OrderShipped")
_EPOCH_MS = 1_778_855_400_000   # 2026-05-15T14:30:00Z, the article's example time


@dataclass(frozen=True)
class Records:
    """A pool of records to cycle through. `keys` is None for keyless workloads."""

    workload: str
    keys: list[bytes] | None
    values: list[bytes]

    def __len__(self) -> int:
        return len(self.values)

    def value_bytes(self, count: int) -> int:
        """Value bytes in the first `count` records of the cycled pool."""
        return _cycled_sum([len(v) for v in self.values], count)

    def key_bytes(self, count: int) -> int:
        """Key bytes in the first `count` records of the cycled pool."""
        if self.keys is None:
            return 0
        return _cycled_sum([len(k) for k in self.keys], count)


def _cycled_sum(sizes: list[int], count: int) -> int:
    whole, rest = divmod(count, len(sizes))
    return whole * sum(sizes) + sum(sizes[:rest])


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    """`--workload` and `--seed`, shared by every tool."""
    parser.add_argument("--workload", choices=WORKLOADS, default="uniform",
                        help="record shape: uniform (keyless, --record-size values), keyed "
                             "(same values, keys of 4-36 bytes), events (JSON OrderPlaced-like "
                             "events of 250-450 bytes keyed by order id); default uniform")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated records")


def describe(args: argparse.Namespace) -> dict:
    """What the output says about the records sent."""
    out: dict = {"name": args.workload, "seed": args.seed}
    if args.workload == "events":
        out["value_bytes"] = f"{EVENT_BYTES_MIN}-{EVENT_BYTES_MAX}"
        out["keys"] = f"order ids, {AGGREGATES_DISTINCT} distinct"
    else:
        out["value_bytes"] = args.record_size
        if args.workload == "keyed":
            out["keys"] = f"4-36 bytes, {KEYS_DISTINCT} distinct"
    return out


def generate(workload: str, count: int, *, record_size: int = 100, seed: int = 0) -> Records:
    """The pool of records for `count` records of `workload` (deterministic in `seed`)."""
    rng = random.Random(seed)
    pool = max(1, min(count, POOL_RECORDS_MAX))
    value = rng.randbytes(record_size)
    if workload == "uniform":
        return Records(workload, None, [value] * pool)
    if workload == "keyed":
        distinct = [_varying_key(rng, i) for i in range(min(pool, KEYS_DISTINCT))]
        keys = [distinct[rng.randrange(len(distinct))] for _ in range(pool)]
        return Records(workload, keys, [value] * pool)
    if workload == "events":
        return _events(rng, pool)
    raise ValueError(f"unknown workload {workload!r}")


def _varying_key(rng: random.Random, i: int) -> bytes:
    """A key of 4 to 36 bytes: a short prefix, the id, and padding of random length."""
    prefix = ("u", "user-", "device:", "tenant/acme/")[i % 4]
    key = f"{prefix}{i}".encode()
    return (key + b"-" * 36)[: rng.randrange(max(4, len(key)), 37)]


def _events(rng: random.Random, pool: int) -> Records:
    """JSON events keyed by aggregate id; each aggregate's events come in order."""
    aggregates = min(AGGREGATES_DISTINCT, max(1, pool // 2))
    versions = [0] * aggregates
    order_ids = [f"order_{rng.randrange(10 ** rng.randrange(0, 5)) * aggregates + a}"
                 for a in range(aggregates)]   # distinct, of varying length
    keys: list[bytes] = []
    values: list[bytes] = []
    ts_ms = _EPOCH_MS
    for _ in range(pool):
        a = rng.randrange(aggregates)
        version = versions[a] = versions[a] + 1
        ts_ms += rng.randrange(0, 40)
        order_id = order_ids[a]
        event = _event(rng, order_id, version, ts_ms)
        keys.append(order_id.encode())
        values.append(event)
    return Records("events", keys, values)


_ITEM = '{{"productId":"prod_{:03d}","quantity":{},"unitPrice":{:.2f}}}'
EVENT_ID_SLICE = slice(16, 32)   # events: the 16 hex digits of "eventId" in every value
_EVENT = ('{{"eventId":"evt_{:016x}","eventType":"{}","aggregateId":"{}","version":{},"timestamp":"{}",'
          '"payload":{{"orderId":"{}","customerId":"cust_{}","items":[{}],'
          '"totalAmount":{:.2f},"currency":"USD"}}}}')


def _event(rng: random.Random, order_id: str, version: int, ts_ms: int) -> bytes:
    """One event as compact JSON, padded (the free-text note) to a drawn size."""
    target = rng.randrange(EVENT_BYTES_MIN, EVENT_BYTES_MAX + 1)
    items = []     # (JSON text, amount)
    for _ in range(rng.randrange(1, 5)):
        qty = rng.randrange(1, 5)
        price = rng.randrange(199, 19999) / 100
        items.append((_ITEM.format(rng.randrange(1000), qty, price), qty * price))
    event_type = _EVENT_TYPES[(version - 1) % len(_EVENT_TYPES)]
    customer = rng.randrange(10**5)
    event_id = rng.getrandbits(64)
    stamp = _iso(ts_ms)
    while True:
        data = _EVENT.format(event_id, event_type, order_id, version, stamp, order_id, customer,
                             ",".join(i[0] for i in items), sum(i[1] for i in items))
        if len(data) <= target or len(items) == 1:
            break
        items.pop()
    short = target - len(data)
    if short >= 10:   # a free-text note in the payload
        data = data[:-2] + ',"note":"' + "x" * (short - 10) + '"' + data[-2:]
    elif short > 0:
        data = data[:-2] + " " * short + data[-2:]   # JSON whitespace
    out = data.encode()
    assert EVENT_BYTES_MIN <= len(out) <= EVENT_BYTES_MAX, len(out)
    return out


def _iso(ms: int) -> str:
    """UTC ISO-8601 with milliseconds, as the article's timestamps."""
    seconds, milli = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}Z"
