"""Fit a QC profile's thresholds to a reviewer's accept/reject on the images that were actually submitted.

`calibrate(profile, reviewed)` takes the base profile (loaded, `extends` merged) and one `Reviewed` per image that
has both a QC entry (its measurements) and the agency's verdict, keeps a held-out share, fits the thresholds on the
rest and returns the overrides plus the report (`Calibration`). `training/calibrate_qc.py` reads the files and
writes the profile; docs/qc.md ("Calibrating to your reviews") says what the numbers mean.

What moves and why:
* A rejection names checks through its reason codes (`stock/adobe_review.reason_codes`): "out of focus" is
  `blurry`, the profile's `blur` (and `motion_blur`) checks. A check's threshold moves only when at least
  MIN_REJECTIONS rejections of the fitting share name its code; otherwise it is left alone (the report says so).
* A generic rejection ("Quality issues": `poor_quality`) names no check: it counts against the profile as a
  whole (agreement when any check rejects the image), never for one check: it adds to no check's count, so it
  can never make a threshold move by itself.
* Rejections no threshold can see (similar content, intellectual property, commercial appeal, metadata,
  anatomy, releases) are left out of the fit and reported apart.
* Each movable threshold is set, one at a time and repeated until nothing changes, where the agreement of the
  whole profile with the reviewer is highest over the accepted images, the rejections naming its code and the
  generic ones; among equal agreements the current value stays, else the middle of the best interval.
Reviews exist only for images QC passed (and the few submitted against its verdict), so the data show where the
profile was too lenient far more often than where it was too strict: thresholds mostly tighten.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import numpy as np

from rezcty_core.qc.verdict import failed_checks

MIN_REVIEWS = 20  # fewer reviewed images in all: refuse
MIN_REJECTIONS = 5  # a threshold moves only with at least this many rejections naming its code (fitting share)
HELD_OUT = 0.25
GENERIC_CODES = frozenset({"poor_quality"})  # "Quality issues", "technical": no check in particular
CODE_ALIASES = {"exposure": ("overexposed", "underexposed")}  # Adobe's "exposure" names both checks
ROUNDS = 6


class TooFewReviews(ValueError):
    """Fewer than MIN_REVIEWS reviewed images: `have` and `needed` (how many more)."""

    def __init__(self, have: int, minimum: int = MIN_REVIEWS):
        self.have, self.needed = have, minimum - have
        super().__init__(f"{have} reviewed image{'s' if have != 1 else ''} matched a QC result; calibration needs "
                         f"at least {minimum}: {minimum - have} more needed")


@dataclass
class Reviewed:
    """One submitted image: its QC measurements and the reviewer's verdict."""
    name: str
    measurements: dict
    accepted: bool
    codes: list[str] = field(default_factory=list)  # the reviewer's reason codes (project codes); [] if accepted
    reason: str = ""  # the reviewer's wording
    where: str = ""  # the QC record it came from (FILE[:entry])


@dataclass
class Calibration:
    base: str
    overrides: dict  # check name -> {"min"|"max": new value}
    checks: list[dict]  # per check: name, code, measure, side, old, new, named rejections, status
    before: dict  # held-out evaluation of the base profile
    after: dict  # held-out evaluation of the calibrated profile
    fit_before: dict  # the same on the fitting share
    fit_after: dict
    counts: dict  # reviewed, fitted, held_out, accepted, rejected by kind
    notes: list[str]


def check_codes(profile: dict) -> set[str]:
    return {c["code"] for c in profile.get("checks", {}).values()}


def named_codes(item: Reviewed, profile: dict) -> set[str]:
    """The profile check codes a rejection names (aliases expanded)."""
    codes: set[str] = set()
    for code in item.codes:
        codes.update(CODE_ALIASES.get(code, (code,)))
    return codes & (check_codes(profile) - GENERIC_CODES)


def kind(item: Reviewed, profile: dict) -> str:
    """accepted | named (names a check) | generic (names none: 'Quality issues') | other (no threshold sees it)."""
    if item.accepted:
        return "accepted"
    if named_codes(item, profile):
        return "named"
    if not item.codes or set(item.codes) & GENERIC_CODES:
        return "generic"
    return "other"


def rejects(profile: dict, item: Reviewed) -> bool:
    """The profile's thresholds reject this image (the measured checks only: duplicates, text boxes and the LLM
    are not re-judged here)."""
    return bool(failed_checks(item.measurements, profile))


