"""Prepared systems as workers receive them, their digests, and engines built from them.

A system is prepared once, by the coordinator, and shipped as data: a :class:`GoModel`
(parameter arrays) or an OpenMM :class:`PreparedSystem` (serialized System + minimized
start). Workers never re-derive parameters, since numpy's or OpenMM's floating-point results
may differ in the last bit between machines, and a WU must mean the same bits everywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np
from openmm import app

from sims.allatom import AllAtomEngine
from sims.allatom.prepare import PreparedSystem
from sims.engine import Engine
from sims.errors import SimsError
from sims.go import GoEngine, GoModel
from sims.observables import NativeContacts
from worker.errors import WireError

SystemDefinition = GoModel | PreparedSystem


def system_digest(system: SystemDefinition) -> bytes:
    if isinstance(system, GoModel):
        return system.digest()
    if isinstance(system, PreparedSystem):
        h = hashlib.sha256(b"foldnet/openmm-system/v1\x00")
        h.update(system.system_xml.encode())
        h.update(np.ascontiguousarray(system.positions, dtype="<f8").tobytes())
        return h.digest()
    raise WireError(f"not a prepared system: {type(system).__name__}")


def particle_count(system: SystemDefinition) -> int:
    return system.n_beads if isinstance(system, GoModel) else system.n_atoms


def engine_name(system: SystemDefinition) -> str:
    return "go" if isinstance(system, GoModel) else "openmm"


class EngineCache:
    """Engines by system digest; building an OpenMM Context is slow, so keep a few."""

    def __init__(self, capacity: int = 4, *, threads: int = 1, platform: str = "CPU") -> None:
        self._engines: OrderedDict[bytes, Engine] = OrderedDict()
        self._capacity = capacity
        self._threads = threads
        self._platform = platform
        #: The last system asked for and its digest: hashing a model on every task costs as
        #: much as a tiny task's dynamics. Systems are immutable once prepared.
        self._last: tuple[SystemDefinition, bytes] | None = None

    def get(self, system: SystemDefinition) -> Engine:
        if self._last is not None and self._last[0] is system:
            key = self._last[1]
        else:
            key = system_digest(system)
            self._last = (system, key)
        engine = self._engines.get(key)
        if engine is None:
            if isinstance(system, GoModel):
                engine = GoEngine(system)
            else:
                engine = AllAtomEngine(system, platform=self._platform, threads=self._threads)
            self._engines[key] = engine
            while len(self._engines) > self._capacity:
                self._engines.popitem(last=False)
        self._engines.move_to_end(key)
        return engine


def encode_system(system: SystemDefinition) -> bytes:
    """Plain bytes (an .npz of arrays and JSON metadata): for storage and HTTP, never pickle."""
    buf = io.BytesIO()
    meta: dict[str, object]
    if isinstance(system, GoModel):
        meta = {
            "kind": "go",
            "sequence": system.sequence,
            "source": system.source,
            "gaps": list(system.gaps),
            "scalars": [system.kr, system.ktheta, system.k1, system.k3, system.eps, system.rep_c],
        }
        arrays = {
            name: getattr(system, name)
            for name in ("native", "bond_r0", "theta0", "phi0", "cos_phi0", "sin_phi0", "native_s2")
        }
        arrays |= {"contact_pairs": system.contacts.pairs, "contact_d": system.contacts.distances}
    elif isinstance(system, PreparedSystem):
        pdb = io.StringIO()
        app.PDBFile.writeFile(system.topology, system.positions * 10.0, pdb, keepIds=True)
        meta = {
            "kind": "openmm",
            "sequence": system.sequence,
            "source": system.source,
            "system_xml": system.system_xml,
            "pdb": pdb.getvalue(),
            "minimized_energy": system.minimized_energy,
        }
        arrays = {
            "positions": system.positions,
            "ca_indices": system.ca_indices,
            "heavy_indices": system.heavy_indices,
        }
        if system.reference is not None:
            arrays["reference"] = system.reference
        if system.contacts is not None:
            arrays |= {
                "contact_pairs": system.contacts.pairs,
                "contact_d": system.contacts.distances,
            }
    else:
        raise WireError(f"not a prepared system: {type(system).__name__}")
    np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    return buf.getvalue()


#: What numpy, zipfile, json and the constructors raise on bytes that are not a system.
_DECODE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OSError,
    EOFError,
    RecursionError,
    zipfile.BadZipFile,
    SimsError,
)


def _check_members(data: bytes) -> None:
    """Refuse an archive whose arrays would take more memory than its bytes: each member
    must be stored (as :func:`encode_system` writes them; deflated, a few MiB can inflate to
    terabytes) and hold exactly the bytes its ``.npy`` header declares (numpy allocates what
    the header says before it reads)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            name = info.filename[:40]
            if info.compress_type != zipfile.ZIP_STORED:
                raise WireError(
                    f"{name!r} is compressed; expected the stored arrays encode_system writes"
                )
            if not info.file_size == info.compress_size <= len(data):
                raise WireError(f"{name!r} claims more bytes than the archive has")
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise WireError(f"{name!r}: .npy format {version} is not one numpy writes")
                held = info.file_size - f.tell()
            need = math.prod(shape) * dtype.itemsize
            if dtype.hasobject or need != held:
                raise WireError(
                    f"{name!r} declares {dtype.str} {shape} ({need:,} bytes) but holds "
                    f"{held:,} bytes of data"
                )


