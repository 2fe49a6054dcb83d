"""The credit formula: a pure, versioned, deterministic function an auditor can recompute.

Credit for a validated WU depends only on the WU's parameters (engine, system size, steps,
deadline) and on times recorded in the ledger, never on anything a worker claims (its wall
time, its hardware). All arithmetic is on integers, so every machine computes the same
number.

Version 1::

    work   = ENGINE_WEIGHT[engine] * n_particles * steps
    base   = max(1, work // 100_000)                           (points)
    late   = validated_at_ms - issued_at_ms                    (ms, ledger times)
    bonus  = isqrt(750_000 * deadline_ms // late)              (per mille, = 1000*sqrt(0.75*D/T))
    bonus  = min(4000, max(1000, bonus))  if 0 < late <= deadline_ms  else 1000
    credit = base * bonus // 1000

``bonus`` is the quick-return bonus of Folding@home (``max(1, sqrt(k * deadline /
elapsed))``, k = 0.75), capped at 4x so that an operator who wrote a false issue time could at
most quadruple a credit, in plain sight of every auditor. ``validated_at_ms`` is the
timestamp of the ``result validated`` record; ``issued_at_ms`` is recorded in that record's
attestation for each worker. Every input but ``validated_at_ms`` is one the worker signed
(``ledger.entries.PriceInputs``), so a price is never the operator's word alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import MappingProxyType

from ledger.errors import CreditError

__all__ = [
    "CURRENT_FORMULA_VERSION",
    "ENGINE_WEIGHT_V1",
    "FORMULAS",
    "credit_for",
    "credit_v1",
]

#: The formula version new grants use.
CURRENT_FORMULA_VERSION = 1

#: Relative cost of one particle-step per engine (an all-atom implicit-solvent step with
#: Amber ff14SB + GBn2 costs about fifty C-alpha Go-model steps per particle).
ENGINE_WEIGHT_V1: Mapping[str, int] = MappingProxyType({"go": 1, "openmm": 50})

_POINT_WORK = 100_000
_QRB_K_PER_MILLE = 750
_BONUS_CAP_PER_MILLE = 4000


def _int(name: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CreditError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def credit_v1(
    *,
    engine: str,
    n_particles: int,
    steps: int,
    deadline_s: int,
    issued_at_ms: int,
    validated_at_ms: int,
) -> int:
    """Credit points of formula version 1 (see the module docstring)."""
    weight = ENGINE_WEIGHT_V1.get(engine)
    if weight is None:
        known = ", ".join(sorted(ENGINE_WEIGHT_V1))
        raise CreditError(f"formula v1 has no price for engine {engine!r} (known: {known})")
    n = _int("n_particles", n_particles, minimum=1)
    s = _int("steps", steps, minimum=1)
    deadline_ms = _int("deadline_s", deadline_s) * 1000
    issued = _int("issued_at_ms", issued_at_ms)
    validated = _int("validated_at_ms", validated_at_ms)
    if validated < issued:
        raise CreditError(f"validated at {validated} ms, before the WU was issued at {issued} ms")
    base = max(1, weight * n * s // _POINT_WORK)
    late = validated - issued
    bonus = 1000
    if 0 < late <= deadline_ms:
        bonus = math.isqrt(_QRB_K_PER_MILLE * 1000 * deadline_ms // late)
        bonus = min(_BONUS_CAP_PER_MILLE, max(1000, bonus))
    return base * bonus // 1000


#: Every published formula, by version. Old versions stay so old grants stay checkable.
FORMULAS: Mapping[int, Callable[..., int]] = MappingProxyType({1: credit_v1})


def credit_for(
    version: int,
    *,
    engine: str,
    n_particles: int,
    steps: int,
    deadline_s: int,
    issued_at_ms: int,
    validated_at_ms: int,
) -> int:
    """Credit points of formula ``version``; raises :class:`CreditError` if it cannot price."""
    formula = FORMULAS.get(version)
    if formula is None:
        raise CreditError(f"unknown credit formula version {version}")
    return formula(
        engine=engine,
        n_particles=n_particles,
        steps=steps,
        deadline_s=deadline_s,
        issued_at_ms=issued_at_ms,
        validated_at_ms=validated_at_ms,
    )