def evaluate(profile: dict, items: list[Reviewed]) -> dict:
    """Agreement with the reviewer (all images, and without the rejections no threshold can see), precision of
    "pass" (accepted among those the profile passes), recall of rejections, and recall per reason code."""
    kinds = [kind(i, profile) for i in items]
    pred = [rejects(profile, i) for i in items]

    def block(sel: list[int]) -> dict:
        n = len(sel)
        agree = sum(pred[j] != items[j].accepted for j in sel)
        passed = [j for j in sel if not pred[j]]
        rejected = [j for j in sel if not items[j].accepted]
        return {"n": n, "agreement": _ratio(agree, n),
                "precision_pass": _ratio(sum(items[j].accepted for j in passed), len(passed)),
                "recall_reject": _ratio(sum(pred[j] for j in rejected), len(rejected))}

    out = block(list(range(len(items))))
    out["technical"] = block([j for j, k in enumerate(kinds) if k != "other"])
    per_reason: dict[str, dict] = {}
    for j, item in enumerate(items):
        if item.accepted:
            continue
        for code in item.codes or ["poor_quality"]:
            row = per_reason.setdefault(code, {"n": 0, "caught": 0})
            row["n"] += 1
            row["caught"] += int(pred[j])
    for row in per_reason.values():
        row["recall"] = _ratio(row["caught"], row["n"])
    out["per_reason"] = dict(sorted(per_reason.items()))
    return out


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def split_held_out(items: list[Reviewed], share: float, seed: int) -> tuple[list[Reviewed], list[Reviewed]]:
    """(fit, held out): `share` of the accepted and of the rejected images, drawn with `seed`."""
    if share <= 0:
        return list(items), []
    rng = random.Random(seed)
    fit, held = [], []
    for group in ([i for i in items if i.accepted], [i for i in items if not i.accepted]):
        order = list(group)
        rng.shuffle(order)
        cut = int(round(share * len(order)))
        held += order[:cut]
        fit += order[cut:]
    return fit, held


def _values(items: list[Reviewed], check: dict) -> tuple[np.ndarray, np.ndarray]:
    """The check's measurement per image (nan where missing) and whether the check applies (its `when`)."""
    vals = np.array([_num(i.measurements.get(check["measure"])) for i in items], dtype=np.float64)
    applies = ~np.isnan(vals)
    when = check.get("when")
    if when is not None:
        other = np.array([_num(i.measurements.get(when["measure"])) for i in items], dtype=np.float64)
        ok = ~np.isnan(other)
        if "min" in when:
            ok &= ~(other < when["min"])
        if "max" in when:
            ok &= ~(other > when["max"])
        applies &= ok
    return vals, applies


def _num(v) -> float:
    try:
        return float(v) if v is not None and not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def _fails(vals: np.ndarray, applies: np.ndarray, side: str, t: np.ndarray) -> np.ndarray:
    """(candidates, images): the check fails at threshold t."""
    v = np.where(applies, vals, np.nan)[None, :]
    t = t[:, None]
    with np.errstate(invalid="ignore"):
        return (v > t) if side == "max" else (v < t)


def _fit_one(check: dict, side: str, current: float, vals: np.ndarray, applies: np.ndarray, should_reject: np.ndarray,
             counted: np.ndarray, others: np.ndarray) -> float:
    """The threshold with the best agreement over the counted images, the current one when it is among them."""
    movable = counted & applies & ~others  # where this threshold decides
    u = np.unique(vals[movable])
    if len(u) == 0:
        return current
    span = float(u[-1] - u[0]) if len(u) > 1 else abs(float(u[0])) or 1.0
    delta = 0.05 * span
    cands = np.concatenate([[u[0] - delta], (u[:-1] + u[1:]) / 2.0, [u[-1] + delta], [current]])

    def score(ts: np.ndarray) -> np.ndarray:
        fails = _fails(vals, applies, side, ts)
        rejected = fails | others[None, :]
        right = np.where(should_reject[None, :], rejected, ~rejected)
        return (right & counted[None, :]).sum(axis=1)

    scores = score(cands)
    best = int(scores.max())
    if scores[-1] == best:  # the reviews agree with the current value as well as with any other
        return current
    good = scores[:-1] == best
    runs, start = [], None  # contiguous runs of best candidates -> the data intervals they span
    for i, g in enumerate(np.append(good, False)):
        if g and start is None:
            start = i
        elif not g and start is not None:
            runs.append((start, i - 1))
            start = None
    intervals = [(u[a - 1] if a >= 1 else -math.inf, u[b] if b <= len(u) - 1 else math.inf) for a, b in runs]
    lo, hi = min(intervals, key=lambda iv: 0.0 if iv[0] <= current <= iv[1] else min(abs(current - iv[0]),
                                                                                      abs(current - iv[1])))
    if math.isinf(lo) and math.isinf(hi):
        return current
    if math.isinf(lo):
        return float(hi - delta)
    if math.isinf(hi):
        return float(lo + delta)
    return float((lo + hi) / 2.0)


