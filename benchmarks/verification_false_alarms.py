"""False alarms of fresh-draw verification on honest models, and what it detects of cheating ones.

    python benchmarks/verification_false_alarms.py [--seeds 20] [--models NAME ...] [--tasks TASK ...] [--keep DIR]
                                                   [--first-seed N] [--score-only]

Every committed submission (`submissions/*/model.py`) and every baseline (or those of --models) is
scored once on the public sets, then on the fresh sets of --seeds verification seeds drawn now with
`secrets`, each generated once and shared by all models, on the CPU in float32 with one thread, keeping
the per-prompt errors. The models run in this process, as `iclbench run` scores them (verify runs them in a
worker and calls `predict` per length: the same predictions, without a worker's start and transfers, and
up to five times faster for a model with `predict_lengths`); they are the committed ones and the
baselines, and none reads the evaluation sets (`true-w` regenerates the pinned ones itself). The rule
(`iclbench.submissions.rank_test.rank_tests`) is then applied to those arrays; so is the previous
rule (public `rel_err` better than the fresh one by more than z = 3.72 standard errors read off the
two 90% bootstrap intervals), for comparison.

Printed:
1. False alarms: per honest model, the seeds on which any of its prompt lengths failed, under each
   rule; the per-length rejections of each test; over all lengths and seeds, the calibration of each
   test (the share of z > 1.645, about 5% when its null distribution is right, less with ties) and
   its largest z, against the rule's threshold.
2. Detection: cheats built from each honest model's own predictions and the public targets (a model
   may read the public sets), each applied to one task and length at a time, on every seed:
   - look-up: the target on every public prompt;
   - blend a: (1 - a) * honest prediction + a * target on every public prompt;
   - look-up + j bad: the look-up, but the j public prompts with the largest honest errors get those
     errors 100 times larger (prediction target + 10 * (honest - target)), to sit in the top tail;
   - look-up + huge fresh: the look-up, and one fresh prompt's relative error 1e20 (+200 dB);
   - tail look-up j: the target on the j public prompts with the largest honest squared errors (those
     that weigh most in the score), the honest prediction elsewhere;
   - tail look-up 256 + 1 planted: that, for j = 256, and the next largest error made 100 times
     larger, to leave one public error at the top.
   For each: the share of (model, task, length, seed) flagged, and the largest gain (honest public score
   minus the cheat's, in dB) among those not flagged, with where it was.
--keep DIR keeps the seeds (seeds.json) and every model's per-prompt errors there (safetensors), and
reuses those already there: a run stopped part way goes on with the same seeds, runs of different
--models into one DIR share them, and the rule can be re-measured without scoring again. (A full
run: about an hour and a half of one core.)
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tabulate import tabulate

from iclbench.cache import eval_set, fresh_sets
from iclbench import metrics
from iclbench.metrics import CI_LEVEL
from iclbench.models.weights import atomic_save
from iclbench.plugins import baseline_names, load_model
from iclbench.runner import RunConfig, Samples, run
from iclbench.samples import task_tensors
from iclbench.submissions import rank_test
from iclbench.submissions.rank_test import rank_tests
from iclbench.submissions.rerun import FLOOR_DB
from iclbench.tasks import TASKS, select
from iclbench.tasks.family import VERIFY_SEED_BITS
from statistics import NormalDist

ROOT = Path(__file__).resolve().parents[1]
BLENDS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
BAD = (1, 4, 16)
TAIL_FIXES = (1, 4, 16, 64, 256)
HUGE = 1e20
OLD_Z = NormalDist().inv_cdf(1 - 0.01 / rank_test.COMPARISONS)
"""The previous rule's threshold: standard errors of the difference, Bonferroni over the suite's lengths (3.65 in
suite v3, 3.72 in v4)."""
CI_Z = NormalDist().inv_cdf(0.5 + CI_LEVEL / 2)


def models_to_run(names: list[str] | None) -> dict[str, str]:
    """Label -> --model string: every committed submission and every baseline, or `names`."""
    if names:
        return {(Path(m).parent.name if Path(m).name == "model.py" else Path(m).stem) if m.endswith(".py") else m: m
                for m in names}
    subs = {p.name: str(p / "model.py") for p in sorted((ROOT / "submissions").iterdir()) if (p / "model.py").exists()}
    return subs | {name: name for name in baseline_names()}


def score(model: str, tasks: list, seed: int | None) -> tuple[dict, Samples]:
    """The results document and per-prompt samples of `model` on the public sets (seed None) or those of `seed`."""
    samples: Samples = {}
    with fresh_sets(seed) if seed is not None else nullcontext():
        doc = run(load_model(model), tasks, RunConfig("cpu"), progress=False, samples=samples)
    return doc, samples


@dataclass
class Scored:
    """One model's run on one set: per task, its status and error; per task/length key, the score and its interval
    in dB and the per-prompt tensors (rel_err, target_sq and, for the public run, y)."""

    status: dict[str, str]
    errors: dict[str, str]
    lengths: dict[str, dict[str, torch.Tensor]]
    scores: dict[str, list[float]]

    def save(self, path: Path) -> None:
        flat = {f"{key}/{kind}": t.contiguous() for key, d in self.lengths.items() for kind, t in d.items()}
        meta = {"status": json.dumps(self.status), "errors": json.dumps(self.errors), "scores": json.dumps(self.scores)}
        atomic_save(flat, path, meta)  # whole or not at all: runs into one --keep may overlap

    @classmethod
    def load(cls, path: Path) -> Scored:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata()
        lengths: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for key, t in load_file(str(path)).items():
            where, kind = key.rsplit("/", 1)
            lengths[where][kind] = t
        return cls(json.loads(meta["status"]), json.loads(meta["errors"]), dict(lengths), json.loads(meta["scores"]))

    @classmethod
    def of(cls, doc: dict, samples: Samples, keep_y: bool) -> Scored:
        lengths, scores = {}, {}
        for task, tensors in samples.items():
            for n, m in doc["tasks"][task]["lengths"].items():
                key = f"{task}/{n}"
                lengths[key] = {k: tensors[f"{key}/{k}"] for k in ("rel_err", "target_sq", "y") if keep_y or k != "y"}
                scores[key] = [m["rel_err"]["db"], *m["rel_err"]["ci90_db"]]
        status = {t: e["status"] for t, e in doc["tasks"].items()}
        errors = {t: e["error"] for t, e in doc["tasks"].items() if "error" in e}
        return cls(status, errors, lengths, scores)


def scored(model: str, label: str, tasks: list, seed: int | None, keep: Path | None) -> Scored:
    path = None if keep is None else keep / f"{label}--{'public' if seed is None else seed}.safetensors"
    if path is not None and path.exists():
        return Scored.load(path)
    got = Scored.of(*score(model, tasks, seed), keep_y=seed is None)
    if path is not None:
        got.save(path)
    return got


def old_rule(public: list[float], fresh: list[float]) -> bool:
    """Whether the previous rule flags a length: (db, ci90 low, ci90 high) of each side, floored at float32's eps²."""
    floor = FLOOR_DB["float32"]
    pub, _, pub_hi = (max(v, floor) for v in public)
    new, new_lo, _ = (max(v, floor) for v in fresh)
    se = math.hypot(max(pub_hi - pub, 0.0), max(new - new_lo, 0.0)) / CI_Z
    return new - pub > OLD_Z * se


