"""The one exception tree of foldnet, and the one table of what an error means to its caller.

Every error foldnet raises on purpose is a :class:`FoldnetError`, and every concrete one is
exactly one of three kinds. The kind fixes the command line's exit status; the class fixes the
HTTP status. Both are class attributes read by :func:`status_of` and :func:`exit_code_of`,
which every router and every command use, so an error means the same thing everywhere::

    FoldnetError
    ├── ClientError          the caller sent something wrong; nothing was kept       exit 2
    │   ├── BadRequest           400  malformed request, unusable file or key
    │   ├── Unauthenticated      401  missing, malformed, replayed or wrong signature
    │   ├── Forbidden            403  authenticated, but not allowed this
    │   ├── NotFound             404  no such job, system, assignment or checkpoint
    │   ├── TimedOut             408  the request's body did not arrive in time
    │   ├── Conflict             409  contradicts the current state (stale, duplicate)
    │   ├── TooLarge             413  over a size limit
    │   ├── UnsupportedMedia     415  wrong content type
    │   ├── Invalid              422  well-formed but wrong: out of range, inconsistent
    │   └── RateLimited          429  too many requests; retry after the header's seconds
    ├── ServerFault          the server, or something it relies on, failed          exit 3
    │   ├── Internal             500  a failure the caller cannot fix
    │   └── Unavailable          503  temporary (busy, unreachable, commit failed): retry
    └── Finding              verification found the data false: an audit's             exit 1
                             discrepancy, a proof or signature that does not verify  (422)

Each package keeps its own subtree under this root (``sims.errors``, ``worker.errors``,
``coordinator.errors``, ``ledger.errors``), mixing in the kind: ``class StructureError(
InputError)`` with ``InputError(SimsError, Invalid)``. Foreign exceptions (json, numpy,
SQLAlchemy, httpx, OpenMM, PDB parsing, OS errors) are translated where they enter, with
``raise ... from e``; anything that is not a :class:`FoldnetError` reaching a router or a
command is a bug, answered 500 / exit 3 without its insides.

``code`` is the stable machine-readable name an HTTP body carries (``{"error": code,
"detail": message}``); a class sets a default and a raise may name a more precise one
(``NotFound("no job ...", code="no_job")``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "EXIT_CLIENT",
    "EXIT_FAULT",
    "EXIT_FINDING",
    "BadRequest",
    "ClientError",
    "Conflict",
    "DefinitionError",
    "Finding",
    "FoldnetError",
    "Forbidden",
    "Internal",
    "Invalid",
    "NotFound",
    "RateLimited",
    "ServerFault",
    "TimedOut",
    "TooLarge",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedMedia",
    "error_for_status",
    "exit_code_of",
    "kind_of",
    "status_of",
]

EXIT_FINDING = 1
EXIT_CLIENT = 2
EXIT_FAULT = 3


class FoldnetError(Exception):
    """Base class of every error foldnet raises on purpose.

    A class outside the three kinds (a package's root, never raised itself) counts as a
    server fault: 500, exit 3.
    """

    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = EXIT_FAULT
    code: str = "internal"
    headers: Mapping[str, str] | None = None

    def __init__(
        self, *args: object, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(*args)
        if code is not None:
            self.code = code
        if headers is not None:
            self.headers = dict(headers)

    @property
    def detail(self) -> str:
        """The human message: what was wrong, what was expected, what to do."""
        return str(self)


# -- the three kinds ---------------------------------------------------------------------------


class ClientError(FoldnetError):
    """The caller's mistake: fix the request and send it again. Nothing was kept."""

    status = 400
    exit_code = EXIT_CLIENT
    code = "bad_request"


class ServerFault(FoldnetError):
    """The server, or something it relies on, failed; the caller did nothing wrong."""

    status = 500
    exit_code = EXIT_FAULT
    code = "internal"


class Finding(FoldnetError):
    """Verification ran and found the data false (an audit discrepancy, a failed proof)."""

    status = 422
    exit_code = EXIT_FINDING
    code = "verification_failed"


# -- client errors by status -------------------------------------------------------------------


class BadRequest(ClientError):
    """A malformed request, or a file or key the command cannot use."""

    status = 400
    code = "bad_request"


class Unauthenticated(ClientError):
    """No valid proof of who is asking: a missing, malformed, replayed or wrong signature."""

    status = 401
    code = "unauthenticated"


class Forbidden(ClientError):
    """Who is asking is known, and may not do this."""

    status = 403
    code = "forbidden"


class NotFound(ClientError):
    """The thing named does not exist (or is not the caller's to see)."""

    status = 404
    code = "not_found"


class TimedOut(ClientError):
    """The request's body did not arrive within the time its size allows."""

    status = 408
    code = "timeout"


class Conflict(ClientError):
    """The request contradicts the current state (already done, stale, from someone else)."""

    status = 409
    code = "conflict"


class TooLarge(ClientError):
    """Over a size limit; the message names the limit."""

    status = 413
    code = "too_large"


class UnsupportedMedia(ClientError):
    """A body in a content type this endpoint does not take."""

    status = 415
    code = "unsupported_media_type"


class Invalid(ClientError):
    """Well-formed, but wrong: out of range, inconsistent, or not what was expected."""

    status = 422
    code = "invalid"


class RateLimited(ClientError):
    """Too many requests; the ``Retry-After`` header says when to come back."""

    status = 429
    code = "rate_limited"


# -- server faults -----------------------------------------------------------------------------


class Internal(ServerFault):
    """A failure on the server's side that the caller cannot fix by retrying."""

    status = 500
    code = "internal"


class Unavailable(ServerFault):
    """A temporary failure (busy, unreachable, a commit that did not go through): retry."""

    status = 503
    code = "unavailable"


class DefinitionError(Internal, TypeError):
    """An exception class defined wrong (of two kinds): a bug in foldnet, which the error
    tree's tests find. Also a :class:`TypeError`, as a wrong class is one."""

    code = "bad_error_class"


_KINDS: tuple[type[FoldnetError], ...] = (ClientError, ServerFault, Finding)

_BY_STATUS: dict[int, type[FoldnetError]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthenticated,
        Forbidden,
        NotFound,
        TimedOut,
        Conflict,
        TooLarge,
        UnsupportedMedia,
        Invalid,
        RateLimited,
        Internal,
        Unavailable,
    )
}


