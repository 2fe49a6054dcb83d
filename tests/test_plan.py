"""The job plan: one object with the engine-aware defaults and ranges, the same rules for the
Python API and the command line (the REST API's are in test_preparation.py)."""

from __future__ import annotations

import pytest
from cli_helpers import run_foldnet

from coordinator.errors import SubmissionError
from coordinator.plan import RULES, JobPlan, PlanLimits
from sims.examples import VILLIN_PDB


def _go(**kw: object) -> JobPlan:
    return JobPlan.create(engine="go", pdb=VILLIN_PDB.read_text(), **kw)


def _openmm(**kw: object) -> JobPlan:
    return JobPlan.create(engine="openmm", sequence="AAA", **kw)


def test_each_engine_has_its_own_defaults_in_its_own_units():
    go, aa = _go(), _openmm()
    assert (go.temperature, go.steps_per_wu, go.segment_steps, go.report_steps) == (
        0.7,
        100_000,
        20_000,
        1000,
    )
    # openmm at 4 fs: a frame every 10 ps, segments of 2.5 ps, WUs of 0.5 ns
    assert aa.temperature == 300.0
    assert aa.report_steps * 4 == 10_000  # fs
    assert aa.segment_steps * 4 == 2_500
    assert aa.steps_per_wu * 4 == 500_000
    assert "300 K" in aa.describe() and "(10 ps)" in aa.describe() and "(2.5 ps)" in aa.describe()
    assert "(500 ps)" in aa.describe() and "1 ns per trajectory" in aa.describe()
    assert "0.7 eps/kB" in go.describe() and "(500 tau)" in go.describe()
    assert (go.runs, go.clones, go.gens, go.min_quorum) == (1, 2, 2, 2)


def test_the_plans_constants_are_the_engines_own():
    from coordinator import plan
    from sims.allatom.engine import MAX_TEMPERATURE_K, TIMESTEP_FS
    from sims.allatom.prepare import MAX_SEQUENCE_LENGTH
    from sims.go.engine import MAX_TEMPERATURE, GoParameters

    assert RULES["go"].timestep == GoParameters().timestep
    assert RULES["go"].limit == MAX_TEMPERATURE
    assert RULES["openmm"].timestep == TIMESTEP_FS
    assert RULES["openmm"].limit == MAX_TEMPERATURE_K
    assert plan.MAX_SEQUENCE_LENGTH == MAX_SEQUENCE_LENGTH


@pytest.mark.parametrize(
    ("make", "temperature", "message"),
    [
        (_openmm, 0.7, "temperature 0.7 K is outside 200-500 K"),
        (_openmm, 0.7, "looks like the Go model's reduced units"),
        (_openmm, 150.0, "--allow-unusual-temperature"),
        (_openmm, 550.0, "outside 200-500 K, the usual range of the openmm engine (kelvin)"),
        (_openmm, 5000.0, "at most 1000 K (kelvin)"),
        (_go, 300.0, "300 looks like kelvin, but the go engine takes reduced units"),
        (_go, 3.0, "outside 0.2-2 eps/kB"),
        (_go, -1.0, "expected more than 0 and at most 5 eps/kB"),
        (_go, float("nan"), "finite number in reduced units of epsilon/k_B (eps/kB)"),
    ],
)
def test_temperatures_are_checked_in_the_engines_unit(make, temperature, message):
    with pytest.raises(SubmissionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(temperature=temperature)


def test_an_unusual_temperature_is_taken_when_the_lab_says_so_but_never_past_the_limit():
    assert _openmm(temperature=150.0, allow_unusual_temperature=True).temperature == 150.0
    assert _go(temperature=3.0, allow_unusual_temperature=True).temperature == 3.0
    with pytest.raises(SubmissionError, match="at most 1000 K"):
        _openmm(temperature=1500.0, allow_unusual_temperature=True)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"engine": "go", "sequence": "AAA"}, "a sequence can only be run by the openmm engine"),
        ({"engine": "openmm", "sequence": "AXZ"}, "unknown residue code"),
        ({"engine": "openmm", "sequence": "A" * 501}, "at most 500 can be built"),
        ({"engine": "openmm"}, "exactly one of a PDB file or a sequence"),
        ({"engine": "go", "pdb": "  "}, "is empty"),
        ({"engine": "amber", "sequence": "AAA"}, "unknown engine 'amber'"),
        ({"engine": "openmm", "sequence": "AAA", "speed": 3}, "unknown job parameter"),
        ({"engine": "openmm", "sequence": "AAA", "segment_steps": 600}, "multiple of segment"),
    ],
)
def test_bad_plans_say_what_was_expected(kw, message):
    with pytest.raises(SubmissionError, match=message):
        JobPlan.create(**kw)


def test_a_plan_travels_as_plain_json_and_checks_a_services_limits():
    plan = _openmm(runs=2, name="three alanines")
    assert JobPlan.from_json(plan.to_json()) == plan
    body = plan.to_request()
    assert "source" not in body and body["temperature"] == 300.0
    assert JobPlan.create(**body) == plan
    spec = plan.spec(b"\1" * 32)
    assert (spec.engine, spec.temperature, spec.runs) == ("openmm", 300.0, 2)
    plan.check(PlanLimits())
    with pytest.raises(SubmissionError, match="this service's limit is 1,000"):
        plan.check(PlanLimits(max_job_steps=1000))
    with pytest.raises(SubmissionError, match="3 residues; this service's limit is 2"):
        plan.check(PlanLimits(max_residues=2))


# -- the command line ------------------------------------------------------------------------


def test_submit_help_shows_the_units_and_the_defaults_of_each_engine(tmp_path):
    out = run_foldnet("submit", "--help", home=tmp_path, env={"COLUMNS": "200"}).stdout
    for text in ("kelvin", "eps/kB", "10 ps", "2.5 ps", "500 ps", "500 tau", "4 fs"):
        assert text in out, (text, out)
    assert "--allow-unusual-temperature" in out


def test_submit_to_a_folder_refuses_a_go_temperature_for_openmm_and_stores_nothing(tmp_path):
    folder = tmp_path / "coord"
    args = ["submit", str(folder), "--engine", "openmm", "--sequence", "AAA"]
    cold = run_foldnet(*args, "--temperature", "0.7", home=tmp_path)
    assert cold.returncode == 2, cold.stdout + cold.stderr
    assert "0.7 K is outside 200-500 K" in cold.stderr and "kelvin" in cold.stderr
    assert "Traceback" not in cold.stderr + cold.stdout
    assert not folder.exists()
    ok = run_foldnet(*args, "--temperature", "150", "--allow-unusual-temperature", home=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "preparing" in ok.stdout and "150 K" in ok.stdout and "ps" in ok.stdout


def test_submit_to_a_folder_returns_at_once_and_the_job_shows_preparing(tmp_path):
    folder = tmp_path / "coord"
    sub = run_foldnet("submit", str(folder), "--pdb", str(VILLIN_PDB), home=tmp_path)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    assert "preparing" in sub.stdout and "0.7 eps/kB" in sub.stdout
    assert f"foldnet run {folder}" in sub.stdout
    st = run_foldnet("status", str(folder), home=tmp_path)
    assert st.returncode == 0 and "preparing" in st.stdout, st.stdout