def decode_system(data: bytes) -> SystemDefinition:
    """The inverse of :func:`encode_system`. Raises :class:`WireError` for anything else (a
    truncated download, a damaged cache file), never numpy's, zipfile's or OpenMM's errors."""
    try:
        _check_members(data)
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes())
    except _DECODE_ERRORS as e:
        raise WireError(f"not an encoded foldnet system: {e}") from e
    if not isinstance(meta, dict):
        raise WireError(
            f"an encoded system's meta must be a JSON object, got {type(meta).__name__}"
        )
    try:
        return _system_from(meta, arrays)
    except _DECODE_ERRORS as e:
        raise WireError(
            f"an encoded {str(meta.get('kind'))[:20]!r} system does not decode: {e}; expected "
            "what encode_system wrote (fetch the system again)"
        ) from e


def _system_from(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> SystemDefinition:
    for a in arrays.values():
        a.setflags(write=False)
    contacts = (
        NativeContacts(arrays.pop("contact_pairs"), arrays.pop("contact_d"))
        if "contact_pairs" in arrays
        else None
    )
    if meta.get("kind") == "go" and contacts is not None:
        kr, ktheta, k1, k3, eps, rep_c = meta["scalars"]
        return GoModel(
            sequence=meta["sequence"],
            contacts=contacts,
            kr=kr,
            ktheta=ktheta,
            k1=k1,
            k3=k3,
            eps=eps,
            rep_c=rep_c,
            source=meta["source"],
            gaps=tuple(meta["gaps"]),
            **arrays,
        )
    if meta.get("kind") == "openmm":
        if not isinstance(meta.get("pdb"), str):
            raise WireError("an encoded openmm system: expected its topology as PDB text")
        try:
            topology = app.PDBFile(io.StringIO(meta["pdb"])).topology
        except Exception as e:  # OpenMM's PDB reader raises a zoo of errors on bad text
            raise WireError(f"an encoded openmm system: its PDB does not read: {e}") from e
        return PreparedSystem(
            topology=topology,
            system_xml=meta["system_xml"],
            positions=arrays["positions"],
            reference=arrays.get("reference"),
            source=meta["source"],
            sequence=meta["sequence"],
            minimized_energy=meta["minimized_energy"],
            ca_indices=arrays["ca_indices"],
            heavy_indices=arrays["heavy_indices"],
            contacts=contacts,
        )
    raise WireError(f"unknown system kind {str(meta.get('kind'))[:20]!r}: expected go or openmm")