def _round_like(value: float, like) -> float | int:
    if isinstance(like, int) and not isinstance(like, bool):
        return int(round(value))
    if value == 0:
        return 0.0
    digits = max(0, 3 - int(math.floor(math.log10(abs(value)))))
    return round(value, digits)


def fit_thresholds(profile: dict, items: list[Reviewed], min_rejections: int = MIN_REJECTIONS
                   ) -> tuple[dict, dict, list[dict]]:
    """Fit on `items`: (the calibrated profile, the overrides, one report row per check)."""
    prof = copy.deepcopy(profile)
    checks = prof.get("checks", {})
    kinds = [kind(i, prof) for i in items]
    named = [named_codes(i, prof) for i in items]
    rows, movable = [], []
    for key, check in checks.items():
        side = "max" if "max" in check else "min"
        n_named = sum(check["code"] in codes for codes in named)
        row = {"check": key, "code": check["code"], "measure": check["measure"], "side": side,
               "old": check[side], "new": check[side], "named_rejections": n_named}
        if check.get("enabled", True) is False:
            row["status"] = "left alone: disabled in the base profile"
        elif n_named < min_rejections:
            row["status"] = (f"left alone: {n_named} rejection{'s' if n_named != 1 else ''} name"
                             f"{'s' if n_named == 1 else ''} '{check['code']}' (needs {min_rejections})")
        elif not np.any(_values(items, check)[1]):
            row["status"] = "left alone: not measured on these images"
        else:
            movable.append(key)
            row["status"] = "kept: the reviews agree with it"
        rows.append(row)
    should_reject = np.array([k != "accepted" for k in kinds])
    data = {key: _values(items, checks[key]) for key in checks}
    for _ in range(ROUNDS):
        changed = False
        for key in movable:
            check = checks[key]
            side = "max" if "max" in check else "min"
            # the images this threshold is judged on: accepted, rejections naming its code, generic rejections
            counted = np.array([k == "accepted" or k == "generic" or (k == "named" and check["code"] in c)
                                for k, c in zip(kinds, named)])
            without = {**prof, "checks": {k: c for k, c in checks.items() if k != key}}
            others = np.array([bool(failed_checks(i.measurements, without)) for i in items])
            vals, applies = data[key]
            new = _fit_one(check, side, float(check[side]), vals, applies, should_reject, counted, others)
            new = _round_like(new, check[side])
            if new != check[side]:
                check[side] = new
                changed = True
        if not changed:
            break
    overrides = {}
    for row in rows:
        new = checks[row["check"]][row["side"]]
        if new != row["old"]:
            row["new"] = new
            row["status"] = "tightened" if (new < row["old"]) == (row["side"] == "max") else "loosened"
            overrides[row["check"]] = {row["side"]: new}
    return prof, overrides, rows


def calibrate(profile: dict, items: list[Reviewed], *, held_out: float = HELD_OUT, seed: int = 0,
              min_reviews: int = MIN_REVIEWS, min_rejections: int = MIN_REJECTIONS) -> Calibration:
    """Fit `profile`'s thresholds to the reviewer on a (1 - held_out) share of `items`; evaluate both on the rest.
    Raises TooFewReviews under `min_reviews` reviewed images."""
    if len(items) < min_reviews:
        raise TooFewReviews(len(items), min_reviews)
    fit, held = split_held_out(items, held_out, seed)
    calibrated, overrides, rows = fit_thresholds(profile, fit, min_rejections)
    kinds = [kind(i, profile) for i in items]
    counts = {"reviewed": len(items), "fitted": len(fit), "held_out": len(held),
              "accepted": kinds.count("accepted"), "rejected_naming_a_check": kinds.count("named"),
              "rejected_generic": kinds.count("generic"), "rejected_other": kinds.count("other"),
              "qc_rejected_but_submitted": sum(rejects(profile, i) for i in items)}
    notes = ["Reviews exist only for images QC passed (and any submitted against its verdict), so they show where "
             "the profile was too lenient, rarely where it was too strict: thresholds mostly tighten."]
    if counts["rejected_generic"]:
        notes.append(f"{counts['rejected_generic']} rejection(s) name no check ('Quality issues'): counted against "
                     "the profile as a whole, never for one check.")
    if counts["rejected_other"]:
        others = sorted({c for i, k in zip(items, kinds) if k == "other" for c in i.codes})
        notes.append(f"{counts['rejected_other']} rejection(s) for reasons no threshold sees ({', '.join(others)}) "
                     "are left out of the fit.")
    if not held:
        notes.append("No held-out share (--held-out 0): the figures below are on the images fitted.")
    return Calibration(base=str(profile.get("name", "")), overrides=overrides, checks=rows,
                       before=evaluate(profile, held) if held else {}, after=evaluate(calibrated, held) if held else {},
                       fit_before=evaluate(profile, fit), fit_after=evaluate(calibrated, fit), counts=counts,
                       notes=notes)