def kind_of(cls: type[BaseException]) -> type[FoldnetError] | None:
    """The one kind (:class:`ClientError`, :class:`ServerFault`, :class:`Finding`) of ``cls``.

    ``None`` for a class of no kind (a package root, or a foreign exception).
    Raises :class:`DefinitionError` if ``cls`` mixes two kinds: a bug in its definition.
    """
    kinds = [k for k in _KINDS if issubclass(cls, k)]
    if len(kinds) > 1:
        names = ", ".join(k.__name__ for k in kinds)
        raise DefinitionError(
            f"{cls.__qualname__} is of {len(kinds)} kinds ({names}); expected one: derive it "
            "from one of ClientError, ServerFault, Finding"
        )
    return kinds[0] if kinds else None


def status_of(error: BaseException) -> int:
    """The HTTP status that answers ``error`` (500 for anything not a :class:`FoldnetError`)."""
    return error.status if isinstance(error, FoldnetError) else 500


def exit_code_of(error: BaseException) -> int:
    """The exit status of a command that stops on ``error``: 1 finding, 2 usage, 3 fault."""
    return error.exit_code if isinstance(error, FoldnetError) else EXIT_FAULT


def error_for_status(status: int, detail: str, *, code: str | None = None) -> FoldnetError:
    """The error a client raises for a server's ``status`` answer (its own ``code``, kept).

    A status with no class of its own becomes its nearest kind: another 4xx a
    :class:`ClientError` with that status's meaning lost, another 5xx an :class:`Internal`.
    """
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else Internal
    return cls(detail, code=code)