def intervals(errors: list[torch.Tensor], energy: torch.Tensor) -> list[list[float]]:
    """The score and 90% bootstrap interval in dB of each vector of per-prompt relative errors, as
    `metrics.ratio` makes them (its resamples of the prompts, `metrics._counts`), in one product."""
    w = energy.double().numpy()
    num = np.stack([e.double().numpy() * w for e in errors], 1)
    counts = metrics._counts(len(w))
    lo, hi = np.quantile((counts @ num) / (counts @ w)[:, None], [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2], axis=0)
    return [[metrics.db(v), metrics.db(a), metrics.db(b)] for v, a, b in zip(num.sum(0) / w.sum(), lo, hi)]


def cheats(key: str, pub: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, bool]]:
    """Each cheat's public per-prompt relative errors on one task and length, and whether it adds a huge fresh error."""
    task, n = key.rsplit("/", 1)
    target = eval_set(TASKS[task])[0].targets[int(n)]
    y, energy = pub["y"], pub["target_sq"]
    sq = pub["rel_err"] * energy

    def errors(pred: torch.Tensor) -> torch.Tensor:
        return task_tensors(task, int(n), pred, target)[f"{key}/rel_err"]

    look_up = torch.zeros_like(pub["rel_err"])
    worst = sq.argsort(descending=True)
    out = {"look-up": (look_up, False), "look-up + huge fresh": (look_up, True)}
    out |= {f"blend {a:g}": (errors((1 - a) * y + a * target), False) for a in BLENDS}
    for j in BAD:
        bad = look_up.clone()
        bad[worst[:j]] = errors(target + 10 * (y - target))[worst[:j]]
        out[f"look-up + {j} bad"] = (bad, False)
    for j in TAIL_FIXES:
        fixed = pub["rel_err"].clone()
        fixed[worst[:j]] = 0.0
        out[f"tail look-up {j}"] = (fixed, False)
    planted = out[f"tail look-up {TAIL_FIXES[-1]}"][0].clone()
    planted[worst[TAIL_FIXES[-1]]] *= 100
    out[f"tail look-up {TAIL_FIXES[-1]} + 1 planted"] = (planted, False)
    return out


