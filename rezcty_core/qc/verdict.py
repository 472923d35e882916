"""The verdict policy: which profile checks an image breaks, its technical score, and the LLM judge folded in.

`failed_checks(measurements, profile)` compares the measurements with the profile's thresholds;
`combine_verdicts(...)` folds in the LLM judge (docs/qc.md). `REASON_CODES` are every reason a report can give.

The gate fails closed: an enabled check whose measure a detector could not make (its model or runtime missing or
corrupt: the measurements' `checks_not_run` names the measures it would have made) fails with `check_unavailable`,
unless the profile's check says `"on_unavailable": "skip"`. A check turned off, or a measure with no value for
this image (no edges to judge, a tiny frame), is not "unavailable": it is simply not judged.
"""
from __future__ import annotations

REASON_CODES = (
    "low_resolution", "too_large", "blurry", "noisy", "overexposed", "underexposed", "low_contrast",
    "color_cast", "oversaturated", "jpeg_artifacts", "banding", "poor_quality", "duplicate", "llm_reject", "qc_error",
    "text", "upsampled", "check_unavailable", "similar",
)
ON_UNAVAILABLE = ("reject", "skip")


def failed_checks(measurements: dict, profile: dict) -> list[dict]:
    """The profile checks this image breaks, each as {code, check, measure, value, limit}.

    A check with `"when": {"measure": m, "min"/"max": x}` applies only while measurement m is in that range.
    A check whose measure could not be made because its detector did not run is {code: "check_unavailable",
    check, measure, value: None, limit: None, not_run: the detector} unless it says `"on_unavailable": "skip"`.
    """
    not_run = {meas: nr["check"] for nr in measurements.get("checks_not_run") or [] for meas in nr.get("measures", ())}
    failed = []
    for key, check in profile.get("checks", {}).items():
        if check.get("enabled", True) is False:
            continue
        value = measurements.get(check["measure"])
        if value is None:
            if check["measure"] in not_run and check.get("on_unavailable", "reject") != "skip":
                failed.append({"code": "check_unavailable", "check": key, "measure": check["measure"], "value": None,
                               "limit": None, "not_run": not_run[check["measure"]]})
            continue  # otherwise not measurable on this image (e.g. no edges for blur)
        when = check.get("when")
        if when is not None:  # the check applies only while another measurement is in range
            other = measurements.get(when["measure"])
            if other is None or ("min" in when and other < when["min"]) or ("max" in when and other > when["max"]):
                continue
        if "min" in check and value < check["min"]:
            failed.append({"code": check["code"], "check": key, "measure": check["measure"], "value": value,
                           "limit": check["min"]})
        elif "max" in check and value > check["max"]:
            failed.append({"code": check["code"], "check": key, "measure": check["measure"], "value": value,
                           "limit": check["max"]})
    return failed


def technical_score(measurements: dict, failed: list[dict], profile: dict) -> float:
    """0-100, higher is better: 100 minus half the BRISQUE score, minus a penalty per broken check."""
    penalty = float(profile.get("score", {}).get("penalty_per_reason", 20))
    brisque = measurements.get("brisque")
    base = 100.0 - 0.5 * min(max(float(brisque), 0.0), 100.0) if brisque is not None else 100.0
    codes = {f["code"] for f in failed}
    return round(max(0.0, base - penalty * len(codes)), 2)


def unique_codes(failed: list[dict]) -> list[str]:
    out: list[str] = []
    for f in failed:
        if f["code"] not in out:
            out.append(f["code"])
    return out


def combine_verdicts(technical_reasons: list[str], technical_score_: float, llm: dict | None, profile: dict) -> dict:
    """Fold the LLM judge into the measured verdict (policy from profile["llm"]["policy"]).

    * `veto` (default): reject when the measurements reject OR a valid LLM reply rejects; the LLM can never
      rescue an image the measurements reject. Score = weighted mean of both scores.
    * `advisory`: the LLM reply is recorded but the verdict and score are the measurements' alone.
    An LLM reply that never parsed (llm["valid"] False) counts as absent.
    """
    opts = profile.get("llm", {})
    policy = opts.get("policy", "veto")
    reasons = list(technical_reasons)
    score = technical_score_
    if llm and llm.get("valid") and policy == "veto":
        if llm.get("verdict") == "reject" and "llm_reject" not in reasons:
            reasons.append("llm_reject")
        weight = float(opts.get("weight", 0.5))
        score = round((1 - weight) * technical_score_ + weight * float(llm.get("score", technical_score_)), 2)
    verdict = "reject" if reasons else "pass"
    min_score = profile.get("score", {}).get("min_score")
    if verdict == "pass" and min_score is not None and score < float(min_score):
        verdict = "reject"
        reasons.append("poor_quality")
    return {"verdict": verdict, "score": score, "reasons": reasons}
