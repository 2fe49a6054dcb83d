"""The one container for named numeric arrays, on the wire and on disk: a JSON manifest,
then raw little-endian bytes.

``np.savez`` costs about a millisecond per call in zip bookkeeping, and a zip must be
inflated and walked; this layout is a slice and an ``np.frombuffer`` per array, can read one
array without touching the others, and admits only plain numeric dtypes, so nothing in it
can ever run code (no pickles, no object arrays). Volunteers upload results in it
(:mod:`worker.wire`) and the coordinator stores them in it (:mod:`coordinator.store`).

Layout: ``b"FNA1"`` | manifest length (uint32, little-endian) | manifest (a JSON object:
optional metadata plus ``"arrays": [[name, dtype, shape], ...]``) | each array's bytes, in
that order, C order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from worker.errors import WireError

MAGIC = b"FNA1"
DTYPES = frozenset({"<f8", "<f4", "<i8", "<i4", "<u8", "|u1", "|b1"})
_ITEMSIZE = {d: np.dtype(d).itemsize for d in DTYPES}
#: The allowed dtypes' objects (native ones compare equal where the machine is little-endian)
#: by their code: most arrays need no conversion, and building a dtype per array is not free.
_LITTLE = {np.dtype(d): d for d in DTYPES}
MAX_ARRAYS = 64
MAX_DIMS = 4
MAX_MANIFEST_BYTES = 1 << 20
#: Largest single dimension (an empty array may not declare an absurd shape either).
MAX_DIM = 2**31 - 1


def check_shape(name: str, shape: list[int]) -> None:
    """Refuse dimensions no real array has (numpy itself refuses some, with a ValueError,
    even when another dimension is 0)."""
    if any(d > MAX_DIM for d in shape):
        raise WireError(
            f"{name}: every dimension must be at most {MAX_DIM:,}, got shape {shape!r:.80}"
        )
    if math.prod(d for d in shape if d) > 2**62:
        raise WireError(f"{name}: shape {shape!r:.80} has more elements than any array can")


def pack_arrays(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    specs = []
    chunks = []
    for name, a in arrays.items():
        arr = a if type(a) is np.ndarray else np.asarray(a)
        # already little-endian: tobytes() writes C order (ascontiguousarray makes a 0-d
        # array 1-d, which the container has always stored)
        code = _LITTLE.get(arr.dtype) if arr.ndim else None
        if code is None:
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
            code = arr.dtype.str
            if code not in DTYPES:
                raise WireError(f"array {name!r}: dtype {code} is not one of {sorted(DTYPES)}")
        specs.append([name, code, list(arr.shape)])
        chunks.append(arr.tobytes())
    manifest = json.dumps({**(meta or {}), "arrays": specs}, separators=(",", ":")).encode()
    return MAGIC + len(manifest).to_bytes(4, "little") + manifest + b"".join(chunks)


def read_container(
    data: bytes | bytearray,
    names: Iterable[str] | None = None,
    *,
    max_manifest: int = MAX_MANIFEST_BYTES,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(manifest, arrays): all arrays, or only ``names``, as read-only views of ``data``.

    Raises :class:`~worker.errors.WireError` saying what was wrong with a malformed blob."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise WireError(
            f"expected a foldnet array container (starting {MAGIC!r}), got {data[:4]!r}"
        )
    n = int.from_bytes(data[4:8], "little")
    if n > max_manifest or 8 + n > len(data):
        raise WireError(f"manifest of {n:,} bytes does not fit the body ({len(data):,} bytes)")
    try:
        manifest = json.loads(data[8 : 8 + n])
    except RecursionError as e:
        raise WireError("the manifest is nested too deeply; expected a flat JSON object") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError(f"the manifest is not JSON: {e}") from e
    specs = manifest.get("arrays") if isinstance(manifest, dict) else None
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise WireError(f"manifest: expected an object with 'arrays', a list of <= {MAX_ARRAYS}")
    wanted = None if names is None else set(names)
    pos = 8 + n
    arrays: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    for spec in specs:
        if not (isinstance(spec, list) and len(spec) == 3):
            raise WireError(f"arrays: expected [name, dtype, shape] entries, got {spec!r:.80}")
        name, dtype, shape = spec
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 40:
            raise WireError(f"array name: expected an identifier, got {name!r:.50}")
        if name in seen:
            raise WireError(f"array {name!r} appears twice")
        seen.add(name)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise WireError(f"{name}: dtype must be one of {sorted(DTYPES)}, got {dtype!r:.20}")
        plain = (  # what JSON gives: a short list of plain ints (the fast common case)
            type(shape) is list
            and len(shape) <= MAX_DIMS
            and all(type(d) is int and d >= 0 for d in shape)
        )
        if not plain and (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)
        ):
            raise WireError(
                f"{name}: shape must be up to {MAX_DIMS} non-negative integers, got {shape!r:.80}"
            )
        check_shape(name, shape)
        count = math.prod(shape)
        size = count * _ITEMSIZE[dtype]
        if size > len(data) - pos:
            raise WireError(f"{name}: shape {shape} needs {size:,} bytes; the data is too short")
        if wanted is None or name in wanted:
            arrays[name] = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(shape)
        pos += size
    if pos != len(data):
        raise WireError(f"{len(data) - pos:,} bytes after the last array")
    if wanted is not None and (missing := wanted - arrays.keys()):
        raise WireError(f"the container lacks {sorted(missing)}")
    return manifest, arrays


def unpack_arrays(data: bytes, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a container (all, or only ``names``); see :func:`read_container`."""
    return read_container(data, names)[1]
