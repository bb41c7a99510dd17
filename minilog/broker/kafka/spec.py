"""The `listeners` setting: Kafka's `NAME://HOST:PORT,...` form, with minilog's listener kinds.

`listeners = "native://127.0.0.1:9092,kafka://0.0.0.0:9093"` runs minilog's
msgpack protocol on 9092 and Kafka's binary protocol on 9093. The native
listener comes first (its port is the broker's `port`; `minilog serve`
prints it first); an empty HOST means every interface, as in Kafka. A leaf
module: the broker's config validates with it without importing the
listeners.
"""

from __future__ import annotations

__all__ = ["LISTENER_KINDS", "parse_listeners", "listeners_problem"]

LISTENER_KINDS = ("native", "kafka")


def parse_listeners(spec: str) -> list[tuple[str, str, int]]:
    """[(kind, host, port)], native first. Raises ValueError naming the bad entry."""
    out: list[tuple[str, str, int]] = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        kind, sep, address = entry.partition("://")
        host, colon, port_text = address.rpartition(":")
        kind = kind.lower()
        if not sep or not colon or kind not in LISTENER_KINDS:
            raise ValueError(f"{entry!r} is not KIND://HOST:PORT with KIND one of {', '.join(LISTENER_KINDS)}")
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"{entry!r}: port {port_text!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise ValueError(f"{entry!r}: port {port} is not in [0, 65535]")
        if any(k == kind for k, _, _ in out):
            raise ValueError(f"{entry!r}: a second {kind} listener (one of each kind)")
        out.append((kind, host.strip("[]") or "0.0.0.0", port))
    if out and out[0][0] != "native":
        out.sort(key=lambda item: item[0] != "native")
    if out and out[0][0] != "native":
        raise ValueError("listeners needs a native listener (minilog's own clients and CLI use it)")
    return out


def listeners_problem(spec: str) -> str | None:
    """A config validator: None when `spec` parses, else the reason."""
    try:
        parse_listeners(spec)
    except ValueError as exc:
        return str(exc)
    return None
