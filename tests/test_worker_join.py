"""``foldnet worker join``: the ``ray start`` command it runs for a volunteer.

A real join is not run here: ``ray start --address`` resolves a loopback address to this
host's external IP and its servers bind to all interfaces, which tests on a shared machine
must not do. The node it starts carries the same ``vol:<id>`` resource and ``volunteer-id``
label that tests/test_ray_cluster.py gives its volunteer nodes (through
``ray.cluster_utils``, on loopback), and the pool there schedules by exactly that resource.
"""

from __future__ import annotations

import json
import subprocess
import sys

from worker.cli import join_command
from worker.identity import Identity


def test_join_command_labels_the_node_with_the_volunteer_key():
    cmd = join_command("10.1.2.3:6379", volunteer_id="e66f42ca2a12e40d", cpus=2, node_ip=None)
    assert cmd[1:3] == ["start", "--address=10.1.2.3:6379"]
    assert "--num-cpus=2" in cmd
    resources = json.loads(next(c for c in cmd if c.startswith("--resources="))[12:])
    assert resources == {"vol:e66f42ca2a12e40d": 1}
    assert "--labels=volunteer-id=e66f42ca2a12e40d" in cmd
    assert not any(c.startswith("--node-ip-address") for c in cmd)
    with_ip = join_command("h:1", volunteer_id="x", cpus=1, node_ip="192.0.2.7")
    assert with_ip[-1] == "--node-ip-address=192.0.2.7"


def _foldnet(*args: str, home) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from coordinator.cli import main; main()", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def test_join_refuses_bad_cpu_counts_and_unsafe_keys_before_starting_anything(tmp_path):
    proc = _foldnet("worker", "join", "127.0.0.1:6379", "--cpus", "0", home=tmp_path)
    assert proc.returncode == 2 and "--cpus must be between 1 and" in proc.stderr
    key = tmp_path / "k.key"
    Identity.load_or_create(key)
    key.chmod(0o644)
    proc = _foldnet("worker", "join", "127.0.0.1:6379", "--key", str(key), home=tmp_path)
    assert proc.returncode == 2 and "chmod 600" in proc.stderr
    assert "Traceback" not in proc.stderr