def draw_seeds(count: int, first: int | None, keep: Path | None) -> list[int]:
    """`count` seeds: from `first` on; else those of keep/seeds.json (a run into the same --keep goes on with the
    seeds of the one before), drawn with `secrets` where there are fewer, and written there."""
    if first is not None:
        return list(range(first, first + count))
    path = None if keep is None else keep / "seeds.json"
    seeds = json.loads(path.read_text()) if path is not None and path.exists() else []
    seeds += [secrets.randbits(VERIFY_SEED_BITS) for _ in range(count - len(seeds))]
    if path is not None:
        path.write_text(json.dumps(seeds))
    return seeds[:count]


@dataclass
class Honest:
    """One honest model's verdicts over the seeds: suite failures under each rule, per-length rejections of
    each test, every length's z of each, and the lengths compared."""

    failed: int = 0
    failed_previous: int = 0
    rank: int = 0
    tail: int = 0
    z: list[float] = field(default_factory=list)
    tail_z: list[float] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)


@dataclass
class Detection:
    """One cheat's units flagged under each rule, and the largest gain among those not flagged: anywhere, at a
    task's nominal length, and under the previous rule; (gain in dB, where)."""

    units: int = 0
    flagged: int = 0
    flagged_previous: int = 0
    worst: tuple[float, str] = (-math.inf, "")
    worst_nominal: tuple[float, str] = (-math.inf, "")
    worst_previous: tuple[float, str] = (-math.inf, "")

    def add(self, gain: float, where: str, nominal: bool, flagged: bool, flagged_previous: bool) -> None:
        self.units += 1
        self.flagged += flagged
        self.flagged_previous += flagged_previous
        if not flagged:
            self.worst = max(self.worst, (gain, where))
            if nominal:
                self.worst_nominal = max(self.worst_nominal, (gain, where))
        if not flagged_previous:
            self.worst_previous = max(self.worst_previous, (gain, where))


class Cheats:
    """Every cheat's public per-prompt errors, score and score interval, per model and task/length key."""

    def __init__(self, public: dict[str, Scored]) -> None:
        self.errors = {(label, key): cheats(key, pub.lengths[key]) for label, pub in public.items() for key in pub.lengths}
        self.scores = {}
        for (label, key), v in self.errors.items():
            both = intervals([e for e, _ in v.values()], public[label].lengths[key]["target_sq"])
            self.scores[(label, key)] = {c: (i[0], i) for c, i in zip(v, both)}


def compare(label: str, pub: Scored, fresh: Scored, cheat: Cheats, honest: Honest,
            detection: dict[str, Detection]) -> None:
    """Add one model's comparisons on one seed: honest, and every cheat on every length."""
    failed = failed_previous = False
    for key, p in pub.lengths.items():
        f = fresh.lengths[key]
        tests = rank_tests((p["rel_err"], p["target_sq"]), (f["rel_err"], f["target_sq"]), "float32")
        honest.keys.add(key)
        honest.rank += tests["rank_z"] >= rank_test.Z
        honest.tail += tests["tail_z"] >= rank_test.Z
        honest.z.append(tests["rank_z"])
        honest.tail_z.append(tests["tail_z"])
        failed |= tests["verdict"] == "fail"
        failed_previous |= old_rule(pub.scores[key], fresh.scores[key])
        honest_db = pub.scores[key][0]
        task, n = key.rsplit("/", 1)
        huge = f["rel_err"].clone()
        huge[0] = HUGE
        fresh_huge = intervals([huge], f["target_sq"])[0]
        for name, (errs, blow_up) in cheat.errors[(label, key)].items():
            tests = rank_tests((errs, p["target_sq"]), (huge if blow_up else f["rel_err"], f["target_sq"]), "float32")
            cheat_db, cheat_interval = cheat.scores[(label, key)][name]
            gain = max(honest_db, FLOOR_DB["float32"]) - max(cheat_db, FLOOR_DB["float32"])  # below it: round-off
            detection[name].add(gain, f"{label} {key} ({honest_db:.1f} -> {cheat_db:.1f} dB)",
                                int(n) == TASKS[task].spec.nominal, tests["verdict"] == "fail",
                                old_rule(cheat_interval, fresh_huge if blow_up else fresh.scores[key]))
    honest.failed += failed
    honest.failed_previous += failed_previous


