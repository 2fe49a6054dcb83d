"""Shared builders for the ledger tests: a small, realistic ledger with known keys."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import (
    Attestation,
    CreditGranted,
    JobSubmitted,
    Log,
    PriceInputs,
    ResultValidated,
    Store,
    VolunteerRegistered,
    export_tiles,
    public_key_bytes,
)
from ledger.backend import is_postgres_url
from ledger.entries import Record, encode_record
from ledger.log import Admission
from ledger.rules import price_attestation

ORIGIN = "foldnet.test/ledger"

#: The ``new_db`` fixture (tests/conftest.py): an empty database of the test's backend.
NewDb = Callable[[str], Path | str]


def digest(*parts: object) -> bytes:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
    return h.digest()


class Clock:
    """A deterministic ledger clock in ms: each call advances by ``step``."""

    def __init__(self, start: int = 1_700_000_000_000, step: int = 1_000) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> int:
        self.now += self.step
        return self.now


@contextlib.contextmanager
def raw_sql(location: Path | str) -> Iterator[Callable[..., list[tuple[object, ...]]]]:
    """``run(sql, *args)`` on the ledger's database itself, as its operator could (``?``
    placeholders on both backends), committed when the block exits."""
    if is_postgres_url(location):
        import psycopg

        url = "postgresql://" + str(location).split("://", 1)[1]
        with psycopg.connect(url, autocommit=True) as pg:

            def run_pg(sql: str, *args: object) -> list[tuple[object, ...]]:
                cur = pg.execute(sql.replace("?", "%s"), list(args) or None)  # type: ignore[call-overload]
                return cur.fetchall() if cur.description is not None else []

            yield run_pg
        return
    db = sqlite3.connect(location)
    try:

        def run_sqlite(sql: str, *args: object) -> list[tuple[object, ...]]:
            return db.execute(sql, args).fetchall()

        yield run_sqlite
        db.commit()
    finally:
        db.close()


def tamper(location: Path | str, *statements: tuple[str, tuple[object, ...]]) -> None:
    """What an operator with database access can do: switch the append-only triggers off
    (SQLite: drop them; PostgreSQL: a superuser's ``session_replication_role``) and edit."""
    with raw_sql(location) as run:
        if is_postgres_url(location):
            run("SET session_replication_role = replica")
        else:
            for (name,) in run("SELECT name FROM sqlite_master WHERE type='trigger'"):
                run(f"DROP TRIGGER {name}")
        for sql, args in statements:
            run(sql, *args)


def stored_entry(location: Path | str, idx: int) -> bytes:
    with raw_sql(location) as run:
        ((data,),) = run("SELECT data FROM entries WHERE idx=?", idx)
    return bytes(data)  # type: ignore[call-overload]


@dataclass
class Built:
    path: Path | str
    log_key: Ed25519PrivateKey
    volunteers: list[Ed25519PrivateKey]
    job_id: bytes
    wu_ids: list[bytes] = field(default_factory=list)

    def volunteer_pub(self, i: int) -> bytes:
        return public_key_bytes(self.volunteers[i])


def spec_digest_of(job_id: bytes) -> bytes:
    """The spec digest the helpers' job ``job_id`` is submitted with."""
    return digest("spec", job_id)


def make_result(
    built: Built, wu: int, signers: list[int], *, issued_at_ms: int, engine: str = "go"
) -> ResultValidated:
    """A validated result whose workers signed exactly the price inputs the entry states."""
    wu_id = digest("wu", wu)
    price = PriceInputs(
        engine=engine, n_particles=36, steps=100_000, deadline_s=3600, issued_at_ms=issued_at_ms
    )
    atts = tuple(
        Attestation.create(
            private_key=built.volunteers[i],
            wu_id=wu_id,
            result_digest=digest("result", wu, i),
            final_state_digest=digest("final", wu),
            price=price,
        )
        for i in signers
    )
    return ResultValidated(
        wu_id=wu_id,
        job_id=built.job_id,
        engine=engine,
        n_particles=36,
        steps=100_000,
        deadline_s=3600,
        attestations=atts,
        spec_digest=spec_digest_of(built.job_id),
    )


def build_ledger(
    path: Path,
    *,
    n_volunteers: int = 3,
    n_wus: int = 12,
    checkpoint_every: int = 10,
    admission: Admission | None = None,
    log_key: Ed25519PrivateKey | None = None,
    seed: int = 0,
) -> Built:
    """A ledger: volunteers, one job, ``n_wus`` validated results (2 signers) with credits.

    Publishes a final checkpoint, so the whole log is covered by one.
    """
    key = log_key or Ed25519PrivateKey.generate()
    vols = [Ed25519PrivateKey.generate() for _ in range(n_volunteers)]
    clock = Clock()
    built = Built(path=path, log_key=key, volunteers=vols, job_id=digest("job", seed))
    with Log.open(
        path,
        origin=ORIGIN,
        signing_key=key,
        checkpoint_every=checkpoint_every,
        clock=clock,
        admission=admission,
    ) as log:
        log.append_batch(
            [
                VolunteerRegistered(volunteer_key=public_key_bytes(v), name=f"vol{i}")
                for i, v in enumerate(vols)
            ]
        )
        log.append(
            JobSubmitted(job_id=built.job_id, lab="lab-a", spec_digest=spec_digest_of(built.job_id))
        )
        pairs = itertools.cycle(itertools.combinations(range(n_volunteers), 2))
        for wu in range(n_wus):
            issued = clock.now
            result = make_result(built, wu, list(next(pairs)), issued_at_ms=issued)
            log.record_validated_result(result)
            built.wu_ids.append(result.wu_id)
        log.publish_checkpoint()
    return built


# --------------------------------------------------------------------------- tile exports

GHOST_CREDIT = 2 * 10**12


def export(built: Built, out: Path) -> int:
    """Export ``built``'s log as C2SP tlog-tiles into ``out``; return the tree size."""
    with Store.open_readonly(built.path) as store:
        return export_tiles(store, out).tree_size


@dataclass(frozen=True)
class Ghost:
    volunteer_key: bytes
    entries: tuple[bytes, ...]


def ghost_entries(*, at_ms: int = 1_900_000_000_000) -> Ghost:
    """Four well-formed, rule-abiding records no log ever signed: a volunteer registers, a job
    is submitted, the volunteer's result is validated and credited ``GHOST_CREDIT`` (exactly
    what formula v1 gives: openmm, 10**6 particles, 4 * 10**9 steps, no quick-return bonus)."""
    ghost = Ed25519PrivateKey.generate()
    job_id, wu_id = digest("ghost job"), digest("ghost wu")
    price = PriceInputs(
        engine="openmm",
        n_particles=1_000_000,
        steps=4_000_000_000,
        deadline_s=3600,
        issued_at_ms=at_ms,
    )
    attestation = Attestation.create(
        private_key=ghost,
        wu_id=wu_id,
        result_digest=digest("ghost result"),
        final_state_digest=digest("ghost final"),
        price=price,
    )
    result = ResultValidated(
        wu_id=wu_id,
        job_id=job_id,
        engine="openmm",
        n_particles=1_000_000,
        steps=4_000_000_000,
        deadline_s=3600,
        attestations=(attestation,),
        spec_digest=spec_digest_of(job_id),
    )
    amount = price_attestation(result, attestation, validated_at_ms=at_ms, version=1)
    assert amount == GHOST_CREDIT
    entries = (
        VolunteerRegistered(volunteer_key=public_key_bytes(ghost), name="ghost"),
        JobSubmitted(job_id=job_id, lab="ghost-lab", spec_digest=spec_digest_of(job_id)),
        result,
        CreditGranted(
            volunteer_key=public_key_bytes(ghost), wu_id=wu_id, formula_version=1, amount=amount
        ),
    )
    return Ghost(
        volunteer_key=public_key_bytes(ghost),
        entries=tuple(encode_record(Record(timestamp_ms=at_ms, entry=e)) for e in entries),
    )


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` as static files on 127.0.0.1 (an ephemeral port), as any web server
    would serve a tile export; yield its URL. The server is stopped on exit."""
    handler = functools.partial(_QuietFiles, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
