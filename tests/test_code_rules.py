"""Rules of the product code that a reviewer would otherwise have to remember, checked on its
syntax trees: nothing foldnet reads can run code (no pickle loading, no ``numpy.load`` with
pickles allowed, no ``eval``/``exec``, no OpenMM XML read before ``check_system_xml``), and
digests come from ``hashlib``, never from the builtin ``hash()`` (salted per process, so two
processes disagree)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("foldnet", "coordinator", "ledger", "sims", "worker", "benchmarks")


def _modules() -> list[Path]:
    found = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    assert len(found) > 100, f"expected the product's modules under {ROOT}, found {len(found)}"
    return found


def _reads_openmm_xml(node: ast.Call) -> bool:
    """``XmlSerializer.deserialize(...)`` (or ``.load``): OpenMM builds whatever the XML
    names, a PythonForce by unpickling its function."""
    fn = node.func
    return (
        isinstance(fn, ast.Attribute)
        and fn.attr in ("deserialize", "load")
        and (
            (isinstance(fn.value, ast.Name) and fn.value.id == "XmlSerializer")
            or (isinstance(fn.value, ast.Attribute) and fn.value.attr == "XmlSerializer")
        )
    )


def _unchecked_openmm_xml(tree: ast.AST) -> list[tuple[int, str]]:
    """Reads of OpenMM XML not preceded, in their function, by ``check_system_xml(...)``."""
    out = []
    scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inside = {id(c) for f in scopes for c in ast.walk(f) if isinstance(c, ast.Call)}
    for scope in [*scopes, tree]:
        calls = [c for c in ast.walk(scope) if isinstance(c, ast.Call)]
        if scope is tree:
            calls = [c for c in calls if id(c) not in inside]
        checked = [
            c.lineno
            for c in calls
            if isinstance(c.func, ast.Name | ast.Attribute)
            and getattr(c.func, "id", getattr(c.func, "attr", "")) == "check_system_xml"
        ]
        out += [
            (c.lineno, "reads OpenMM XML without check_system_xml() first")
            for c in calls
            if _reads_openmm_xml(c) and not any(line <= c.lineno for line in checked)
        ]
    return out


def _problems(tree: ast.AST) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = _unchecked_openmm_xml(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module in ("pickle", "marshal", "shelve", "dill", "cloudpickle") or any(
                n.split(".")[0] in ("pickle", "marshal", "shelve", "dill", "cloudpickle")
                for n in names
            ):
                out.append((node.lineno, "imports a pickle-like module"))
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        if isinstance(fn, ast.Name) and fn.id in ("hash", "eval", "exec"):
            out.append((node.lineno, f"calls the builtin {fn.id}()"))
        if isinstance(fn, ast.Attribute) and fn.attr == "load":
            for kw in node.keywords:
                if kw.arg == "allow_pickle" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    out.append((node.lineno, "loads arrays with pickles allowed"))
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_product_code_never_runs_what_it_reads_nor_digests_with_hash(path: Path) -> None:
    problems = _problems(ast.parse(path.read_text(), filename=str(path)))
    assert not problems, [f"{path.relative_to(ROOT)}:{line}: {why}" for line, why in problems]


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("import pickle\n", "pickle-like"),
        ("from pickle import loads\n", "pickle-like"),
        ("import cloudpickle as cp\n", "pickle-like"),
        ("x = hash(b'abc')\n", "builtin hash"),
        ("eval('1')\n", "builtin eval"),
        ("import numpy as np\nnp.load('f', allow_pickle=True)\n", "pickles allowed"),
        ("import numpy as np\nnp.load('f', allow_pickle=flag)\n", "pickles allowed"),
        ("import openmm\ns = openmm.XmlSerializer.deserialize(xml)\n", "OpenMM XML"),
        ("def f(x):\n    return XmlSerializer.deserialize(x)\n", "OpenMM XML"),
    ],
)
def test_the_rules_catch_what_they_name(source: str, why: str) -> None:
    problems = _problems(ast.parse(source))
    assert problems and why in problems[0][1]


def test_what_the_rules_allow() -> None:
    ok = "import hashlib\nimport numpy as np\nnp.load('f', allow_pickle=False)\nx.__hash__()\n"
    assert _problems(ast.parse(ok)) == []
    checked = "def f(x):\n    check_system_xml(x)\n    return openmm.XmlSerializer.deserialize(x)\n"
    assert _problems(ast.parse(checked)) == []
