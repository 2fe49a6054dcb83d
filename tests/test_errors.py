"""One error tree, one mapping: every exception foldnet defines descends from FoldnetError and
means exactly one HTTP status and one exit status, wherever it is raised."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pickle
import pkgutil
import re
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import coordinator
import foldnet
import ledger
import sims
import worker
from foldnet.errors import (
    EXIT_CLIENT,
    EXIT_FAULT,
    EXIT_FINDING,
    ClientError,
    Finding,
    FoldnetError,
    NotFound,
    ServerFault,
    Unavailable,
    error_for_status,
    exit_code_of,
    kind_of,
    status_of,
)
from foldnet.http_errors import install_error_handlers


def _get(app: FastAPI, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path)

    return asyncio.run(go())


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (foldnet, sims, worker, coordinator, ledger)
#: Roots of a subtree: never raised themselves (checked below), so they need no kind.
ROOTS = {"FoldnetError", "ClientError", "ServerFault", "Finding"} | {
    "SimsError",
    "WorkerError",
    "CoordinatorError",
    "LedgerError",
}


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        names.append(pkg.__name__)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
            names.append(info.name)
    return names


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


CLASSES = _exception_classes()


def test_the_walk_finds_every_package_tree():
    names = {c.__name__ for c in CLASSES}
    assert {"StructureError", "ResultSignatureError", "SubmissionError", "ProofError"} <= names
    assert {"CommitFailedError", "UnreachableError", "FileWriteError"} <= names
    assert len(CLASSES) > 50


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_exception_is_a_foldnet_error_of_one_kind(cls):
    assert issubclass(cls, FoldnetError), f"{cls} is outside the tree"
    if cls.__name__ in ROOTS:
        return
    kind = kind_of(cls)  # raises TypeError for a class of two kinds
    assert kind is not None, f"{cls.__qualname__} has no kind (client, fault, finding)"
    error = cls("x")
    status, exit_code = status_of(error), exit_code_of(error)
    expected = {ClientError: EXIT_CLIENT, ServerFault: EXIT_FAULT, Finding: EXIT_FINDING}
    assert exit_code == expected[kind]
    if kind is ServerFault:
        assert 500 <= status < 600
    else:
        assert 400 <= status < 500
    assert re.fullmatch(r"[a-z][a-z_]*", error.code), error.code  # one spelling: snake_case


def test_package_roots_are_never_raised_themselves():
    """A root has no kind; raising one would answer 500 for what may be a caller's mistake."""
    pattern = re.compile(rf"raise ({'|'.join(sorted(ROOTS))})\(")
    hits = []
    for pkg in PACKAGES:
        for path in Path(pkg.__path__[0]).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert hits == []


def test_a_class_of_two_kinds_is_refused():
    class Both(NotFound, Unavailable):
        pass

    with pytest.raises(TypeError, match="2 kinds"):
        kind_of(Both)


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (400, "BadRequest"),
        (401, "Unauthenticated"),
        (403, "Forbidden"),
        (404, "NotFound"),
        (408, "TimedOut"),
        (409, "Conflict"),
        (413, "TooLarge"),
        (415, "UnsupportedMedia"),
        (422, "Invalid"),
        (429, "RateLimited"),
        (418, "BadRequest"),  # a 4xx of no class of its own: still the caller's mistake
        (500, "Internal"),
        (502, "Internal"),
        (503, "Unavailable"),
    ],
)
def test_a_clients_error_for_each_status(status, name):
    error = error_for_status(status, "why", code="their_code")
    assert type(error).__name__ == name
    assert error.code == "their_code" and error.detail == "why"


def test_errors_cross_a_pickle_boundary_with_their_code_and_headers():
    """Ray pickles exceptions raised in actors; the code and headers must survive."""
    from coordinator.errors import CommitFailedError
    from sims.errors import UnknownResidueError

    for error in (
        CommitFailedError("disk full", code="commit_failed", headers={"Retry-After": "1"}),
        UnknownResidueError("residue XYZ"),
    ):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error) and str(back) == str(error)
        assert (back.code, back.headers) == (error.code, error.headers)


@pytest.mark.parametrize("cls", [c for c in CLASSES if c.__name__ not in ROOTS][:200])
def test_one_mapping_answers_every_class_over_http(cls):
    """The one handler answers each class with its own status and the JSON error shape."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise cls("what was wrong; what was expected")

    r = _get(app, "/boom")
    assert r.status_code == cls.status
    assert r.json() == {"error": cls.code, "detail": "what was wrong; what was expected"}


def test_anything_else_is_a_500_without_insides():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/bug")
    def bug() -> None:
        raise KeyError("/srv/secret/path")

    r = _get(app, "/bug")
    assert r.status_code == 500 and "secret" not in r.text
    assert r.json()["error"] == "internal"


def test_database_errors_are_translated_where_they_enter(tmp_path):
    """A failing database is a fault (503 / exit 3) with what failed, not a driver traceback."""
    import sqlalchemy as sa

    from coordinator.accounts import Accounts
    from coordinator.errors import CoordinatorUnavailableError
    from coordinator.store import Store

    store = Store.open(tmp_path / "c.db")
    accounts = Accounts(tmp_path / "c.db")
    try:
        with store._engine.begin() as conn:  # the database loses its tables under us
            conn.execute(sa.text("DROP TABLE events"))
            conn.execute(sa.text("DROP TABLE labs"))
        with pytest.raises(CoordinatorUnavailableError, match=r"while reading.*no such table"):
            list(store.events())
        with pytest.raises(CoordinatorUnavailableError, match="adding a lab"):
            accounts.add_lab("lab1")
    finally:
        store.close()
        accounts.close()