def report(honest: dict[str, Honest], refused: dict[str, str], detection: dict[str, Detection], seeds: int) -> None:
    print(f"rule: rank z or tail z >= {rank_test.Z:.2f} (each at most {rank_test.ALPHA:.2g} likely per length given "
          f"the public set, for all but a fraction {rank_test.ALPHA:.2g} of public sets); {seeds} seeds; previous rule: "
          f"z >= {OLD_Z:.2f} on bootstrap standard errors")
    every = {label: h for label, h in honest.items() if label not in refused and h.keys}
    rows = []
    for label, h in every.items():
        z, t = np.array(h.z), np.array(h.tail_z)
        rows.append([label, len(h.keys), f"{h.failed}/{seeds}", f"{h.failed_previous}/{seeds}", h.rank, h.tail,
                     f"{100 * (z > CI_Z).mean():.1f}%", f"{100 * (t > CI_Z).mean():.1f}%", f"{z.max():.2f}",
                     f"{t.max():.2f}"])
    print("\n1. False alarms of honest models (suite verdict per seed; per-length rejections; calibration)")
    print(tabulate(rows, ["model", "lengths", "failed", "failed (previous rule)", "rank rejections", "tail rejections",
                          "rank z > 1.645", "tail z > 1.645", "largest rank z", "largest tail z"],
                   disable_numparse=True))
    z_all = np.concatenate([np.array(h.z) for h in every.values()])
    t_all = np.concatenate([np.array(h.tail_z) for h in every.values()])
    print(f"all: {sum(h.failed for h in every.values())} of {len(every) * seeds} suite verdicts failed (previous "
          f"rule: {sum(h.failed_previous for h in every.values())}); {len(z_all)} length comparisons: z > 1.645 on "
          f"{100 * (z_all > CI_Z).mean():.2f}% (rank) and {100 * (t_all > CI_Z).mean():.2f}% (tail), rejections "
          f"{sum(h.rank for h in every.values())} (rank) and {sum(h.tail for h in every.values())} (tail)")
    for label, why in refused.items():
        print(f"{label}: not compared, {why}")
    print("\n2. Detection, per (model, task, length, seed); gain: honest public score - cheat's, dB")
    shown = lambda worst: f"{worst[0]:.2f}" if worst[0] > -math.inf else "none"  # noqa: E731
    rows = [[name, d.units, f"{100 * d.flagged / d.units:.1f}%", shown(d.worst), d.worst[1], shown(d.worst_nominal),
             d.worst_nominal[1], f"{100 * d.flagged_previous / d.units:.1f}%", shown(d.worst_previous)]
            for name, d in detection.items()]
    print(tabulate(rows, ["cheat", "units", "detected", "largest undetected gain", "where", "at a nominal length",
                          "where", "detected (previous rule)", "largest undetected gain (previous rule)"],
                   disable_numparse=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="fresh verification seeds")
    parser.add_argument("--models", nargs="+", help="--model strings (default: every submission and baseline)")
    parser.add_argument("--tasks", nargs="+", metavar="TASK", help="only these tasks (default: all)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the per-prompt errors here, and reuse them")
    parser.add_argument("--first-seed", type=int, metavar="N", help="seeds N, N + 1, ... (default: drawn with secrets)")
    parser.add_argument("--score-only", action="store_true", help="with --keep: score what DIR lacks, compare nothing "
                        "(to fill DIR in several runs, for example one per group of --models)")
    args = parser.parse_args()
    if args.score_only and args.keep is None:
        parser.error("--score-only keeps what it scores: give --keep DIR")
    torch.set_num_threads(1)
    tasks = select(args.tasks)
    models = models_to_run(args.models)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    seeds = draw_seeds(args.seeds, args.first_seed, args.keep)
    start = time.perf_counter()
    public = {label: scored(m, label, tasks, None, args.keep) for label, m in models.items()}
    if args.score_only:
        for i, seed in enumerate(seeds):
            for label, model in models.items():
                scored(model, label, tasks, seed, args.keep)
            print(f"seed {i + 1}/{len(seeds)} scored, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        return 0
    cheat = Cheats(public)
    print(f"public sets scored, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    honest = {label: Honest() for label in models}
    refused: dict[str, str] = {}
    detection: dict[str, Detection] = defaultdict(Detection)
    for i, seed in enumerate(seeds):
        for label, model in models.items():
            fresh = scored(model, label, tasks, seed, args.keep)
            changed = [t for t, s in fresh.status.items() if s != public[label].status[t]]
            if changed:
                t = changed[0]
                refused[label] = f"{t}: {fresh.status[t]} on fresh data: {fresh.errors.get(t, '')[:150]}"
                continue
            compare(label, public[label], fresh, cheat, honest[label], detection)
        print(f"seed {i + 1}/{len(seeds)} done, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    report(honest, refused, detection, len(seeds))
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
