"""Who may use the HTTP service: labs (API keys, stored hashed) and registered volunteers.

Tables of their own in ``accounts.db`` beside the coordinator's database (or in the folder's
PostgreSQL database, :mod:`coordinator.databases`), through SQLAlchemy Core like
:mod:`coordinator.store`, so ``foldnet lab add`` can add a lab while a service runs (the
coordinator's own SQLite database belongs to the one process holding its lock).

Lab keys are 256-bit random tokens, shown once and stored as SHA-256: a salted slow hash
protects guessable passwords, but a random token has nothing to guess, and a plain hash
lets a request be looked up by its key in one indexed read.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from coordinator.databases import Databases
from coordinator.errors import CoordinatorUnavailableError, MissingError, ProtocolError, UsageError
from coordinator.store import database_errors, open_engine
from ledger.backend import redact_url

KEY_PREFIX = "fnlab_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

metadata = sa.MetaData()
labs = sa.Table(
    "labs",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)
lab_jobs = sa.Table(
    "lab_jobs",
    metadata,
    sa.Column("job", sa.String(64), primary_key=True),
    sa.Column("lab", sa.String(64), nullable=False, index=True),
    sa.Column("submitted_at", sa.Float, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
)
volunteers = sa.Table(
    "volunteers",
    metadata,
    sa.Column("key", sa.LargeBinary(32), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("registered_at", sa.Float, nullable=False),
)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LabJob:
    job: str
    lab: str
    submitted_at: float
    name: str


class Accounts:
    """Labs, their jobs, and registered volunteers. Every write commits before it returns."""

    def __init__(self, url_or_path: str | Path) -> None:
        text = str(url_or_path)
        # Shared by the service and the operator's `foldnet lab` commands: wait for a lock.
        self._engine = open_engine(url_or_path, busy_timeout_ms=5000)
        try:
            metadata.create_all(self._engine)
        except SQLAlchemyError as e:
            raise CoordinatorUnavailableError(
                f"cannot open the accounts database {redact_url(text)}: "
                f"{str(getattr(e, 'orig', None) or e).splitlines()[0][:300]}"
            ) from e

    @classmethod
    def in_folder(cls, workdir: str | Path) -> Accounts:
        d = Path(workdir)
        d.mkdir(parents=True, exist_ok=True)
        return cls(Databases.of_folder(d).accounts)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Accounts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- labs ------------------------------------------------------------------------------

    @database_errors("adding a lab")
    def add_lab(self, name: str) -> str:
        """Create a lab and return its API key (the only time the key is ever visible)."""
        if not _NAME.match(name):
            raise UsageError(
                f"lab name {name[:80]!r} is not allowed: use 1-64 letters, digits, '_', '.' "
                "or '-', starting with a letter or digit"
            )
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    labs.insert().values(
                        name=name, key_sha256=key_hash(key), created_at=time.time(), revoked=False
                    )
                )
        except IntegrityError as e:
            raise ProtocolError(f"a lab named {name!r} already exists") from e
        return key

    @database_errors("revoking a lab")
    def revoke_lab(self, name: str) -> None:
        """Withdraw a lab's key (a running service stops accepting it within
        ``LAB_KEY_CACHE_S``). Its jobs and ledger entries stay."""
        with self._engine.begin() as conn:
            done = conn.execute(
                labs.update().where(labs.c.name == name, labs.c.revoked.is_(False)),
                {"revoked": True},
            )
        if done.rowcount != 1:
            raise MissingError(f"no lab named {name!r} with a valid key (see foldnet lab list)")

    @database_errors("looking up a lab key")
    def lab_for_key(self, key: str) -> str | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(labs.c.name).where(
                    labs.c.key_sha256 == key_hash(key), labs.c.revoked.is_(False)
                )
            ).first()
        return None if row is None else str(row.name)

    @database_errors("listing labs")
    def lab_names(self) -> list[str]:
        with self._engine.connect() as conn:
            return [str(r.name) for r in conn.execute(sa.select(labs.c.name).order_by(labs.c.name))]

    # -- jobs of labs ----------------------------------------------------------------------

    @database_errors("recording a job")
    def add_job(self, job: str, lab: str, name: str, submitted_at: float) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                lab_jobs.insert().values(job=job, lab=lab, name=name, submitted_at=submitted_at)
            )

    @database_errors("listing jobs")
    def jobs(self) -> list[LabJob]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(lab_jobs).order_by(lab_jobs.c.submitted_at))
            return [LabJob(r.job, r.lab, r.submitted_at, r.name) for r in rows]

    # -- volunteers ------------------------------------------------------------------------

    @database_errors("registering a volunteer")
    def add_volunteer(self, key: bytes, name: str) -> bool:
        """Record a volunteer; False if it was registered already."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    volunteers.insert().values(key=key, name=name, registered_at=time.time())
                )
        except IntegrityError:
            return False
        return True

    @database_errors("listing volunteers")
    def volunteer_keys(self) -> set[bytes]:
        with self._engine.connect() as conn:
            return {bytes(r.key) for r in conn.execute(sa.select(volunteers.c.key))}
