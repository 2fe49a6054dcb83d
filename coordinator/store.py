"""The coordinator's durable state, through SQLAlchemy Core: SQLite (WAL) by default, the
same code on PostgreSQL by URL.

Event sourcing: every scheduler event is committed to ``events`` *before* the scheduler acts
on it, so a coordinator killed at any point replays the log on restart and reaches the same
state. Content-addressed blobs (states, systems) and returned results sit beside it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from coordinator.codec import decode_event, encode_event
from coordinator.errors import CoordinatorError
from coordinator.scheduler import Event
from sims.state import State
from worker.result import ResultHeader, WorkerResult

metadata = sa.MetaData()
events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("body", sa.Text, nullable=False),
)
states = sa.Table(
    "states",
    metadata,
    sa.Column("digest", sa.LargeBinary(32), primary_key=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("n_atoms", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # positions then velocities, <f8
)
systems = sa.Table(
    "systems",
    metadata,
    sa.Column("digest", sa.LargeBinary(32), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job", sa.String(64), primary_key=True),
    sa.Column("lab", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
)
results = sa.Table(
    "results",
    metadata,
    sa.Column("replica", sa.Integer, primary_key=True),
    sa.Column("wu_id", sa.LargeBinary(32), nullable=False, index=True),
    sa.Column("header", sa.Text, nullable=False),
    sa.Column("signature", sa.LargeBinary(64), nullable=False),
    sa.Column("arrays", sa.LargeBinary, nullable=False),  # .npz, loaded without pickle
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


def _encode_header(h: ResultHeader) -> str:
    return h.canonical().decode()


def _decode_header(text: str) -> ResultHeader:
    d = json.loads(text)
    return ResultHeader(
        wu_id=bytes.fromhex(d["wu_id"]),
        worker_key=bytes.fromhex(d["worker_key"]),
        determinism=d["determinism"],
        boundary_digests=tuple(bytes.fromhex(x) for x in d["boundary_digests"]),
        segment_root=bytes.fromhex(d["segment_root"]),
        final_digest=bytes.fromhex(d["final_digest"]),
        frames_digest=bytes.fromhex(d["frames_digest"]),
        observables_digest=bytes.fromhex(d["observables_digest"]),
        n_atoms=int(d["n_atoms"]),
        wall_time_s=float(d["wall_time_s"]),
        version=int(d["version"]),
    )


class Store:
    """Durable coordinator state. Every write method commits before it returns."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        try:
            metadata.create_all(engine)
        except SQLAlchemyError as e:
            raise CoordinatorError(f"cannot open the coordinator database: {e}") from e

    @classmethod
    def open(cls, url_or_path: str | Path) -> Store:
        """A database URL (``postgresql://...``) or a path to a SQLite file."""
        text = str(url_or_path)
        url = text if "://" in text else f"sqlite:///{Path(text).resolve()}"
        engine = sa.create_engine(url, future=True)
        if engine.dialect.name == "sqlite":
            sa_event.listen(engine, "connect", _sqlite_pragmas)
        return cls(engine)

    def close(self) -> None:
        self._engine.dispose()

    # -- events ----------------------------------------------------------------------------

    def append_events(self, evs: list[Event]) -> None:
        if not evs:
            return
        with self._engine.begin() as conn:
            conn.execute(events.insert(), [{"body": encode_event(e)} for e in evs])

    def events(self) -> Iterator[Event]:
        with self._engine.connect() as conn:
            for (body,) in conn.execute(sa.select(events.c.body).order_by(events.c.seq)):
                yield decode_event(body)

    # -- content-addressed blobs -----------------------------------------------------------

    def put_state(self, state: State) -> bytes:
        digest = state.digest()
        with self._engine.begin() as conn:
            exists = conn.execute(sa.select(states.c.digest).where(states.c.digest == digest))
            if exists.first() is None:
                data = (
                    state.positions.astype("<f8").tobytes()
                    + state.velocities.astype("<f8").tobytes()
                )
                conn.execute(
                    states.insert().values(
                        digest=digest, step=state.step, n_atoms=state.n_atoms, data=data
                    )
                )
        return digest

    def state(self, digest: bytes) -> State:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(states).where(states.c.digest == digest)).first()
        if row is None:
            raise CoordinatorError(f"no stored state {digest.hex()[:16]}")
        arr = np.frombuffer(row.data, dtype="<f8").reshape(2, row.n_atoms, 3)
        st = State(positions=arr[0], velocities=arr[1], step=row.step)
        if st.digest() != digest:
            raise CoordinatorError(f"stored state {digest.hex()[:16]} is corrupt")
        return st

    def put_system(self, digest: bytes, data: bytes) -> None:
        with self._engine.begin() as conn:
            exists = conn.execute(sa.select(systems.c.digest).where(systems.c.digest == digest))
            if exists.first() is None:
                conn.execute(systems.insert().values(digest=digest, data=data))

    def system(self, digest: bytes) -> bytes:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(systems.c.data).where(systems.c.digest == digest)).first()
        if row is None:
            raise CoordinatorError(f"no stored system {digest.hex()[:16]}")
        return bytes(row.data)

    # -- jobs and results ------------------------------------------------------------------

    def put_job(self, job: str, lab: str, description: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                jobs.insert().values(job=job, lab=lab, description=json.dumps(description))
            )

    def job(self, job: str) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.job == job)).first()
        return None if row is None else {"lab": row.lab, **json.loads(row.description)}

    def put_result(self, replica: int, result: WorkerResult) -> None:
        buf = io.BytesIO()
        arrays: dict[str, np.ndarray] = {
            "positions": result.positions,
            "velocities": result.velocities,
            "frames": result.frames,
            "frame_steps": result.frame_steps,
        }
        arrays |= {f"obs_{k}": np.asarray(v) for k, v in result.observables.items()}
        np.savez(buf, allow_pickle=False, **arrays)
        with self._engine.begin() as conn:
            conn.execute(
                results.insert().values(
                    replica=replica,
                    wu_id=result.header.wu_id,
                    header=_encode_header(result.header),
                    signature=result.signature,
                    arrays=buf.getvalue(),
                )
            )

    def signed_header(self, replica: int) -> tuple[ResultHeader, bytes]:
        """A stored result's header and signature, without loading its arrays."""
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(results.c.header, results.c.signature).where(results.c.replica == replica)
            ).first()
        if row is None:
            raise CoordinatorError(f"no stored result for replica {replica}")
        return _decode_header(row.header), bytes(row.signature)

    def result(self, replica: int) -> WorkerResult:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(results).where(results.c.replica == replica)).first()
        if row is None:
            raise CoordinatorError(f"no stored result for replica {replica}")
        with np.load(io.BytesIO(row.arrays), allow_pickle=False) as npz:
            arrays = {k: np.array(npz[k]) for k in npz.files}
        obs = {k[4:]: v for k, v in arrays.items() if k.startswith("obs_")}
        return WorkerResult(
            _decode_header(row.header),
            bytes(row.signature),
            arrays["positions"],
            arrays["velocities"],
            arrays["frames"],
            arrays["frame_steps"],
            obs,
        )
