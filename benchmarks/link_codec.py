"""The CPU of the coordinator link's codec (``coordinator/http/linkcodec.py``) per message,
for the messages that dominate a scaled-out service (``foldnet serve --workers N``).

``python -m benchmarks.link_codec [--quick] [--against FILE]``

The coordinator's process decodes every call and encodes every answer on its one thread, so
what the codec costs there caps the network's throughput however many front-ends run (the
front-ends pay the mirror image). Measured here, with real values: the upload of a signed
villin result (a real Go run) of one 10-step segment (the WU of ``benchmarks.http``) and of
4 segments and 40 frames, as the ``_result`` call a front-end sends; the answer to it (the
next WU handed out: a ``HandOut`` with its run spec, input state, price and assignment); a
request for work (``_work``) and its answer. Encode and decode each, CPU microseconds per
message (``time.process_time``, the best of several rounds).

``--against FILE`` measures another implementation of the codec too, in the same run and
alternating with this one (the noise of a shared machine falls on both), e.g. the main
branch's: ``git show main:coordinator/http/linkcodec.py > /tmp/old.py``. Ends with one JSON
line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.common import best_cpu_us, print_table
from coordinator.http import linkcodec
from coordinator.http.link import Admission, Call, Reply
from coordinator.http.wire import Assignment, HandOut
from ledger.entries import PriceInputs
from sims.examples import VILLIN_PDB
from sims.go import GoEngine
from sims.spec import RunSpec
from sims.state import State
from worker.identity import Identity
from worker.result import WorkerResult, sign_result

RESULT = "coordinator.http.volunteers._result"
WORK = "coordinator.http.volunteers._work"


def _signed(engine: GoEngine, me: Identity, steps: int, segment_steps: int) -> WorkerResult:
    """A signed result of a real run of ``steps`` in segments, a frame every 10 steps."""
    spec = RunSpec(
        steps=steps, segment_steps=segment_steps, report_steps=10, temperature=0.8, seed=4
    )
    run = engine.run(engine.initial_state(temperature=0.8, seed=1), spec)
    return sign_result(run, wu_id=bytes(range(32)), identity=me, price=_price(engine, steps))


def _price(engine: GoEngine, steps: int) -> PriceInputs:
    return PriceInputs(
        engine="go",
        n_particles=engine.n_atoms,
        steps=steps,
        deadline_s=600,
        issued_at_ms=1_700_000_000_000,
    )


def messages() -> dict[str, object]:
    """The hot messages, by name, built from real Go runs and real keys."""
    engine = GoEngine.from_pdb(VILLIN_PDB)
    me = Identity.ephemeral()
    key = me.public_key
    admit = Admission(volunteer=key, nonce="5f0c2a9e6b1d4f3a8c7e9b0d2f4a6c8e")
    small, large = _signed(engine, me, 10, 10), _signed(engine, me, 400, 100)
    # the next WU handed out: the same small one, starting where the result ended
    spec = RunSpec(steps=10, segment_steps=10, report_steps=10, temperature=0.8, seed=5)
    state = State(positions=small.positions[-1], velocities=small.velocities[-1])
    assignment = Assignment(
        volunteer=key,
        wu_id=bytes(range(1, 33)),
        n_segments=spec.n_segments,
        n_atoms=engine.n_atoms,
        n_frames=spec.steps // spec.report_steps,
        deadline=1_700_000_600.25,
        steps=spec.steps,
        input_digest=state.digest(),
        segment_steps=spec.segment_steps,
        report_steps=spec.report_steps,
        temperature=spec.temperature,
        system=bytes(range(2, 34)),
        price=_price(engine, spec.steps),
    )
    hand_out = HandOut(
        wu_id=assignment.wu_id,
        number=12346,
        system=assignment.system.hex(),
        engine="go",
        spec=spec,
        deadline=assignment.deadline,
        states=(state,),
        price=assignment.price,
        assignment=assignment,
    )
    return {
        "call_result": Call(id=17, name=RESULT, args=(key, 12345, small, "", 1), admit=admit),
        "call_result_4seg": Call(id=17, name=RESULT, args=(key, 7, large, "", 1), admit=admit),
        "reply_result": Reply(answers=((17, True, ("pending", "", [hand_out])),)),
        "call_work": Call(id=18, name=WORK, args=(key, small.header.determinism, 1), admit=admit),
        "reply_work": Reply(answers=((18, True, [hand_out]),)),
    }


def load(path: Path) -> ModuleType:
    """Another implementation of the codec, from its file (the operator's own)."""
    spec = importlib.util.spec_from_file_location("foldnet_linkcodec_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(
    codecs: dict[str, ModuleType], msgs: dict[str, object], n: int, rounds: int
) -> dict[str, Any]:
    """Microseconds per encode and decode of each message by each codec, and its size; each
    round runs every codec once, in turn."""
    best: dict[str, float] = {}
    for name, message in msgs.items():
        frames = {c: codec.encode(message) for c, codec in codecs.items()}
        for _ in range(rounds):
            for c, codec in codecs.items():
                data = frames[c]
                for op, us in (
                    ("encode", best_cpu_us(lambda: codec.encode(message), n, 1)),  # noqa: B023
                    ("decode", best_cpu_us(lambda: codec.decode(data), n, 1)),  # noqa: B023
                ):
                    k = f"{c}{name}_{op}_us"
                    best[k] = min(best.get(k, float("inf")), us)
        for c in codecs:
            best[f"{c}{name}_bytes"] = len(frames[c])
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    ap.add_argument("--against", type=Path, help="another codec's module file, measured too")
    args = ap.parse_args()
    n, rounds = (20, 3) if args.quick else (300, 9)
    codecs = {"": linkcodec}
    if args.against:
        codecs["against_"] = load(args.against)
    msgs = messages()
    metrics = measure(codecs, msgs, n, rounds)
    rows = []
    for name in msgs:
        for c in codecs:
            rows.append(
                [
                    name,
                    "this" if not c else str(args.against),
                    f"{metrics[f'{c}{name}_encode_us']:.1f}",
                    f"{metrics[f'{c}{name}_decode_us']:.1f}",
                    f"{metrics[f'{c}{name}_bytes']:,}",
                ]
            )
    print_table(
        "The link codec: CPU us per message (best of rounds)",
        ["message", "codec", "encode us", "decode us", "bytes"],
        rows,
    )
    print(json.dumps({**metrics, "quick": args.quick}))


if __name__ == "__main__":
    main()
