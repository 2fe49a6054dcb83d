"""Where a coordinator folder keeps its state: SQLite files inside it (the zero-setup
default), or PostgreSQL databases named by URL and remembered in the folder.

``foldnet serve DIR --db postgresql://user@host/foldnet`` writes ``DIR/databases.json``
(mode 0600: a URL may carry a password, though ``~/.pgpass`` or ``PGPASSWORD`` keep it out),
so every later command on the folder (``foldnet run``, ``status``, ``results``, ``lab add``)
opens the same databases without being told again, and a different URL for a folder that
already has one is refused rather than silently starting an empty coordinator. The folder
still holds what is not a database: the ledger's signing key, the lock, the class list.

The coordinator's store, the accounts and (unless ``--ledger-db`` names another) the ledger
share one database: their tables do not overlap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from coordinator.errors import UsageError
from foldnet.files import atomic_write
from ledger.backend import is_postgres_url, redact_url

FILE = "databases.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Databases:
    """The locations (a SQLite file's path, or a URL) of one coordinator's databases."""

    coordinator: str
    accounts: str
    ledger: str

    @property
    def sqlite(self) -> bool:
        """True when the coordinator's own state is in a SQLite file in the folder."""
        return "://" not in self.coordinator

    @classmethod
    def of_folder(
        cls, workdir: str | Path, *, db: str | None = None, ledger_db: str | None = None
    ) -> Databases:
        """The folder's databases; ``db``/``ledger_db`` (given by an option) are checked
        against what the folder remembers, and remembered if it remembers nothing yet."""
        d = Path(workdir)
        remembered = _read(d / FILE)
        if db is None and ledger_db is not None:
            db = remembered.get("db")
        if db is not None:
            db = _normalise(db)
            ledger_db = _normalise(ledger_db) if ledger_db is not None else db
            wanted = {"db": db, "ledger_db": ledger_db}
            if remembered and remembered != wanted:
                raise UsageError(
                    f"{d} already keeps its state in {_show(remembered)}, not in "
                    f"{_show(wanted)}; give the same --db and --ledger-db (or none), or use "
                    "another folder for another database"
                )
            if not remembered:
                for name in ("coordinator.db", "ledger.db"):
                    if (d / name).exists():
                        raise UsageError(
                            f"{d} already holds a SQLite coordinator ({name}); foldnet does "
                            "not move state between databases: use a new folder for "
                            f"{redact_url(db)}"
                        )
                atomic_write(d / FILE, json.dumps(wanted, indent=2) + "\n", mode=0o600)
            remembered = wanted
        if remembered:
            return cls(
                coordinator=remembered["db"],
                accounts=remembered["db"],
                ledger=remembered["ledger_db"],
            )
        return cls(
            coordinator=str(d / "coordinator.db"),
            accounts=str(d / "accounts.db"),
            ledger=str(d / "ledger.db"),
        )


def _normalise(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean psycopg 3, the driver foldnet ships."""
    if not is_postgres_url(url):
        raise UsageError(
            f"--db expects a PostgreSQL URL such as postgresql://user@127.0.0.1/foldnet, got "
            f"{redact_url(url)[:200]!r}; without --db the folder's own SQLite files are used"
        )
    return "postgresql+psycopg://" + url.split("://", 1)[1]


def _show(urls: dict[str, str]) -> str:
    db, ledger = redact_url(urls["db"]), redact_url(urls["ledger_db"])
    return db if db == ledger else f"{db} (ledger: {ledger})"


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UsageError(
            f"cannot read {path}: {e}; expected the JSON foldnet wrote there "
            '({"db": URL, "ledger_db": URL})'
        ) from e
    if (
        not isinstance(data, dict)
        or set(data) != {"db", "ledger_db"}
        or not all(isinstance(v, str) and is_postgres_url(v) for v in data.values())
    ):
        raise UsageError(
            f'{path} is not {{"db": URL, "ledger_db": URL}} with PostgreSQL URLs; fix or remove it'
        )
    return {str(k): str(v) for k, v in data.items()}
