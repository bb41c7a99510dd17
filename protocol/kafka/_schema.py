"""Message schemas as data, and the one generic codec that walks them.

A schema is a tuple of `Field`s, written the way Kafka's message JSON files
state the facts: a name, a type, the versions the field exists in ("0+",
"1-3", "2") and the versions in which it may be null. Field names are the
snake_case forms of Kafka's. A type is a primitive name (`int8`, `int16`,
`int32`, `int64`, `bool`, `string`, `bytes`, `records`) or an `Array` of a
primitive or of a nested struct (a tuple of fields).

Theory of operation: `compile_plan(fields, version, flexible)` flattens a
schema for one version into a `Plan` once (at import, for every supported
version); `decode(plan, reader)` returns a plain dict keyed by field name,
with a field absent from that version set to its default, so handlers can
read every field of every version; `encode(plan, values, writer)` takes such
a mapping, uses only the fields of that version, and takes a missing key as
the field's default, so one response dict serves every version. In a
flexible version, strings, bytes and arrays use compact lengths and every
struct ends in a tagged-field section: decoding skips tagged fields (every
tagged field of the supported APIs is optional), encoding writes none.

Each plan knows the fewest bytes one item of each array can take, which is
what `Reader.array_count` checks a declared count against.

Error handling: `decode` raises only `KafkaProtocolError`; `encode` raises
`KafkaEncodeError` for a value that does not fit its type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._types import KafkaEncodeError, Reader, Writer

__all__ = ["Field", "Array", "Plan", "compile_plan", "decode", "encode", "parse_versions", "VERSION_MAX"]

VERSION_MAX = 0x7FFF

_PRIMITIVES = ("int8", "int16", "int32", "int64", "bool", "string", "bytes", "records")
_FIXED_BYTES = {"int8": 1, "bool": 1, "int16": 2, "int32": 4, "int64": 8}
_NO_DEFAULT: Any = object()


def parse_versions(spec: str | None) -> tuple[int, int] | None:
    """Kafka's version-range notation: "0+", "1-3", "2", or None/"none" for never."""
    if spec is None or spec == "none":
        return None
    if spec.endswith("+"):
        return int(spec[:-1]), VERSION_MAX
    if "-" in spec:
        low, high = spec.split("-")
        return int(low), int(high)
    return int(spec), int(spec)


@dataclass(frozen=True)
class Array:
    """An array of a primitive (by name) or of a struct (a tuple of fields)."""

    item: str | tuple[Field, ...]


@dataclass(frozen=True)
class Field:
    name: str
    type: str | Array
    versions: str = "0+"
    nullable: str | None = None
    default: Any = _NO_DEFAULT

    def __post_init__(self) -> None:
        assert isinstance(self.type, Array) or self.type in _PRIMITIVES, self.type


@dataclass(frozen=True, slots=True)
class Step:
    """One field of a plan. `kind` is a primitive name, "array" or "struct_array"."""

    name: str
    kind: str
    present: bool
    nullable: bool
    default: Any
    item_kind: str            # arrays: the item's primitive name, or "struct"
    item_plan: Plan | None    # struct arrays: the item's plan
    item_bytes_min: int


@dataclass(frozen=True, slots=True)
class Plan:
    """A schema flattened for one version; `bytes_min` is its smallest encoding."""

    steps: tuple[Step, ...]
    flexible: bool
    bytes_min: int


def _in(spec: str | None, version: int) -> bool:
    bounds = parse_versions(spec)
    return bounds is not None and bounds[0] <= version <= bounds[1]


def _default(field: Field, nullable_ever: bool) -> Any:
    if field.default is not _NO_DEFAULT:
        return field.default
    if isinstance(field.type, Array):
        return None if nullable_ever else ()
    if field.type in ("string",):
        return None if nullable_ever else ""
    if field.type in ("bytes", "records"):
        return None if nullable_ever else b""
    if field.type == "bool":
        return False
    return 0


def _primitive_bytes_min(kind: str, flexible: bool) -> int:
    if kind in _FIXED_BYTES:
        return _FIXED_BYTES[kind]
    if flexible:
        return 1
    return 2 if kind == "string" else 4


