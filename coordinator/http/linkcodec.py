"""The wire format of the coordinator link (:mod:`coordinator.http.link`): tagged JSON plus
raw buffers, never pickle.

The link is private to foldnet's own processes, but a codec that can only build data is a
wall that does not depend on that: were a front-end ever made to write bytes of an
attacker's choosing, decoding them could still not import a module, call a function or build
anything but the values below. (Pickle's ``find_class`` allow-lists stop at "which globals",
and a single forgotten one is a way in; here there is nothing to forget.)

A frame is ``<u32 header length> <u32 buffer count> <u64 length of each buffer> header
buffers...``; the header is the value in JSON. Values are JSON scalars (NaN and infinities
included, as Python's ``json`` writes them), lists, dicts with string keys not starting with
``$``, and one-key objects tagged with ``$``:

=========  =====================================================================
``$t``      tuple of values
``$d``      dict with other keys: ``[[key, value], ...]``
``$s``      set / ``$fs`` frozenset of values
``$x``      bytes of up to 64, as hex
``$b``      longer bytes: buffer index
``$a``      numpy array ``[buffer index, dtype, shape]`` (bool, int, uint, float, complex)
``$n``      numpy scalar ``[dtype, value]``
``$p``      ``pathlib.Path`` as a string
``$c``      dataclass ``["module:QualName", {field: value}]``, built with its constructor
``$e``      enum member ``["module:QualName", value]``
=========  =====================================================================

Only dataclasses and enums defined in foldnet's own packages (:data:`PACKAGES`) are built,
and a dataclass is built through its constructor, so whatever its ``__post_init__`` checks
holds for what arrives. Anything else is :class:`LinkCodecError`, on either side.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import math
import pathlib
import struct
import sys
import threading
from typing import Any

import numpy as np

from foldnet.errors import Internal

#: The packages whose dataclasses and enums may cross the link.
PACKAGES = ("coordinator", "foldnet", "ledger", "sims", "worker")

#: numpy kinds an array or scalar may have: numbers and booleans only (no objects, no
#: structured or string arrays).
_ARRAY_KINDS = frozenset("biufc")

#: Bytes up to this long (digests, keys, signatures) travel inline as hex, not as a buffer.
_INLINE = 64

_HEADER = struct.Struct("<II")  # header length, buffer count; then each buffer's length
_SCALARS = (str, int, float, bool, type(None))


class LinkCodecError(Internal):
    """A value the link cannot carry, or bytes that are not a message of this version."""

    code = "link_codec"


# -- encoding ----------------------------------------------------------------------------------


def encode(value: object) -> bytes:
    """``value`` as one frame body (without the link's length prefix)."""
    buffers: list[bytes | memoryview] = []
    try:
        doc = _plain(value, buffers)
        header = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    except RecursionError as e:
        raise LinkCodecError("a value nested too deeply for the coordinator link") from e
    lengths = [len(b) if isinstance(b, bytes) else b.nbytes for b in buffers]
    prefix = _HEADER.pack(len(header), len(buffers)) + struct.pack(f"<{len(buffers)}Q", *lengths)
    return b"".join([prefix, header, *buffers])


#: Wire name and field names of each dataclass met so far (``dataclasses.fields`` is slow).
_FIELDS: dict[type, tuple[str, tuple[str, ...]]] = {}


def _plain(value: Any, buffers: list[bytes | memoryview]) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return [_plain(v, buffers) for v in value]
    if kind is tuple:
        return {"$t": [_plain(v, buffers) for v in value]}
    if kind is dict:
        if all(type(k) is str and not k.startswith("$") for k in value):
            return {k: _plain(v, buffers) for k, v in value.items()}
        return {"$d": [[_plain(k, buffers), _plain(v, buffers)] for k, v in value.items()]}
    if kind is bytes:
        if len(value) <= _INLINE:
            return {"$x": value.hex()}
        buffers.append(value)
        return {"$b": len(buffers) - 1}
    if kind is np.ndarray:
        if value.dtype.kind not in _ARRAY_KINDS:
            raise LinkCodecError(
                f"an array of dtype {value.dtype} on the coordinator link; expected numbers"
            )
        arr = value if value.flags.c_contiguous else value.copy(order="C")
        buffers.append(arr.data.cast("B") if arr.size else b"")
        return {"$a": [len(buffers) - 1, arr.dtype.str, list(arr.shape)]}
    if isinstance(value, np.generic) and value.dtype.kind in _ARRAY_KINDS:
        item = value.item()
        if isinstance(item, complex):
            item = [item.real, item.imag]
        return {"$n": [value.dtype.str, item]}
    if kind is set or kind is frozenset:
        return {"$s" if kind is set else "$fs": [_plain(v, buffers) for v in value]}
    if isinstance(value, pathlib.PurePath):
        return {"$p": str(value)}
    if isinstance(value, enum.Enum):
        return {"$e": [_name_of(kind), _plain(value.value, buffers)]}
    known = _FIELDS.get(kind)
    if known is None:
        if not dataclasses.is_dataclass(value) or isinstance(value, type):
            raise LinkCodecError(
                f"a {kind.__module__}.{kind.__qualname__} on the coordinator link; expected "
                "plain data or a dataclass of foldnet's"
            )
        _check_class(kind)
        known = _FIELDS[kind] = (_name_of(kind), tuple(f.name for f in dataclasses.fields(value)))
    name, names = known
    return {"$c": [name, {n: _plain(getattr(value, n), buffers) for n in names}]}


def _name_of(kind: type) -> str:
    if kind.__module__.partition(".")[0] not in PACKAGES:
        raise LinkCodecError(
            f"a {kind.__module__}.{kind.__qualname__} on the coordinator link; only foldnet's "
            f"own dataclasses and enums cross it ({', '.join(PACKAGES)})"
        )
    return f"{kind.__module__}:{kind.__qualname__}"


# -- decoding ----------------------------------------------------------------------------------


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The value of one frame body; :class:`LinkCodecError` for anything else."""
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size:
        raise LinkCodecError(f"a message of {len(view)} bytes; expected a header")
    n, count = _HEADER.unpack_from(view)
    at = _HEADER.size + 8 * count
    if at + n > len(view):
        raise LinkCodecError(f"a header of {n} bytes and {count} buffers in {len(view)} bytes")
    lengths = struct.unpack_from(f"<{count}Q", view, _HEADER.size)
    at += n
    if at + sum(lengths) != len(view):
        raise LinkCodecError(f"a message of {len(view)} bytes; its header promises more or less")
    buffers = []
    for k in lengths:
        buffers.append(view[at : at + k])
        at += k
    parser, builder = _parser()
    builder.buffers = buffers
    try:
        text = str(view[_HEADER.size + 8 * count : _HEADER.size + 8 * count + n], "utf-8")
        return parser.decode(text)
    except LinkCodecError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as e:
        raise LinkCodecError(f"a message that does not decode: {e}") from e
    except Exception as e:  # a dataclass's own check refused the fields
        raise LinkCodecError(f"a message whose values were refused: {e}") from e
    finally:
        builder.buffers = []


_local = threading.local()


def _parser() -> tuple[json.JSONDecoder, _Builder]:
    """This thread's parser (making one per message costs more than a small message)."""
    pair: tuple[json.JSONDecoder, _Builder] | None = getattr(_local, "pair", None)
    if pair is None:
        builder = _Builder()
        pair = _local.pair = (json.JSONDecoder(object_hook=builder.hook), builder)
    return pair


class _Builder:
    """Builds tagged values as the JSON parser closes each object (children first)."""

    __slots__ = ("buffers",)

    def __init__(self) -> None:
        self.buffers: list[memoryview] = []

    def hook(self, doc: dict[str, Any]) -> Any:
        if len(doc) != 1:
            return doc
        ((tag, body),) = doc.items()
        if tag[:1] != "$":
            return doc
        if tag == "$t":
            return tuple(body)
        if tag == "$x":
            return bytes.fromhex(body)
        if tag == "$b":
            return bytes(self.buffers[_index(body, self.buffers)])
        if tag == "$c":
            name, fields = body
            return _dataclass(name)(**fields)
        if tag == "$a":
            index, dtype, shape = body
            dt = _dtype(dtype)
            shape = tuple(shape)
            if not all(type(s) is int and s >= 0 for s in shape):
                raise LinkCodecError(f"an array of shape {shape}")
            buf = self.buffers[_index(index, self.buffers)]
            if len(buf) != math.prod(shape) * dt.itemsize:
                raise LinkCodecError(
                    f"an array of shape {shape} and dtype {dt} in {len(buf)} bytes"
                )
            return np.frombuffer(bytearray(buf), dtype=dt).reshape(shape)
        if tag == "$d":
            return {k: v for k, v in body}
        if tag == "$n":
            dtype, item = body
            dt = _dtype(dtype)
            return dt.type(complex(*item) if dt.kind == "c" else item)
        if tag == "$s":
            return set(body)
        if tag == "$fs":
            return frozenset(body)
        if tag == "$p":
            if type(body) is not str:
                raise LinkCodecError("a path that is not a string")
            return pathlib.Path(body)
        if tag == "$e":
            name, value = body
            return _resolve(name, enum.Enum)(value)
        raise LinkCodecError(f"an unknown tag {tag[:20]!r}")


def _index(index: Any, buffers: list[memoryview]) -> int:
    if type(index) is not int or not 0 <= index < len(buffers):
        raise LinkCodecError(f"a buffer index {str(index)[:20]}; the message has {len(buffers)}")
    return index


def _dtype(text: Any) -> np.dtype[Any]:
    if type(text) is not str or len(text) > 8:
        raise LinkCodecError(f"a dtype {str(text)[:20]!r}")
    dt = np.dtype(text)
    if dt.kind not in _ARRAY_KINDS:
        raise LinkCodecError(f"a dtype {dt}; expected numbers")
    return dt


#: Classes resolved so far, by their wire name.
_CLASSES: dict[str, type] = {}


def _dataclass(name: Any) -> type:
    return _resolve(name, None)


def _resolve(name: Any, base: type | None) -> type:
    cls = _CLASSES.get(name) if type(name) is str else None
    if cls is None:
        if type(name) is not str or name.count(":") != 1:
            raise LinkCodecError(f"a class name {str(name)[:80]!r}")
        module, _, qualname = name.partition(":")
        if module.partition(".")[0] not in PACKAGES:
            raise LinkCodecError(f"a class of {module[:80]!r}; only foldnet's cross the link")
        mod = sys.modules.get(module)
        if mod is None:
            try:
                mod = importlib.import_module(module)
            except ImportError as e:
                raise LinkCodecError(f"no module {module[:80]!r}") from e
        obj: Any = mod
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if not isinstance(obj, type) or f"{obj.__module__}:{obj.__qualname__}" != name:
            raise LinkCodecError(f"no class {name[:80]!r}")
        _check_class(obj)
        cls = _CLASSES[name] = obj
    if base is None and not dataclasses.is_dataclass(cls):
        raise LinkCodecError(f"{name} is not a dataclass")
    if base is not None and not issubclass(cls, base):
        raise LinkCodecError(f"{name} is not an enum")
    return cls


def _check_class(cls: type) -> None:
    """Only frozen dataclasses whose constructor takes every field, and enums."""
    if issubclass(cls, enum.Enum):
        return
    if not dataclasses.is_dataclass(cls):
        raise LinkCodecError(f"{cls.__qualname__} is neither a dataclass nor an enum")
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    if not params.frozen or any(not f.init for f in dataclasses.fields(cls)):
        raise LinkCodecError(
            f"{cls.__qualname__} is not a frozen dataclass whose constructor takes every field"
        )
