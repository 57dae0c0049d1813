"""False-alarm rate of fresh-draw verification on honest models, and its detection rate on cheating ones.

Each model is scored once on the public sets, then verified (`iclbench.submissions.verify.verify`) on the
fresh sets of `--seeds` verification seeds drawn now with `secrets`. The models of one seed share
its fresh sets (one `fresh_sets` block), except the look-up cheater: it regenerates the public sets
with `eval_set` when imported, and imported inside that block, in this process, it would read the
fresh ones (verification imports the model before drawing; a model run in a worker process never
sees the seed). Prints, per model, the fraction of seeds on which any task was flagged, the
per-task flag counts, and the calibration of the standard errors: the fraction of compared prompt
lengths whose difference exceeds 1.645 standard errors (about 5% if the bootstrap errors are right)
and the largest difference in standard errors. The cheaters are `tests/fixtures/cheaters.py`.

    python benchmarks/verification_false_alarms.py [--seeds 20] [--models ridge ...] [--tasks linear/noisy lasso kernel]

(ridge takes about 35 s per noiseless linear task on a 2-core machine: `--tasks` keeps a run short).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from iclbench.cache import fresh_sets
from iclbench.plugins import load_model
from iclbench.runner import RunConfig, run
from iclbench.tasks import select
from iclbench.tasks.family import VERIFY_SEED_BITS
from iclbench.submissions.verify import CI_Z, COMPARISONS, FALSE_ALARM, Z, verify

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.cheaters import KINDS, write_cheater  # noqa: E402

HONEST = ["ridge", "averaging", str(Path(__file__).resolve().parents[1] / "examples" / "template_model.py")]
"""Honest models: the exact Bayes-tuned solver, the one-step estimator and the template kNN plugin."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="fresh verification seeds")
    parser.add_argument("--models", nargs="+", default=HONEST, help="honest models (--model strings)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (default: all)")
    args = parser.parse_args()
    every = select(args.tasks)
    with tempfile.TemporaryDirectory() as tmp:
        models = {Path(m).stem if m.endswith(".py") else m: (m, "honest") for m in args.models}
        models |= {kind: (str(write_cheater(Path(tmp) / kind, kind, [t.spec.name for t in every])), "cheating") for kind in KINDS}
        public = {label: run(load_model(m), every, RunConfig("cpu"), progress=False) for label, (m, _) in models.items()}
        flagged: dict[str, Counter[str]] = {label: Counter() for label in models}
        failed: Counter[str] = Counter()
        z_scores: dict[str, list[float]] = {label: [] for label in models}
        start = time.perf_counter()
        for i in range(args.seeds):
            seed = secrets.randbits(VERIFY_SEED_BITS)
            reports = {"look-up": verify(models["look-up"][0], public["look-up"], seed, args.tasks)}
            with fresh_sets(seed):
                reports |= {label: verify(m, public[label], seed, args.tasks) for label, (m, _) in models.items() if label != "look-up"}
            for label, report in reports.items():
                failed[label] += report["verdict"] == "fail"
                for name, t in report["tasks"].items():
                    flagged[label][name] += t["verdict"] == "fail"
                    z_scores[label] += [
                        c["difference_db"] / (c["tolerance_db"] / Z)
                        for c in t.get("lengths", {}).values()
                        if c.get("tolerance_db")
                    ]
            print(f"seed {i + 1}/{args.seeds} ({seed}) done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(f"z = {Z:.3f} (target false-alarm rate {FALSE_ALARM} over {COMPARISONS} prompt lengths), {args.seeds} seeds")
    for label, (_, kind) in models.items():
        zs = z_scores[label]
        over = f"{100 * sum(z > CI_Z for z in zs) / len(zs):.1f}%" if zs else "-"
        print(
            f"{kind} {label}: failed on {failed[label]}/{args.seeds} seeds; {len(zs)} length comparisons with a "
            f"tolerance, above 1.645 SE: {over}, largest {max(zs, default=float('nan')):.2f} SE"
        )
        print("    flags per task: " + (", ".join(f"{n} {c}" for n, c in flagged[label].items() if c) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
