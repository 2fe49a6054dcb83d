"""Which OpenMM System XML foldnet lets OpenMM read.

A prepared system travels as OpenMM's own XML (:attr:`PreparedSystem.system_xml`), and a
volunteer reads the XML its coordinator sends. OpenMM's reader is not a data reader only:
every object in the XML names its ``type``, OpenMM builds it with the proxy registered for
that type, and ``import openmm`` registers one for ``PythonForce`` that *unpickles* the
force's Python function. Read as it came, a System XML could run any code on the machine
that reads it.

So before OpenMM reads a System, :func:`check_system_xml` reads it with Python's parser and
refuses every object of a type foldnet does not make: the forces Amber ff14SB + GBn2 make
(:func:`sims.allatom.prepare.create_system`), the relaxation's OBC2, and the tabulated
functions a custom force holds, all OpenMM's own C++. It also refuses what could make the two
parsers see different documents (a DOCTYPE and its entities, CDATA, comments, processing
instructions): OpenMM's serializer writes none of them.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

from sims.errors import PreparedSystemError

__all__ = ["SYSTEM_FORCES", "TABULATED_FUNCTIONS", "check_system_xml"]

#: The forces a prepared System may hold.
SYSTEM_FORCES = frozenset(
    {
        "CMMotionRemover",
        "CustomGBForce",
        "GBSAOBCForce",
        "HarmonicAngleForce",
        "HarmonicBondForce",
        "NonbondedForce",
        "PeriodicTorsionForce",
    }
)
#: The tabulated functions a custom force may hold (OpenMM's six; data only).
TABULATED_FUNCTIONS = frozenset(
    f"{kind}{n}DFunction" for kind in ("Continuous", "Discrete") for n in (1, 2, 3)
)
#: Elements whose ``type`` is a plain number, not an object: a CustomGBForce's computations.
_NUMBERED = frozenset({"Value", "Term"})
#: OpenMM's own first line (the only ``<?`` a System XML has).
_DECLARATION = re.compile(r'\A\s*<\?xml version="1\.0"(?: encoding="UTF-8")? \?>')


def check_system_xml(xml: str) -> None:
    """Raise :class:`PreparedSystemError` unless ``xml`` is a System of the forces foldnet
    makes (and nothing OpenMM would read otherwise than Python's parser does)."""
    body = _DECLARATION.sub("", xml, count=1)
    if "<!" in body or "<?" in body:
        raise PreparedSystemError(
            "the System XML holds a DOCTYPE, entity, comment, CDATA section or processing "
            "instruction; expected OpenMM's serialization of a System, which has none"
        )
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as e:
        raise PreparedSystemError(f"the System XML does not parse: {e}") from e
    if root.tag != "System" or root.get("type") != "System":
        raise PreparedSystemError(
            f"expected an OpenMM System, got a {root.tag[:40]!r} of type "
            f"{str(root.get('type'))[:40]!r}"
        )
    for element in root.iter():
        kind = element.get("type")
        if kind is None or element is root or _allowed(element.tag, kind):
            continue
        raise PreparedSystemError(
            f"the System holds a {element.tag[:40]!r} of type {kind[:60]!r}, which foldnet "
            f"never makes: expected only the forces {', '.join(sorted(SYSTEM_FORCES))} "
            "(OpenMM's PythonForce, for one, runs Python code when it is read)"
        )


def _allowed(tag: str, kind: str) -> bool:
    if tag == "Force":
        return kind in SYSTEM_FORCES
    if tag == "Function":
        return kind in TABULATED_FUNCTIONS
    return tag in _NUMBERED and kind.isascii() and kind.isdigit()
