"""A lab's client of a running ``foldnet serve``: submit, follow, download, cancel.

What ``foldnet submit/status/results/cancel URL`` use. It is a
:class:`~foldnet.httpclient.HttpClient` with the lab's key: a refusal arrives as the
:mod:`foldnet.errors` class of its status with the service's own message, never as an httpx
traceback.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from coordinator.errors import UsageError
from coordinator.plan import JobPlan
from foldnet.errors import Invalid
from foldnet.files import atomic_write
from foldnet.httpclient import HttpClient, InvalidAnswerError, RetryPolicy

API_KEY_ENV = "FOLDNET_API_KEY"
#: A results archive may be large; anything else the service answers is small JSON.
MAX_ARCHIVE_BYTES = 4 << 30


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


class LabClient:
    """One lab's view of a service (``Authorization: Bearer <key>``)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not is_url(url):
            raise UsageError(f"expected an http:// or https:// URL, got {url!r}")
        if not api_key:
            raise UsageError(
                f"no API key: pass --api-key or set {API_KEY_ENV} (the operator creates one "
                "with foldnet lab add NAME)"
            )
        self._http = HttpClient(
            url,
            timeout_s=timeout_s,
            retry=RetryPolicy(attempts=3, backoff_s=0.5, max_backoff_s=10.0),
            headers={"Authorization": f"Bearer {api_key}"},
            transport=transport,
            sleep=sleep,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        data = self._http.json(method, path, **kw)
        if not isinstance(data, dict):
            raise InvalidAnswerError(f"{method} {path}: expected a JSON object")
        return data

    def submit(self, job: JobPlan | dict[str, Any]) -> dict[str, Any]:
        """A :class:`~coordinator.plan.JobPlan` (or a body as ``POST /v1/jobs`` takes it);
        the answer (at once) has the job id, and the job is ``preparing``."""
        body = job.to_request() if isinstance(job, JobPlan) else job
        return self._json("POST", "/v1/jobs", doc=body)

    def jobs(self) -> Iterator[dict[str, Any]]:
        cursor: int | None = 0
        while cursor is not None:
            page = self._json("GET", "/v1/jobs", params={"limit": 100, "cursor": cursor})
            yield from page.get("jobs", [])
            cursor = page.get("next")

    def job(self, job: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{self.resolve(job)}")

    def cancel(self, job: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{self.resolve(job)}/cancel")

    def resolve(self, prefix: str) -> str:
        """A job id from the start of one (as the status table shows it)."""
        if len(prefix) == 64:
            return prefix
        matches = [j["job"] for j in self.jobs() if j["job"].startswith(prefix)]
        if len(matches) != 1:
            raise UsageError(f"job {prefix!r} matches {len(matches)} of your jobs")
        return matches[0]

    def download(self, job: str, out: Path) -> list[Path]:
        """Unpack a job's results archive into ``out``; the files written."""
        _status, data = self._http.get_bytes(
            f"/v1/jobs/{self.resolve(job)}/results", limit=MAX_ARCHIVE_BYTES
        )
        root = out.resolve()
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = z.namelist()
                for name in names:  # every path checked before anything is written
                    if root not in (root / name).resolve().parents:
                        raise Invalid(f"the archive names a path outside {out}: {name!r}")
                return [
                    atomic_write((root / n).resolve(), z.read(n))
                    for n in names
                    if not n.endswith("/")
                ]
        except zipfile.BadZipFile as e:
            raise InvalidAnswerError(f"the results archive is not a zip: {e}") from e
