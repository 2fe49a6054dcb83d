"""The one way foldnet writes a file: atomic and durable (temp file, fsync, rename, fsync dir).

A reader sees the old file or the new one, never half of one, and a crash right after the
call cannot lose the rename. Used for everything foldnet writes: ledger exports and keys,
a lab's results, a volunteer's saved progress, structures.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
from pathlib import Path

from foldnet.errors import Internal

__all__ = ["FileWriteError", "atomic_write", "remove_written"]


class FileWriteError(Internal):
    """A file could not be written (no space, no permission, not a folder); nothing changed."""

    code = "cannot_write"


def atomic_write(
    path: str | os.PathLike[str], data: bytes | str, *, mode: int | None = None
) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` through a temporary file beside it.

    ``mode=None`` gives the file 0666 less the process's umask, as ``open()`` would (0644
    under the usual umask 022: a lab's results are readable by its group). An explicit
    ``mode`` is set exactly, before any byte is written, so a private key (0600) is never
    readable by others, even for a moment. Missing parent folders are created.
    Raises :class:`FileWriteError` (the ``OSError`` as its cause); no temporary file is left.
    """
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    folder = target.parent
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    tmp: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            tmp = folder / _temporary_name(target.name, secrets.token_hex(6))
            try:  # the kernel applies the umask to 0o666; an explicit mode starts private
                fd = os.open(tmp, flags, 0o666 if mode is None else 0o600)
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(f"no free temporary name beside {target}")
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise FileWriteError(f"cannot write {target}: {e.strerror or e}") from e
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        raise
    _fsync_dir(folder)
    return target


def _temporary_name(name: str, tag: str) -> str:
    return f".{name}.{tag}.tmp"


def remove_written(path: str | os.PathLike[str]) -> None:
    """Remove a file :func:`atomic_write` wrote, and the temporary files of writes to it that
    a killed process left behind (a SIGKILL between open and rename cannot clean up). Only
    for a file nobody is writing any more: a live write's temporary file would go too."""
    target = Path(path)
    target.unlink(missing_ok=True)
    for left in target.parent.glob(_temporary_name(glob.escape(target.name), "*")):
        with contextlib.suppress(OSError):
            left.unlink()


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; some file systems cannot fsync a folder, which is fine."""
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
