"""Native payload maps <-> request-model objects, compiled once per class.

Rules:
- A request object is built from a msgpack map by field name, walking the
  dataclass's type hints and the API's schema (`_schemas.py`) together. A
  field the schema marks required must be present; `OPT` fields read as
  None when absent; a field the native schema does not have at all (a
  field only another codec fills) takes its dataclass default.
- Leaves are type-checked as `check` does (an int field accepts bool, as
  msgpack peers send them). Any mismatch raises `Mismatch`, with no path:
  the caller then runs the schema's `check`, which names the bad field.
  The two must agree (tests/test_frames.py checks both on every API).
- A `memoryview`-typed field is records: on the wire an attachment index
  (-1 for none). Decoding looks the attachment up (an index naming no
  attachment reads as None) and takes it: each attachment is used at most
  once, a second reference raises `AttachmentReused` (the decoder works on
  a copy of the attachment list). Encoding appends it and writes its index.
- Response objects are encoded field by field, every dataclass field
  included (peers ignore fields they do not know).

Theory of operation: for each dataclass, `_compile_decoder` and
`_compile_encoder` generate one small Python function (source built here,
then `exec`), so a produce request is converted with one call per nested
object, leaves checked inline, and no per-field dispatch on the hot path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any
from collections.abc import Callable

from ._schemas import OPT

__all__ = ["AttachmentReused", "Mismatch", "decoder_for", "encoder_for"]

Attachments = list[Any]
Decoder = Callable[[Any, Attachments], Any]
Encoder = Callable[[Any, Attachments], Any]


class Mismatch(Exception):
    """A payload does not fit the model; run the schema's `check` to say where."""


def _bad() -> typing.NoReturn:
    raise Mismatch


def _int(x: Any, att: Attachments) -> Any:
    if type(x) is int or type(x) is bool:
        return x
    _bad()


def _str(x: Any, att: Attachments) -> Any:
    if isinstance(x, str):
        return x
    _bad()


def _bool(x: Any, att: Attachments) -> Any:
    if isinstance(x, bool):
        return x
    _bad()


def _float(x: Any, att: Attachments) -> Any:
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return x
    _bad()


def _map(x: Any, att: Attachments) -> Any:
    if isinstance(x, dict):
        return x
    _bad()


def _any(x: Any, att: Attachments) -> Any:
    return x


class AttachmentReused(Exception):
    """A payload names one attachment twice (a 1 MB batch named by 300 partition entries
    would be written 300 times: issue 8, item 4). `args[0]` is the index."""


_TAKEN = object()       # stands in the decoder's copy of the attachments for one taken


def _records_in(x: Any, att: Attachments) -> Any:
    if type(x) is not int:
        _bad()
    if not 0 <= x < len(att):
        return None
    value = att[x]
    if value is _TAKEN:
        raise AttachmentReused(x)
    att[x] = _TAKEN
    return value


def _records_out(x: Any, att: Attachments) -> int:
    if x is None:
        return -1
    att.append(x)
    return len(att) - 1


_LEAVES: dict[Any, Decoder] = {int: _int, str: _str, bool: _bool, float: _float, Any: _any}


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); anything else -> (hint, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) != len(typing.get_args(hint))
        if memoryview in args:
            return memoryview, optional
        assert len(args) == 1, hint
        return args[0], optional
    return hint, False


def _decoder(hint: Any, spec: Any) -> Decoder:
    """The decoder of one value of type `hint` whose native schema is `spec`."""
    hint, optional = _split_optional(hint)
    if isinstance(spec, OPT):
        spec = spec.spec
    if hint is memoryview:
        return _records_in
    if dataclasses.is_dataclass(hint):
        inner = _compile_decoder(hint, spec if isinstance(spec, dict) else {})
    elif typing.get_origin(hint) is list:
        (item_hint,) = typing.get_args(hint)
        item = _decoder(item_hint, spec[0] if isinstance(spec, list) else None)

        def inner(x: Any, att: Attachments) -> Any:
            if type(x) is not list:
                _bad()
            return [item(v, att) for v in x]
    elif typing.get_origin(hint) is dict or hint is dict:
        inner = _map
    else:
        inner = _LEAVES[hint]
    if not optional:
        return inner
    return lambda x, att: None if x is None else inner(x, att)


