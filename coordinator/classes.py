"""Which determinism classes the coordinator accepts: the server owns them
(docs/architecture.md §4.3).

A volunteer reports the class it computes in; replicas of one WU are compared bit for bit
only within a class. If any string were accepted, a handful of keys could name a class of
their own and be the only volunteers ever matched with each other. So a reported class must
be one of a **known set**: the classes this coordinator's own engines report (the software
and platforms it supports, computed on its machine), plus the exact classes its operator
lists in ``classes.json`` beside the coordinator's databases (other CPUs, a GPU platform)::

    {"accepted": ["<canonical class JSON>", ...]}

Anything else is refused with a message that names what was reported and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from coordinator.errors import ClassRefusedError
from coordinator.jobs import ENGINES
from sims.result import DeterminismClass

MAX_CLASS_BYTES = 4096
CLASSES_FILE = "classes.json"


@dataclass(frozen=True, slots=True)
class AcceptedClass:
    key: str  # short stable id the scheduler groups replicas by
    engine: str
    canonical: str


def parse_class(canonical: str) -> DeterminismClass:
    """The class a canonical JSON names; refused unless it is exactly canonical."""
    if (
        not isinstance(canonical, str)
        or len(canonical.encode("utf-8", "replace")) > MAX_CLASS_BYTES
    ):
        raise ClassRefusedError(f"det_class: expected at most {MAX_CLASS_BYTES} bytes of JSON")
    names = {f.name for f in fields(DeterminismClass)}
    try:
        doc = json.loads(canonical)
    except (ValueError, RecursionError) as e:
        raise ClassRefusedError(f"det_class: expected JSON, got {canonical[:40]!r}: {e}") from e
    if not isinstance(doc, dict) or set(doc) != names:
        raise ClassRefusedError(
            f"det_class: expected the canonical JSON of an engine's determinism class, an object "
            f"with the fields {sorted(names)}"
        )
    try:
        extra = tuple((str(k), str(v)) for k, v in doc.pop("extra"))
        cls = DeterminismClass(**doc, extra=extra)
    except (ValueError, TypeError, AttributeError, RecursionError) as e:
        raise ClassRefusedError(
            f"det_class: expected the canonical JSON of an engine's determinism class ({e})"
        ) from e
    if cls.canonical().decode() != canonical:
        raise ClassRefusedError("det_class: not in canonical form (sorted keys, no spaces)")
    if cls.engine not in ENGINES:
        raise ClassRefusedError(f"det_class.engine: expected one of {ENGINES}, got {cls.engine!r}")
    return cls


class ClassRegistry:
    """The known set. ``discover`` yields the classes this machine's engines report (it may
    be costly, so it runs only when a class is not known yet)."""

    def __init__(
        self,
        accepted: Iterable[str] = (),
        *,
        discover: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self._known: dict[str, AcceptedClass] = {}
        self._discover = discover
        for canonical in accepted:
            self.add(canonical)

    @classmethod
    def load(
        cls, workdir: str | Path, *, discover: Callable[[], Iterable[str]] | None = None
    ) -> ClassRegistry:
        """The operator's ``classes.json`` in ``workdir`` (if any) plus ``discover``."""
        path = Path(workdir) / CLASSES_FILE
        accepted: list[str] = []
        if path.exists():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                accepted = list(doc["accepted"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ClassRefusedError(
                    f'{path.name}: expected {{"accepted": [canonical class JSON, ...]}} ({e})'
                ) from e
        return cls(accepted, discover=discover)

    def add(self, canonical: str) -> AcceptedClass:
        cls = parse_class(canonical)
        acc = AcceptedClass(cls.key, cls.engine, canonical)
        self._known[canonical] = acc
        return acc

    def accept(self, canonical: str) -> AcceptedClass:
        """The accepted class, or :class:`ClassRefusedError` saying why."""
        known = self._known.get(canonical)
        if known is not None:
            return known
        cls = parse_class(canonical)
        if self._discover is not None:
            for c in self._discover():
                if c not in self._known:
                    self.add(c)
            known = self._known.get(canonical)
            if known is not None:
                return known
        raise ClassRefusedError(
            f"determinism class {cls} is not one this coordinator accepts (it accepts "
            f"{len(self._known)} known classes); ask its operator to add it to "
            f"{CLASSES_FILE} if the platform is supported"
        )

    def __len__(self) -> int:
        return len(self._known)
