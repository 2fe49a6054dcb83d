"""The wire format of the coordinator link (:mod:`coordinator.http.link`): JSON of tagged
lists plus raw buffers, never pickle.

The link is private to foldnet's own processes, but a codec that can only build data is a
wall that does not depend on that: were a front-end ever made to write bytes of an
attacker's choosing, decoding them could still not import a module, call a function or build
anything but the values below. (Pickle's ``find_class`` allow-lists stop at "which globals",
and a single forgotten one is a way in; here there is nothing to forget.)

A frame is ``<u32 header length> <u32 buffer count> <u64 length of each buffer> header
buffers...``; the header is the value in JSON. JSON scalars (NaN and infinities included, as
Python's ``json`` writes them) are themselves and a JSON object is a dict with string keys;
every other value is a JSON list whose first item names what it is:

==========================  =========================================================
``["l", v...]``              list
``["t", v...]``              tuple
``["x", hex]``               bytes of up to 64 (digests, keys, signatures)
``["b", i]``                 longer bytes: buffer ``i``
``["a", i, dtype, n...]``    numpy array in buffer ``i``, of shape ``(n...)`` (bool, int,
                             uint, float, complex)
``["n", dtype, v]``          numpy scalar (a complex one's ``v`` is ``[real, imag]``)
``["d", k, v, ...]``         dict with other keys
``["s", v...]``              set
``["f", v...]``              frozenset
``["p", text]``              ``pathlib.Path``
``["mod:Qual", v...]``       dataclass: each field's value in field order, built with its
                             constructor (the count must be the class's)
``["mod:Qual", value]``      enum member
==========================  =========================================================

Only dataclasses and enums defined in foldnet's own packages (:data:`PACKAGES`) are built,
and a dataclass is built through its constructor, so whatever its ``__post_init__`` checks
holds for what arrives. Anything else is :class:`LinkCodecError`, on either side.

Lists rather than tagged objects and fields by position rather than by name, because the
coordinator's process decodes every call and encodes every answer on its one thread: JSON
objects cost the parser a dict each, and a hook on every one of them cost more than the
parse. Each type's encoder and each class's decoder is made once, the first time it is met.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import operator
import pathlib
import struct
import sys
from collections.abc import Callable
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
#: Types that are themselves in JSON (a JSON object is a dict, walked; see :func:`_value`).
_SCALARS = frozenset({str, int, float, bool, type(None)})
_NUMBERS = frozenset({int, float, bool})

_Buffers = list[Any]  # bytes, or C-contiguous numpy arrays, each written as it is


class LinkCodecError(Internal):
    """A value the link cannot carry, or bytes that are not a message of this version."""

    code = "link_codec"


# -- encoding ----------------------------------------------------------------------------------

_dumps = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def encode(value: object) -> bytes:
    """``value`` as one frame body (without the link's length prefix)."""
    buffers: _Buffers = []
    try:
        doc = _plain(value, buffers)
        header = _dumps(doc).encode()  # ASCII: a lone surrogate travels escaped
    except RecursionError as e:
        raise LinkCodecError("a value nested too deeply for the coordinator link") from e
    lengths = [b.nbytes if type(b) is np.ndarray else len(b) for b in buffers]
    prefix = _HEADER.pack(len(header), len(buffers)) + struct.pack(f"<{len(buffers)}Q", *lengths)
    return b"".join([prefix, header, *buffers])


_Encoder = Callable[[Any, _Buffers], Any]


def _plain(value: Any, buffers: _Buffers) -> Any:
    kind = type(value)
    if kind in _SCALARS:
        return value
    enc = _ENCODERS.get(kind) or _encoder_for(kind)
    return enc(value, buffers)


def _items(values: Any, buffers: _Buffers) -> list[Any]:
    return [v if type(v) in _SCALARS else _plain(v, buffers) for v in values]


def _enc_list(value: list[Any], buffers: _Buffers) -> list[Any]:
    return ["l", *_items(value, buffers)]


def _enc_tuple(value: tuple[Any, ...], buffers: _Buffers) -> list[Any]:
    return ["t", *_items(value, buffers)]


def _enc_dict(value: dict[Any, Any], buffers: _Buffers) -> Any:
    for key in value:
        if type(key) is not str:
            out = ["d"]
            for k, v in value.items():
                out.append(_plain(k, buffers))
                out.append(_plain(v, buffers))
            return out
    return {k: v if type(v) in _SCALARS else _plain(v, buffers) for k, v in value.items()}


def _enc_bytes(value: bytes, buffers: _Buffers) -> list[Any]:
    if len(value) <= _INLINE:
        return ["x", value.hex()]
    buffers.append(value)
    return ["b", len(buffers) - 1]


def _enc_array(value: np.ndarray, buffers: _Buffers) -> list[Any]:
    dt = value.dtype
    if dt.kind not in _ARRAY_KINDS:
        raise LinkCodecError(f"an array of dtype {dt} on the coordinator link; expected numbers")
    if not value.size:
        buffers.append(b"")
    elif value.flags.c_contiguous:
        buffers.append(value)
    else:
        buffers.append(np.ascontiguousarray(value))
    return ["a", len(buffers) - 1, dt.str, *value.shape]


def _enc_scalar(value: np.generic, buffers: _Buffers) -> list[Any]:
    item = value.item()
    if isinstance(item, complex):
        item = [item.real, item.imag]
    return ["n", value.dtype.str, item]


def _enc_set(value: set[Any], buffers: _Buffers) -> list[Any]:
    return ["s", *_items(value, buffers)]


def _enc_frozenset(value: frozenset[Any], buffers: _Buffers) -> list[Any]:
    return ["f", *_items(value, buffers)]


def _enc_path(value: pathlib.PurePath, buffers: _Buffers) -> list[Any]:
    return ["p", str(value)]


#: The encoder of each type met so far (exact types: a subclass is judged on its own).
_ENCODERS: dict[type, _Encoder] = {
    list: _enc_list,
    tuple: _enc_tuple,
    dict: _enc_dict,
    bytes: _enc_bytes,
    np.ndarray: _enc_array,
    set: _enc_set,
    frozenset: _enc_frozenset,
}


def _encoder_for(kind: type) -> _Encoder:
    """The encoder of a type not met before, or :class:`LinkCodecError` if none may be."""
    enc: _Encoder
    if issubclass(kind, np.generic) and np.dtype(kind).kind in _ARRAY_KINDS:
        enc = _enc_scalar
    elif issubclass(kind, pathlib.PurePath):
        enc = _enc_path
    elif issubclass(kind, enum.Enum):
        name = _name_of(kind)

        def enc(value: Any, buffers: _Buffers) -> list[Any]:
            return [name, _plain(value.value, buffers)]

    elif dataclasses.is_dataclass(kind):
        _check_class(kind)
        enc = _dataclass_encoder(kind, _name_of(kind))
    else:
        raise LinkCodecError(
            f"a {kind.__module__}.{kind.__qualname__} on the coordinator link; expected "
            "plain data or a dataclass of foldnet's"
        )
    _ENCODERS[kind] = enc
    return enc


def _dataclass_encoder(kind: type, name: str) -> _Encoder:
    names = tuple(f.name for f in dataclasses.fields(kind))
    if len(names) == 1:
        (only,) = names
        return lambda value, buffers: [name, _plain(getattr(value, only), buffers)]
    if not names:
        return lambda value, buffers: [name]
    fields = operator.attrgetter(*names)  # every field at once, in C

    def enc(value: Any, buffers: _Buffers) -> list[Any]:
        return [name, *[v if type(v) in _SCALARS else _plain(v, buffers) for v in fields(value)]]

    return enc


def _name_of(kind: type) -> str:
    if kind.__module__.partition(".")[0] not in PACKAGES:
        raise LinkCodecError(
            f"a {kind.__module__}.{kind.__qualname__} on the coordinator link; only foldnet's "
            f"own dataclasses and enums cross it ({', '.join(PACKAGES)})"
        )
    return f"{kind.__module__}:{kind.__qualname__}"


# -- decoding ----------------------------------------------------------------------------------

_raw_decode = json.JSONDecoder().raw_decode


def _loads(text: str) -> Any:
    """The JSON header (``raw_decode``: no whitespace to skip, we write none)."""
    doc, end = _raw_decode(text)
    if end != len(text):
        raise LinkCodecError(f"a header with {len(text) - end} bytes after its JSON value")
    return doc


def decode(data: bytes | bytearray | memoryview) -> Any:
    """The value of one frame body; :class:`LinkCodecError` for anything else."""
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size:
        raise LinkCodecError(f"a message of {len(view)} bytes; expected a header")
    n, count = _HEADER.unpack_from(view)
    start = _HEADER.size + 8 * count
    if start + n > len(view):
        raise LinkCodecError(f"a header of {n} bytes and {count} buffers in {len(view)} bytes")
    lengths = struct.unpack_from(f"<{count}Q", view, _HEADER.size)
    at = start + n
    if at + sum(lengths) != len(view):
        raise LinkCodecError(f"a message of {len(view)} bytes; its header promises more or less")
    buffers = []
    for k in lengths:
        buffers.append(view[at : at + k])
        at += k
    try:
        doc = _loads(str(view[start : start + n], "utf-8"))
        return doc if type(doc) in _SCALARS else _value(doc, buffers)
    except LinkCodecError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as e:
        raise LinkCodecError(f"a message that does not decode: {e}") from e
    except Exception as e:  # a dataclass's own check refused the fields
        raise LinkCodecError(f"a message whose values were refused: {e}") from e


_Decoder = Callable[[list[Any], list[memoryview]], Any]


def _value(doc: Any, buffers: list[memoryview]) -> Any:
    """The value of a parsed JSON value that is not a scalar (a list or an object)."""
    if type(doc) is list:
        tag = doc[0]
        try:
            dec = _DECODERS[tag]
        except KeyError:
            dec = _decoder_for(tag)
        return dec(doc, buffers)
    if type(doc) is dict:
        return {k: v if type(v) in _SCALARS else _value(v, buffers) for k, v in doc.items()}
    return doc


def _values(doc: list[Any], buffers: list[memoryview]) -> list[Any]:
    """The values of ``doc``'s items after its tag."""
    return [v if type(v) in _SCALARS else _value(v, buffers) for v in doc[1:]]


def _dec_list(doc: list[Any], buffers: list[memoryview]) -> Any:
    return _values(doc, buffers)


def _dec_tuple(doc: list[Any], buffers: list[memoryview]) -> Any:
    return tuple(_values(doc, buffers))


def _dec_hex(doc: list[Any], buffers: list[memoryview]) -> Any:
    _, text = doc
    return bytes.fromhex(text)


def _dec_bytes(doc: list[Any], buffers: list[memoryview]) -> Any:
    _, index = doc
    return bytes(buffers[_index(index, buffers)])


def _dec_array(doc: list[Any], buffers: list[memoryview]) -> Any:
    index, dtype, shape = doc[1], doc[2], doc[3:]
    dt = _DTYPES.get(dtype)
    if dt is None:
        dt = _dtype(dtype)
    size = dt.itemsize
    for n in shape:
        if type(n) is not int or n < 0:
            raise LinkCodecError(f"an array of shape {str(shape)[:40]}")
        size *= n
    if type(index) is not int or not 0 <= index < len(buffers):
        raise LinkCodecError(f"a buffer index {str(index)[:20]}; the message has {len(buffers)}")
    buf = buffers[index]
    if len(buf) != size:
        raise LinkCodecError(f"an array of shape {tuple(shape)} and dtype {dt} in {len(buf)} bytes")
    return np.ndarray(shape, dt, bytearray(buf))  # its own writable copy


def _dec_scalar(doc: list[Any], buffers: list[memoryview]) -> Any:
    _, dtype, item = doc
    dt = _dtype(dtype)
    if dt.kind == "c":
        real, imag = item
        if type(real) in _NUMBERS and type(imag) in _NUMBERS:
            return dt.type(complex(real, imag))
    elif type(item) in _NUMBERS:
        return dt.type(item)
    raise LinkCodecError(f"a numpy scalar of {dt} that is {str(item)[:40]}")


def _dec_dict(doc: list[Any], buffers: list[memoryview]) -> Any:
    items = _values(doc, buffers)
    if len(items) % 2:
        raise LinkCodecError("a dict with a key without its value")
    return dict(zip(items[::2], items[1::2], strict=True))


def _dec_set(doc: list[Any], buffers: list[memoryview]) -> Any:
    return set(_values(doc, buffers))


def _dec_frozenset(doc: list[Any], buffers: list[memoryview]) -> Any:
    return frozenset(_values(doc, buffers))


def _dec_path(doc: list[Any], buffers: list[memoryview]) -> Any:
    _, text = doc
    if type(text) is not str:
        raise LinkCodecError("a path that is not a string")
    return pathlib.Path(text)


#: The decoder of each tag, and of each class's wire name met so far.
_DECODERS: dict[str, _Decoder] = {
    "l": _dec_list,
    "t": _dec_tuple,
    "x": _dec_hex,
    "b": _dec_bytes,
    "a": _dec_array,
    "n": _dec_scalar,
    "d": _dec_dict,
    "s": _dec_set,
    "f": _dec_frozenset,
    "p": _dec_path,
}


def _index(index: Any, buffers: list[memoryview]) -> int:
    if type(index) is not int or not 0 <= index < len(buffers):
        raise LinkCodecError(f"a buffer index {str(index)[:20]}; the message has {len(buffers)}")
    return index


#: Array dtypes met so far, by their wire name (parsing one costs more than a small array).
_DTYPES: dict[str, np.dtype[Any]] = {}


def _dtype(text: Any) -> np.dtype[Any]:
    if type(text) is not str or len(text) > 8:
        raise LinkCodecError(f"a dtype {str(text)[:20]!r}")
    dt = np.dtype(text)
    if dt.kind not in _ARRAY_KINDS:
        raise LinkCodecError(f"a dtype {dt}; expected numbers")
    _DTYPES[text] = dt
    return dt


def _decoder_for(tag: Any) -> _Decoder:
    """The decoder of a class's wire name not met before (only once it resolved to one of
    foldnet's frozen dataclasses or enums, so what is remembered stays few)."""
    cls = _resolve(tag)
    dec: _Decoder
    if issubclass(cls, enum.Enum):

        def dec(doc: list[Any], buffers: list[memoryview]) -> Any:
            _, value = doc
            return cls(value if type(value) in _SCALARS else _value(value, buffers))

    else:
        dec = _dataclass_decoder(cls, tag)
    _DECODERS[tag] = dec
    return dec


def _dataclass_decoder(cls: type, name: str) -> _Decoder:
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    size = len(names) + 1
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    by_position = params.init and not any(f.kw_only for f in fields)

    def dec(doc: list[Any], buffers: list[memoryview]) -> Any:
        if len(doc) != size:
            raise LinkCodecError(f"{name} with {len(doc) - 1} fields; it has {size - 1}")
        values = [v if type(v) in _SCALARS else _value(v, buffers) for v in doc[1:]]
        if by_position:
            return cls(*values)
        return cls(**dict(zip(names, values, strict=True)))

    return dec


def _resolve(name: Any) -> type:
    if type(name) is not str or name.count(":") != 1:
        raise LinkCodecError(f"an unknown tag {str(name)[:80]!r}")
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
    return obj


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