# Inline type checks of leaves, as `check` does them (an int field accepts bool).
_LEAF_CHECKS: dict[Any, str] = {
    int: "(type({0}) is int or type({0}) is bool)",
    str: "isinstance({0}, str)",
    bool: "isinstance({0}, bool)",
    float: "((type({0}) is float or type({0}) is int))",
}


def _leaf_check(hint: Any, var: str) -> str | None:
    """An inline check of a leaf field (None: no check needed), or "" when not a leaf."""
    base, optional = _split_optional(hint)
    if base is Any:
        return None
    if base is dict or typing.get_origin(base) is dict:
        test = f"isinstance({var}, dict)"
    elif base in _LEAF_CHECKS:
        test = _LEAF_CHECKS[base].format(var)
    else:
        return ""
    return f"({var} is None or {test})" if optional else test


def _compile_decoder(cls: Any, spec: dict[str, Any]) -> Decoder:
    """Generate `decode(v, att)`: fetch every field, convert the nested ones, check the
    leaves in one `if`, build the object. Leaves cost no call."""
    hints = typing.get_type_hints(cls)
    env: dict[str, Any] = {"_cls": cls, "_bad": _bad, "_dict": dict}
    lines = ["def decode(v, att):", "    if type(v) is not _dict:", "        _bad()"]
    checks = []
    for i, f in enumerate(dataclasses.fields(cls)):
        sub = spec.get(f.name)
        name = repr(f.name)
        if f.name in spec and not isinstance(sub, OPT):
            fetch = f"v[{name}]"                                    # required
        elif f.name in spec or _split_optional(hints[f.name])[1]:
            fetch = f"v.get({name})"                                # optional: absent reads None
        else:                                                       # not on this wire: default
            env[f"_f{i}"] = (f.default_factory if f.default_factory is not dataclasses.MISSING
                             else (lambda d=f.default: d))
            fetch = f"(v[{name}] if {name} in v else _f{i}())"
        check = _leaf_check(hints[f.name], f"a{i}")
        if check == "":
            env[f"_d{i}"] = _decoder(hints[f.name], sub)
            lines.append(f"    a{i} = _d{i}({fetch}, att)")
        else:
            lines.append(f"    a{i} = {fetch}")
            if check is not None:
                checks.append(check)
    if checks:
        lines.append(f"    if not ({' and '.join(checks)}):")
        lines.append("        _bad()")
    fields = ", ".join(f"a{i}" for i in range(len(dataclasses.fields(cls))))
    lines.append(f"    return _cls({fields})")
    exec("\n".join(lines) + "\n", env)
    decode: Decoder = env["decode"]
    return decode


def _encoder(hint: Any) -> Encoder | None:
    """The encoder of one value of type `hint`; None when the value is sent as it is."""
    hint, optional = _split_optional(hint)
    if hint is memoryview:
        return _records_out
    inner: Encoder
    if dataclasses.is_dataclass(hint):
        inner = _compile_encoder(hint)
    elif typing.get_origin(hint) is list:
        (item_hint,) = typing.get_args(hint)
        item = _encoder(item_hint)
        if item is None:
            return None
        inner = lambda x, att: [item(v, att) for v in x]
    else:
        return None
    if not optional:
        return inner
    return lambda x, att: None if x is None else inner(x, att)


def _compile_encoder(cls: Any) -> Encoder:
    hints = typing.get_type_hints(cls)
    env: dict[str, Any] = {}
    items = []
    for i, f in enumerate(dataclasses.fields(cls)):
        enc = _encoder(hints[f.name])
        if enc is None:
            items.append(f"{f.name!r}: o.{f.name}")
        else:
            env[f"_e{i}"] = enc
            items.append(f"{f.name!r}: _e{i}(o.{f.name}, att)")
    source = f"def encode(o, att):\n    return {{{', '.join(items)}}}\n"
    exec(source, env)
    encode: Encoder = env["encode"]
    return encode


def decoder_for(cls: Any, spec: dict[str, Any]) -> Callable[[dict[str, Any], Attachments], Any]:
    """A function (payload map, attachments) -> `cls` instance; raises `Mismatch`,
    `KeyError` when a required field is absent, or `AttachmentReused`. It takes each
    attachment out of the list it is given: pass a copy."""
    return _compile_decoder(cls, spec)


def encoder_for(cls: Any) -> Callable[[Any, Attachments], dict[str, Any]]:
    """A function (`cls` instance, attachments to append to) -> payload map."""
    return _compile_encoder(cls)
