"""The volunteer actor's batch call, in-process (no Ray needed to test its contract)."""

from __future__ import annotations

import pickle

import numpy as np

from ledger.entries import PriceInputs
from sims.go import GoEngine, GoModel
from sims.spec import RunSpec
from sims.state import State
from worker.ray_actor import VolunteerWorker
from worker.result import WorkerResult
from worker.tasks import ComputeTask, TaskFailed


def test_a_failing_task_does_not_sink_its_batch(tmp_path, villin_pdb):
    model = GoModel.from_pdb(villin_pdb)
    worker = VolunteerWorker(key_path=str(tmp_path / "k"))
    start = GoEngine(model).initial_state(temperature=0.8, seed=1)
    spec = RunSpec(steps=20, segment_steps=10, report_steps=10, temperature=0.8, seed=3)
    wrong = State(positions=np.zeros((3, 3)), velocities=np.zeros((3, 3)))  # 3 atoms, not 36
    price = PriceInputs("go", 36, 20, 600, 1_700_000_000_000)
    tasks = [
        ComputeTask(b"\1" * 32, 1, model, spec, start, price),
        ComputeTask(b"\2" * 32, 2, model, spec, wrong, price),
        ComputeTask(b"\3" * 32, 3, model, spec, start, price),
    ]
    results, busy_s = worker.run_batch(tasks)
    assert busy_s > 0
    assert isinstance(results[0], WorkerResult) and isinstance(results[2], WorkerResult)
    assert isinstance(results[1], TaskFailed) and "36" in results[1].reason
    assert results[0].header.wu_id == b"\1" * 32 and results[2].header.wu_id == b"\3" * 32
    back = pickle.loads(pickle.dumps((results, busy_s)))  # what crosses the Ray boundary
    assert back[0][1] == results[1]
    assert back[0][0].header == results[0].header