def compile_plan(fields: tuple[Field, ...], version: int, flexible: bool) -> Plan:
    steps = []
    bytes_min = 1 if flexible else 0
    for f in fields:
        present = _in(f.versions, version)
        nullable = present and _in(f.nullable, version)
        default = _default(f, f.nullable is not None)
        if isinstance(f.type, Array):
            if isinstance(f.type.item, str):
                kind, item_kind, item_plan = "array", f.type.item, None
                item_min = _primitive_bytes_min(f.type.item, flexible)
            else:
                kind, item_kind = "struct_array", "struct"
                item_plan = compile_plan(f.type.item, version, flexible)
                item_min = item_plan.bytes_min
            own_min = 1 if flexible else 4
        else:
            kind, item_kind, item_plan, item_min = f.type, "", None, 0
            own_min = _primitive_bytes_min(f.type, flexible)
        if present:
            bytes_min += own_min
        steps.append(Step(f.name, kind, present, nullable, default, item_kind, item_plan, max(1, item_min)))
    return Plan(tuple(steps), flexible, bytes_min)


def _read_primitive(r: Reader, kind: str, nullable: bool, compact: bool) -> Any:
    if kind == "int32":
        return r.int32()
    if kind == "string":
        return r.string(nullable, compact)
    if kind == "int64":
        return r.int64()
    if kind == "int16":
        return r.int16()
    if kind == "int8":
        return r.int8()
    if kind == "bool":
        return r.boolean()
    # bytes and records: a view into the request (no copy)
    return r.bytes_(nullable, compact)


def decode(plan: Plan, r: Reader) -> dict[str, Any]:
    """Decode one struct; absent fields get their defaults. Raises KafkaProtocolError."""
    out: dict[str, Any] = {}
    compact = plan.flexible
    for step in plan.steps:
        if not step.present:
            d = step.default
            out[step.name] = list(d) if isinstance(d, tuple) else d
        elif step.kind == "struct_array":
            count = r.array_count(step.item_bytes_min, step.nullable, compact)
            if count is None:
                out[step.name] = None
            else:
                item_plan = step.item_plan
                assert item_plan is not None
                out[step.name] = [decode(item_plan, r) for _ in range(count)]
        elif step.kind == "array":
            count = r.array_count(step.item_bytes_min, step.nullable, compact)
            if count is None:
                out[step.name] = None
            else:
                item = step.item_kind
                out[step.name] = [_read_primitive(r, item, False, compact) for _ in range(count)]
        else:
            out[step.name] = _read_primitive(r, step.kind, step.nullable, compact)
    if compact:
        r.skip_tagged_fields()
    return out


def _write_primitive(w: Writer, kind: str, value: Any, nullable: bool, compact: bool) -> None:
    if kind == "int32":
        w.int32(value)
    elif kind == "string":
        w.string(value, nullable, compact)
    elif kind == "int64":
        w.int64(value)
    elif kind == "int16":
        w.int16(value)
    elif kind == "int8":
        w.int8(value)
    elif kind == "bool":
        w.boolean(value)
    elif kind == "bytes":
        w.bytes_(value, nullable, compact)
    else:
        assert kind == "records", kind
        if value is None and not nullable:
            raise KafkaEncodeError("null records where the field is not nullable")
        w.records(value, compact)


def encode(plan: Plan, values: Mapping[str, Any], w: Writer) -> None:
    """Encode one struct from `values` (missing keys take their defaults)."""
    compact = plan.flexible
    for step in plan.steps:
        if not step.present:
            continue
        value = values.get(step.name, step.default)
        if step.kind == "struct_array":
            w.array_count(None if value is None else len(value), step.nullable, compact)
            if value is not None:
                item_plan = step.item_plan
                assert item_plan is not None
                for item in value:
                    encode(item_plan, item, w)
        elif step.kind == "array":
            w.array_count(None if value is None else len(value), step.nullable, compact)
            if value is not None:
                for item in value:
                    _write_primitive(w, step.item_kind, item, False, compact)
        else:
            _write_primitive(w, step.kind, value, step.nullable, compact)
    if compact:
        w.empty_tagged_fields()
