"""Ray on loopback only, for ``foldnet demo`` and the tests.

Ray turns ``127.0.0.1`` in an address into the host's "remotely reachable" IP unless its
cluster mode is off (``ray._private.services.resolve_ip_for_localhost``); a local demo or test
must never talk to anything but loopback, so :func:`loopback_only` switches that off for this
process and, through the environment, for every Ray process it starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import ray
from ray._private import ray_constants

LOOPBACK = "127.0.0.1"


def loopback_only() -> None:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray_constants.ENABLE_RAY_CLUSTER = False


@contextmanager
def _environment_restored() -> Iterator[None]:
    """Undo what ``ray.init`` and :func:`loopback_only` leave in this process's environment
    (``RAY_AUTH_MODE``, ``PYTHONBREAKPOINT``, cluster mode...), so a later Ray in the same
    process, with another HOME, starts clean."""
    saved = dict(os.environ)
    cluster = ray_constants.ENABLE_RAY_CLUSTER
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)
        ray_constants.ENABLE_RAY_CLUSTER = cluster


@contextmanager
def local_ray(
    *, num_cpus: int, resources: Mapping[str, float], tmpdir: str | None = None
) -> Iterator[None]:
    """``ray.init`` bound to 127.0.0.1 with the given custom resources; always shut down.

    Without ``tmpdir``, Ray's files go to a fresh short folder under /tmp (its socket paths
    must fit in 107 bytes), removed afterwards.
    """
    own = tmpdir is None
    tmpdir = tmpdir or tempfile.mkdtemp(prefix="foldnet-ray-")
    with _environment_restored():
        loopback_only()
        ray.init(
            _node_ip_address=LOOPBACK,
            num_cpus=num_cpus,
            resources=dict(resources),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _temp_dir=tmpdir,
        )
        try:
            yield
        finally:
            ray.shutdown()
            if own:
                shutil.rmtree(tmpdir, ignore_errors=True)
