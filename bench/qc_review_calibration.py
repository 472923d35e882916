"""Calibrating QC to a reviewer (issue 28): held-out agreement before/after, and how many reviews move a threshold.

    .venv/bin/python bench/qc_review_calibration.py [--repeats N] [--noise 0,0.05,0.1]

A simulated reviewer (tests/fixtures/qc_reviewer.py) stricter than the default on one measure: it rejects what the
small-photo profile rejects and, besides, every image whose `blur_sigma_px` is above 1.3 (the profile: 1.8), as
"Quality issues: out of focus"; with --noise it flips that share of its verdicts at random. The images: every
native scikit-image / scikit-learn photo (15, at most 640 px) at 7 Gaussian blurs (0-2 px), judged by the real
QC orchestrator. Three folds: a third of the photos held out (all their blurs judged by the reviewer), the rest
"submitted" (only what QC passed) and reviewed.

Printed, per reviewer noise:
* the whole fitting side through `calibrate` (as training.calibrate_qc fits it): held-out agreement, precision of
  "pass" and recall of rejections, base profile vs calibrated, summed over the folds;
* the curve over review counts n: `--repeats` draws of n reviews from the fitting side, fitted with the tool's
  rules (a threshold moves only with >= 5 rejections naming it); the share of draws where the blur threshold moved,
  where it landed within 0.15 px of the reviewer's 1.3, and the mean held-out agreement before/after. The tool
  itself refuses under 20 reviews.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("REZCTY_EMBEDDED_DIR", str(REPO / ".comfyui" / "embedded"))

from fixtures import qc_reviewer  # noqa: E402

from rezcty_core.qc.calibration import Reviewed, calibrate, evaluate, fit_thresholds  # noqa: E402
from rezcty_core.qc.profiles import load_profile  # noqa: E402

LIMIT = 1.3
COUNTS = (10, 15, 20, 25, 30, 40, 50)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=40, help="draws per review count")
    ap.add_argument("--noise", default="0,0.05,0.1", help="reviewer noise levels (share of verdicts flipped)")
    args = ap.parse_args(argv)
    base = qc_reviewer.photo_profile(load_profile("adobe_stock"))
    t0, load0 = time.time(), os.getloadavg()[0]
    images = qc_reviewer.graded_photos()
    entries = qc_reviewer.qc_entries([img for _, _, img in images], base)
    rows = [(src, f"{src}_blur{s:.1f}.jpg", e) for (src, s, _), e in zip(images, entries)]
    sources = sorted({r[0] for r in rows})
    print(f"{len(rows)} images ({len(sources)} photos x {len(qc_reviewer.BLUR_SIGMAS)} blurs) judged in "
          f"{time.time() - t0:.0f} s, load {load0:.1f} -> {os.getloadavg()[0]:.1f}; QC passed "
          f"{sum(e['verdict'] == 'pass' for _, _, e in rows)}")
    for noise in (float(x) for x in args.noise.split(",")):
        reviewer = qc_reviewer.StricterReviewer(base, limit=LIMIT, noise=noise, seed=7)
        verdicts = {name: (acc, reason) for name, acc, reason in reviewer.judge([r[1] for r in rows],
                                                                                 [r[2] for r in rows])}

        def item(r, verdicts=verdicts) -> Reviewed:
            acc, _ = verdicts[r[1]]
            return Reviewed(r[1], r[2]["measurements"], acc, [] if acc else ["blurry"])

        whole = {"before": [], "after": [], "limits": []}
        curve: dict[int, list[tuple[bool, bool, float, float]]] = {n: [] for n in COUNTS}
        rng = random.Random(0)
        for fold in range(3):
            held_src = set(sources[fold::3])
            held = [item(r) for r in rows if r[0] in held_src]
            pool = [item(r) for r in rows if r[0] not in held_src and r[2]["verdict"] == "pass"]
            cal = calibrate(base, pool, held_out=0.0)
            prof, _, _ = fit_thresholds(base, pool)
            whole["before"].append(evaluate(base, held))
            whole["after"].append(evaluate(prof, held))
            whole["limits"].append(prof["checks"]["blur"]["max"])
            assert cal.overrides.get("blur", {}).get("max", 1.8) == prof["checks"]["blur"]["max"]
            before = evaluate(base, held)["agreement"]
            for n in COUNTS:
                if n > len(pool):
                    continue
                for _ in range(args.repeats):
                    draw = rng.sample(pool, n)
                    fitted, overrides, _ = fit_thresholds(base, draw)
                    new = fitted["checks"]["blur"]["max"]
                    curve[n].append(("blur" in overrides, abs(new - LIMIT) <= 0.15, before,
                                     evaluate(fitted, held)["agreement"]))

        def pooled(evals: list[dict], key: str) -> float:
            num = sum((e[key] or 0) * e["n"] for e in evals)
            return num / sum(e["n"] for e in evals)

        print(f"reviewer noise {100 * noise:g} % (blur limit {LIMIT}; profile 1.8): held-out photos, 3 folds "
              f"({sum(e['n'] for e in whole['before'])} images); fitted blur.max per fold "
              f"{', '.join(f'{v:g}' for v in whole['limits'])}")
        for key, label in (("agreement", "agreement"), ("precision_pass", "precision of pass"),
                           ("recall_reject", "recall of rejections")):
            print(f"  {label:<22} base {100 * pooled(whole['before'], key):5.1f} %   calibrated "
                  f"{100 * pooled(whole['after'], key):5.1f} %")
        print(f"  {'reviews':>7} {'draws':>5} {'blur moved':>11} {'within 0.15':>12} {'agreement before':>17} "
              f"{'after':>7}")
        for n, runs in curve.items():
            if not runs:
                continue
            print(f"  {n:>7} {len(runs):>5} {100 * sum(r[0] for r in runs) / len(runs):10.0f} % "
                  f"{100 * sum(r[1] for r in runs) / len(runs):11.0f} % {100 * statistics.mean(r[2] for r in runs):16.1f} % "
                  f"{100 * statistics.mean(r[3] for r in runs):6.1f} %")
    print(f"total {time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
