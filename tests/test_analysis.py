"""Markov state models of a job's results (coordinator.analysis, ``foldnet analyze``): the MSM
recovers a known chain's first-passage times; a real results folder of a short Go run is
analysed end to end, from the folder, from the zip and from the command line; bad data is a
named error, never a traceback; the bootstrap is seeded."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from coordinator.analysis import (
    AnalysisParams,
    analysis_files,
    analyze,
    direct_mfpt,
    load_results,
    markov_analysis,
    write_analysis,
)
from coordinator.bundle import plain_go_files
from coordinator.cli import app
from coordinator.errors import AnalysisError
from foldnet.files import atomic_write
from sims.go import GoEngine
from sims.spec import RunSpec

#: A four-state chain: unfolded 0 <-> 1 <-> 2 <-> 3 folded, with each state's Q.
CHAIN = np.array(
    [
        [0.97, 0.03, 0.00, 0.00],
        [0.05, 0.85, 0.10, 0.00],
        [0.00, 0.10, 0.80, 0.10],
        [0.00, 0.00, 0.02, 0.98],
    ]
)
CHAIN_Q = np.array([0.2, 0.62, 0.68, 0.9])
FRAME_STEPS = 10


def _sample_chain(n_traj: int, length: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    cum = np.cumsum(CHAIN, axis=1)
    out = []
    for k in range(n_traj):
        x = np.empty(length, dtype=np.int32)
        x[0] = k % 4
        u = rng.random(length)
        for i in range(1, length):
            x[i] = min(int(np.searchsorted(cum[x[i - 1]], u[i])), 3)
        out.append(x)
    return out


def _hitting_time(start: int, target: int) -> float:
    """Mean first passage start -> target of CHAIN, in steps: (I - T restricted to the
    states other than the target) m = 1."""
    rest = [s for s in range(4) if s != target]
    m = np.linalg.solve(np.eye(3) - CHAIN[np.ix_(rest, rest)], np.ones(3))
    return float(m[rest.index(start)]) * FRAME_STEPS


@pytest.fixture(scope="module")
def chain() -> list[np.ndarray]:
    return _sample_chain(20, 4000, seed=5)


def test_msm_recovers_the_analytic_mfpt_of_a_known_chain(chain):
    r = markov_analysis(
        chain,
        [CHAIN_Q[d] for d in chain],
        frame_steps=FRAME_STEPS,
        params=AnalysisParams(lag=1, bootstrap=50),
    )
    fold, unfold = _hitting_time(0, 3), _hitting_time(3, 0)  # 966.7 and 2500 steps
    assert r.folded == (3,) and r.unfolded == (0,)
    assert r.folding.low is not None and r.folding.high is not None
    assert r.unfolding.low is not None and r.unfolding.high is not None
    assert r.folding.low <= fold <= r.folding.high, (r.folding, fold)
    assert r.unfolding.low <= unfold <= r.unfolding.high, (r.unfolding, unfold)
    assert abs(r.folding.steps - fold) / fold < 0.1  # type: ignore[operator]
    # a direct count along the same trajectories measures the same quantity
    labels = [np.where(d == 0, 0, np.where(d == 3, 1, -1)) for d in chain]
    direct, transitions, _ = direct_mfpt(labels, FRAME_STEPS)
    assert transitions > 100 and direct is not None and abs(direct - fold) / fold < 0.1
    # the lag rule: a Markov chain's timescales are flat in the lag, so the first lag is taken
    auto = markov_analysis(
        chain,
        [CHAIN_Q[d] for d in chain],
        frame_steps=FRAME_STEPS,
        params=AnalysisParams(bootstrap=0),
    )
    assert auto.lag == 1 and "within 20%" in auto.lag_rule


def test_bootstrap_is_seeded(chain):
    short = chain[:8]
    q = [CHAIN_Q[d] for d in short]

    def run(seed: int):
        return markov_analysis(
            short, q, frame_steps=FRAME_STEPS, params=AnalysisParams(lag=1, bootstrap=30, seed=seed)
        ).folding

    a, b, c = run(3), run(3), run(4)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high) and a.steps == c.steps


# -- a real results folder of a short Go run ---------------------------------------------------


@pytest.fixture(scope="module")
def go_results(tmp_path_factory, villin_pdb) -> Path:
    """What `foldnet results` writes for 3 trajectories of 60,000 steps at T = 0.78 (near the
    folding temperature, so folded and unfolded states both show), a frame every 500 steps."""
    engine = GoEngine.from_pdb(villin_pdb)
    trajs = []
    for clone in range(3):
        start = engine.initial_state(temperature=0.78, seed=clone, extended=False)
        spec = RunSpec(
            steps=60_000, segment_steps=20_000, report_steps=500, temperature=0.78, seed=50 + clone
        )
        r = engine.run(start, spec)
        trajs.append((r.frame_steps, dict(r.observables), r.frames))
    out = tmp_path_factory.mktemp("go-results")
    _write(out, engine.model, trajs)
    return out


def _write(out: Path, model, runs) -> None:
    for name, data in plain_go_files(model, runs).items():
        atomic_write(out / name, data)


PARAMS = AnalysisParams(clusters=20, bootstrap=20, q_folded=0.7, q_unfolded=0.6)


@pytest.mark.slow
def test_results_folder_end_to_end(go_results, tmp_path):
    data = load_results(go_results)
    assert data.engine == "go" and data.ps_per_step is None
    assert len(data.trajectories) == 3 and data.trajectories[0].xyz_nm.shape == (120, 36, 3)
    a = analyze(data, PARAMS)
    assert a.features == "ca-distances" and a.n_features == 33 * 34 // 2
    assert a.frames == 360 and a.msm.frame_steps == 500 and a.msm.lag in a.msm.lags
    files = write_analysis(a, tmp_path / "analysis")
    names = {f.name for f in files}
    assert names == {"analysis.json", "implied_timescales.png", "free_energy.png", "README.txt"}
    for f in files:
        if f.suffix == ".png":
            assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert summary["msm"]["lag_steps"] == a.msm.lag * 500
    assert "mean Q >= 0.7" in summary["macrostates"]["rule"]
    fold = summary["mfpt"]["folding"]
    assert fold["steps"] is None or fold["steps"] > 0
    assert fold["steps"] is not None or fold["reason"]
    assert "TICA" in (tmp_path / "analysis" / "README.txt").read_text()
    # the same input gives the same files, byte for byte (JSON; PNGs carry no timestamp)
    again = analysis_files(analyze(load_results(go_results), PARAMS))
    assert again["analysis.json"] == (tmp_path / "analysis" / "analysis.json").read_bytes()

    # the HTTP bundle: a zip of the same names (and more) reads the same
    bundle = tmp_path / "results.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        for f in go_results.iterdir():
            if f.is_file():
                zf.write(f, arcname=f.name)
        zf.writestr("summary.json", json.dumps({"engine": "go", "job": "x"}))
    from_zip = analysis_files(analyze(load_results(bundle), PARAMS))
    assert from_zip["analysis.json"] == again["analysis.json"]


def test_cli_analyze(go_results, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "analyze",
            str(go_results),
            "--out",
            str(tmp_path / "a"),
            "--clusters",
            "20",
            "--bootstrap",
            "10",
            "--q-folded",
            "0.7",
            "--q-unfolded",
            "0.6",
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "folding MFPT" in res.output and "lag" in res.output
    assert (tmp_path / "a" / "analysis.json").is_file()
    assert (tmp_path / "a" / "free_energy.png").is_file()


# -- bad input ---------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("analysis"))
    return dst


def _rewrite_csv(path: Path, change) -> None:
    rows = list(csv.reader(path.read_text().splitlines()))
    path.write_text("\n".join(",".join(r) for r in change(rows)) + "\n")


def test_bad_input_is_a_named_error(go_results, tmp_path, villin_pdb):
    runner = CliRunner()

    def refused(target: Path, *extra: str, match: str) -> None:
        with pytest.raises(AnalysisError, match=match):
            params = AnalysisParams(**{"clusters": 20, "bootstrap": 5} | _opts(extra))
            analyze(load_results(target), params)
        res = runner.invoke(app, ["analyze", str(target), "--bootstrap", "5", *extra])
        assert res.exit_code == 2, res.output
        assert "error:" in res.output and "Traceback" not in res.output

    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, match="no trajectory_runR_cloneC.xtc")
    refused(tmp_path / "nowhere", match="no results folder")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    refused(junk, match="neither a results folder")
    refused(go_results, "--lag", "500", match="not shorter than the longest trajectory")

    nan = _copy(go_results, tmp_path / "nan")
    _rewrite_csv(
        nan / "observables_run0_clone1.csv",
        lambda rows: [rows[0], *([*r[:2], "nan", *r[3:]] for r in rows[1:])],
    )
    refused(nan, "--features", "q-rmsd", match="NaN")

    # one frame per trajectory: the files of a one-frame run
    engine = GoEngine.from_pdb(villin_pdb)
    r = engine.run(
        engine.initial_state(temperature=0.7, seed=1),
        RunSpec(steps=500, segment_steps=500, report_steps=500, temperature=0.7, seed=1),
    )
    one = tmp_path / "one"
    _write(one, engine.model, [(r.frame_steps, dict(r.observables), r.frames)])
    refused(one, match="fewer than 2 frames")

    with pytest.raises(AnalysisError, match="q_unfolded < q_folded"):
        AnalysisParams(q_folded=0.5, q_unfolded=0.6)
    res = runner.invoke(app, ["analyze", str(go_results), "--q-folded", "0.5"])
    assert res.exit_code == 2 and "Traceback" not in res.output


def _opts(extra: tuple[str, ...]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in zip(extra[::2], extra[1::2], strict=True):
        key = k.removeprefix("--").replace("-", "_")
        out[key] = int(v) if v.isdigit() else v
    return out


def test_no_folded_state_is_a_stated_null(go_results, tmp_path):
    a = analyze(
        load_results(go_results),
        AnalysisParams(features="q-rmsd", clusters=20, bootstrap=5, q_folded=1.0, q_unfolded=0.99),
    )
    assert a.msm.folding.steps is None and a.msm.unfolding.steps is None
    summary = json.loads(analysis_files(a)["analysis.json"])
    assert summary["mfpt"]["folding"]["steps"] is None
    assert "no folded microstate (mean Q >= 1.0)" in summary["mfpt"]["folding"]["reason"]


def test_the_service_serves_the_analysis_of_a_jobs_validated_results(tmp_path):
    import io
    import json
    import threading
    import zipfile

    from http_helpers import (
        add_lab,
        go_job,
        lab_client,
        post_job,
        running_service,
        trust,
        wait_for_job,
    )

    from worker.client import HttpVolunteer

    key = add_lab(tmp_path / "c", "lab-a")
    with running_service(tmp_path / "c") as s, lab_client(s.url, key) as lab:
        job = post_job(lab, go_job(steps_per_wu=10_000, segment_steps=5000)).json()["job"]
        early = lab.get(f"/v1/jobs/{job}/analysis")
        assert early.status_code == 409 and "no validated work unit" in early.json()["detail"]
        vols = [
            HttpVolunteer(s.url, home=tmp_path / f"h{i}", key_path=tmp_path / f"v{i}.key")
            for i in range(2)
        ]
        trust(s, vols[0].identity)
        threads = [threading.Thread(target=v.run, kwargs={"max_tasks": 4}) for v in vols]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert wait_for_job(lab, job)["state"] == "completed"
        r = lab.get(f"/v1/jobs/{job}/analysis", timeout=300)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
            assert {
                "analysis.json",
                "implied_timescales.png",
                "free_energy.png",
                "README.txt",
            } <= set(zf.namelist())
            doc = json.loads(zf.read("analysis.json"))
        assert doc["msm"]["lag_frames"] >= 1 and {"folding", "unfolding"} <= set(doc["mfpt"])
        again = lab.get(f"/v1/jobs/{job}/analysis", timeout=300)
        assert again.content == r.content  # kept until more work is validated
        other = add_lab(tmp_path / "c", "lab-b")
        with lab_client(s.url, other) as b:
            assert b.get(f"/v1/jobs/{job}/analysis").status_code == 404
        for v in vols:
            v.close()


def test_without_a_reference_the_best_structure_is_the_most_populated_states_centre(villin_pdb):
    from coordinator.bundle import JobInfo, Results, Trajectory, msm_centre

    engine = GoEngine.from_pdb(villin_pdb)
    trajs = []
    for clone in range(3):
        start = engine.initial_state(temperature=0.78, seed=clone, extended=False)
        spec = RunSpec(
            steps=100_000, segment_steps=50_000, report_steps=500, temperature=0.78, seed=7 + clone
        )
        r = engine.run(start, spec)
        trajs.append(Trajectory(0, clone, (), r.frame_steps, r.frames, dict(r.observables)))
    info = JobInfo(
        job="ab" * 32, engine="go", temperature=0.78, steps_per_wu=100_000,
        segment_steps=50_000, report_steps=500, system=engine.model, reference=None,
    )  # fmt: skip
    best = msm_centre(Results(info, tuple(trajs)))
    assert best is not None and "most populated state" in best.criterion
    t = trajs[best.clone]
    np.testing.assert_array_equal(best.positions, t.frames[best.index])
    assert best.step == int(t.steps[best.index])
    # with a reference, the lowest RMSD decides and no model is built
    import dataclasses

    with_ref = dataclasses.replace(info, reference=engine.model.native)
    assert msm_centre(Results(with_ref, tuple(trajs))) is None


def test_a_lag_with_no_markov_model_is_an_analysis_error_not_a_traceback():
    from coordinator.analysis import _msm

    # a walk that never returns: at lag 2 no state is ever left and re-entered, so deeptime
    # finds no connected set to fit and raises a ValueError of its own
    walk = [np.array([0, 1, 2, 3, 4, 5])]
    with pytest.raises(AnalysisError, match="no Markov model at a lag of 2 frames"):
        _msm(walk, 2)
