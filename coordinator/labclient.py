"""A lab's client of a running ``foldnet serve``: submit, follow, download, cancel.

What ``foldnet submit/status/results/cancel URL`` use. Every failure becomes a
:class:`ServiceError` carrying the service's own ``{"error", "detail"}`` message (or what
went wrong on the way there), never an httpx traceback.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from coordinator.errors import CoordinatorError
from coordinator.plan import JobPlan

API_KEY_ENV = "FOLDNET_API_KEY"
#: A results archive may be large; anything else the service answers is small JSON.
MAX_ARCHIVE_BYTES = 4 << 30


class ServiceError(CoordinatorError):
    """The service refused a request, or could not be reached."""


def is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


class LabClient:
    """One lab's view of a service (``Authorization: Bearer <key>``)."""

    def __init__(self, url: str, api_key: str, *, timeout_s: float = 60.0) -> None:
        if not is_url(url):
            raise ServiceError(f"expected an http:// or https:// URL, got {url!r}")
        if not api_key:
            raise ServiceError(
                f"no API key: pass --api-key or set {API_KEY_ENV} (the operator creates one "
                "with foldnet lab add NAME)"
            )
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ServiceError(f"cannot reach {self._http.base_url}: {e}") from e
        if r.status_code >= 400:
            try:
                body = r.json()
                why = f"{body['error']}: {body['detail']}"
            except (ValueError, KeyError, TypeError):
                why = r.text[:300] or r.reason_phrase
            raise ServiceError(f"{method} {path} answered {r.status_code} ({why})")
        return r

    def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self._request(method, path, **kw)
        try:
            data = r.json()
        except ValueError as e:
            raise ServiceError(f"{method} {path}: the answer is not JSON") from e
        if not isinstance(data, dict):
            raise ServiceError(f"{method} {path}: expected a JSON object")
        return data

    def submit(self, job: JobPlan | dict[str, Any]) -> dict[str, Any]:
        """A :class:`~coordinator.plan.JobPlan` (or a body as ``POST /v1/jobs`` takes it);
        the answer (at once) has the job id, and the job is ``preparing``."""
        body = job.to_request() if isinstance(job, JobPlan) else job
        return self._json("POST", "/v1/jobs", json=body)

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
            raise ServiceError(f"job {prefix!r} matches {len(matches)} of your jobs")
        return matches[0]

    def download(self, job: str, out: Path) -> list[Path]:
        """Unpack a job's results archive into ``out``; the files written."""
        r = self._request("GET", f"/v1/jobs/{self.resolve(job)}/results")
        if len(r.content) > MAX_ARCHIVE_BYTES:
            raise ServiceError("the results archive is larger than 4 GiB")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        try:
            with zipfile.ZipFile(io.BytesIO(r.content)) as z:
                for name in z.namelist():
                    target = (out / name).resolve()
                    if out.resolve() not in target.parents:
                        raise ServiceError(f"the archive names a path outside {out}: {name!r}")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
                    written.append(target)
        except zipfile.BadZipFile as e:
            raise ServiceError(f"the results archive is not a zip: {e}") from e
        return written
