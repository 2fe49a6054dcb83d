"""A flat, pickle-free container for named numeric arrays: a JSON index, then raw bytes.

``np.savez`` costs about a millisecond per call in zip bookkeeping; a coordinator that
stores thousands of small results a second cannot afford it. This layout is trivially
parsed, reads one array without touching the others, and admits only plain little-endian
numeric dtypes, so nothing in it can ever run code.

Layout: ``b"FNA1"``, a little-endian uint32 ``n``, ``n`` bytes of JSON
``[[name, dtype, shape], ...]``, then each array's bytes in that order (C order).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Mapping

import numpy as np

from worker.errors import ResultError

MAGIC = b"FNA1"
DTYPES = frozenset({"<f8", "<f4", "<i8", "<i4", "<u8", "<u4", "|u1", "|b1"})
MAX_INDEX_BYTES = 1 << 20


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    index = []
    parts = []
    for name, arr in arrays.items():
        a = np.asarray(arr)
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        a = np.ascontiguousarray(a, dtype=dtype)
        if a.dtype.str not in DTYPES:
            raise ResultError(f"array {name!r}: dtype {a.dtype.str} is not one of {sorted(DTYPES)}")
        index.append([name, a.dtype.str, list(a.shape)])
        parts.append(a.tobytes())
    head = json.dumps(index, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(parts)


def unpack_arrays(data: bytes, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays (all, or only ``names``), as read-only views of ``data``.

    Raises :class:`~worker.errors.ResultError` on anything malformed."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise ResultError(f"not a packed-array blob: expected it to start with {MAGIC!r}")
    (n,) = struct.unpack_from("<I", data, 4)
    if n > MAX_INDEX_BYTES or 8 + n > len(data):
        raise ResultError(f"packed-array index of {n} bytes does not fit in {len(data)} bytes")
    try:
        index = json.loads(data[8 : 8 + n])
        entries = [(str(nm), str(dt), tuple(int(d) for d in shape)) for nm, dt, shape in index]
    except (ValueError, TypeError) as e:
        raise ResultError(f"packed-array index is not [[name, dtype, shape], ...]: {e}") from e
    wanted = None if names is None else set(names)
    out: dict[str, np.ndarray] = {}
    offset = 8 + n
    for name, dt, shape in entries:
        if dt not in DTYPES or any(d < 0 for d in shape):
            raise ResultError(f"array {name!r}: bad dtype {dt!r} or shape {shape}")
        nbytes = math.prod(shape) * np.dtype(dt).itemsize
        if offset + nbytes > len(data):
            raise ResultError(f"array {name!r} runs past the end of the blob")
        if wanted is None or name in wanted:
            out[name] = np.frombuffer(data, dtype=dt, count=math.prod(shape), offset=offset)
            out[name] = out[name].reshape(shape)
        offset += nbytes
    if offset != len(data):
        raise ResultError(f"{len(data) - offset} unexpected bytes after the last array")
    if wanted is not None and (missing := wanted - out.keys()):
        raise ResultError(f"packed arrays lack {sorted(missing)}")
    return out
