"""Request bodies read within a size and a time that the size allows.

A slow sender holds a connection and a buffer for as long as it likes unless its body has
a deadline; the deadline grows with the size the request may need, at the service's minimum
upload rate, so that a large honest upload on a slow line still gets through.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import anyio
from fastapi import Request
from starlette.requests import ClientDisconnect

from foldnet.errors import BadRequest, TimedOut, TooLarge


@dataclass(frozen=True, slots=True)
class BodyReader:
    """``body_timeout_s`` for any body, plus a second per ``min_upload_rate`` bytes."""

    body_timeout_s: float
    min_upload_rate: float

    def timeout(self, limit: int) -> float:
        """Seconds a body of up to ``limit`` bytes may take to arrive."""
        return self.body_timeout_s + limit / self.min_upload_rate

    async def read(self, request: Request, limit: int) -> tuple[bytearray, str]:
        """(body, its SHA-256 hex) read from the stream, refused past ``limit`` bytes (413),
        after :meth:`timeout` (408), or when the client goes away."""
        timeout = self.timeout(limit)
        data = bytearray()
        h = hashlib.sha256()
        with anyio.move_on_after(timeout) as timer:
            try:
                async for chunk in request.stream():
                    if len(data) + len(chunk) > limit:
                        raise TooLarge(
                            f"the body is over {limit:,} bytes, the most this request can need",
                            code="too_large",
                        )
                    data += chunk
                    h.update(chunk)
            except ClientDisconnect as e:
                raise BadRequest(
                    "the client went away before its body ended", code="disconnected"
                ) from e
        if timer.cancelled_caught:
            raise TimedOut(
                f"the body did not arrive within {timeout:.0f} s ({len(data):,} bytes came); "
                "expected at least the service's minimum upload rate",
                code="body_timeout",
            )
        return data, h.hexdigest()
