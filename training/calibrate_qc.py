"""Calibrate a QC profile to Adobe's verdicts on the images you submitted.

    python -m training.calibrate_qc --qc DIR [--qc DIR ...] --review FILE_OR_DIR [--base NAME|PATH]
           --out NAME|PROFILE.json [--comfy-user-dir DIR] [--held-out F] [--seed N] [--report FILE]

Inputs:
* --qc: folders of QC results as the pack writes them: the Metadata Writer's sidecars (the JSON beside each
  written JPEG: its `filename` and `qc` entry) and/or line-3 batch folders (`results.json` whose texts hold the
  QC report, read as `build_dataset judge --qc` reads them). Each image is matched to the review by its names.
* --review: Adobe's review results as `rezcty_core.stock.adobe_review` reads them (a CSV Filename,Status,Reason
  or an accepted/ + rejected/<reason>/ folder).
* --base: the profile to start from, a name (looked up as the QC Judge does: the built-ins,
  `<--comfy-user-dir>/rezcty/qc_profiles/`, the folders in $REZCTY_QC_PROFILES) or a path (default adobe_stock).

It fits the base's thresholds to the reviewer's accept/reject (`rezcty_core.qc.calibration`: a threshold moves only
with >= 5 rejections naming its reason; "Quality issues" counts against the profile as a whole), keeps a
held-out share (default 0.25) and prints agreement, precision of "pass" and recall of rejections, before and
after, per reason. Reviews exist only for images QC passed, so thresholds mostly tighten.

Output: a profile that `extends` the base by name. --out NAME writes NAME.json into the user profile folder
(`<--comfy-user-dir>/rezcty/qc_profiles/`, else the first folder of $REZCTY_QC_PROFILES), where the QC Judge's
`profile` combo lists it after a browser refresh (no restart); --out PATH.json writes there. Fewer than 20 reviewed
images: refused, saying how many more are needed (exit 2). Bad lines of the inputs are reported as FILE[:LINE]:
reason and skipped.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from rezcty_core.qc.calibration import (
    HELD_OUT,
    MIN_REJECTIONS,
    MIN_REVIEWS,
    Calibration,
    Reviewed,
    TooFewReviews,
    calibrate,
)
from rezcty_core.qc.profiles import ProfileError, find_profile, load_profile, user_profile_dirs

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.calibrate_qc", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--qc", action="append", type=Path, required=True,
                    help="folder of QC results: Metadata Writer sidecars or a line-3 batch folder (repeatable)")
    ap.add_argument("--review", type=Path, required=True,
                    help="Adobe review: CSV Filename,Status,Reason or accepted/ rejected/<reason>/ folder")
    ap.add_argument("--base", default="adobe_stock", help="profile name or path to start from (default adobe_stock)")
    ap.add_argument("--out", required=True,
                    help="NAME (written to the user profile folder) or a path ending .json")
    ap.add_argument("--comfy-user-dir", type=Path, default=None,
                    help="ComfyUI's user directory (e.g. ComfyUI/user): profiles in its rezcty/qc_profiles/")
    ap.add_argument("--held-out", type=float, default=HELD_OUT, help=f"share kept for validation (default {HELD_OUT})")
    ap.add_argument("--seed", type=int, default=0, help="the held-out draw")
    ap.add_argument("--report", type=Path, default=None, help="also write the full report as JSON here")
    args = ap.parse_args(argv)
    if not 0 <= args.held_out < 1:
        ap.error("--held-out must be from 0 to below 1")
    return args


def fail(message: str, code: int = 2) -> int:
    print(f"calibrate_qc: error: {message}", file=sys.stderr)
    return code


class Problems:
    """Bad items of the inputs, each `FILE[:LINE]: reason; skipped` (also what build_dataset's reader reports)."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def skip(self, where, reason: str, source: str = "") -> None:
        self.items.append(f"{where}: {reason}")
        tqdm.write(f"{where}: {reason}; skipped", file=sys.stderr)


def sidecar_records(folder: Path, problems: Problems) -> list[tuple[list[str], dict, str]]:
    """(names, QC entry, where) from the Metadata Writer's sidecars under `folder`."""
    out = []
    files = sorted(p for p in folder.rglob("*.json") if p.is_file())
    for path in tqdm(files, desc=f"calibrate_qc: {folder.name or folder}", unit="file", file=sys.stderr,
                     disable=len(files) < 50):
        beside = any(path.with_suffix(s).is_file() for s in IMAGE_SUFFIXES)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            if beside:  # a sidecar of an image that cannot be read
                problems.skip(f"{path}:{e.lineno}", f"not valid JSON ({e.msg})")
            continue
        except (OSError, UnicodeDecodeError) as e:
            if beside:
                problems.skip(path, f"cannot read ({e})")
            continue
        if not isinstance(data, dict) or "filename" not in data or "qc" not in data:
            continue  # not a sidecar (results.json, a profile, ...)
        entry = data.get("qc")
        if not isinstance(entry, dict) or not isinstance(entry.get("measurements"), dict):
            problems.skip(path, "no QC entry in this sidecar (the Metadata Writer had no qc_report connected)")
            continue
        names = [str(data["filename"]), path.with_suffix(".jpg").name]
        out.append((names, entry, str(path)))
    return out


def batch_records(folder: Path, problems: Problems) -> list[tuple[list[str], dict, str]]:
    """(names, QC entry, where) from a line-3 batch folder, read as build_dataset judge --qc reads it."""
    from training.build_dataset import judged_images

    if not any(folder.rglob("results.json")):
        return []
    return [(j.names, j.entry, j.where) for j in judged_images(problems, folder, "qc")]


def collect(qc_dirs: list[Path], review_path: Path, problems: Problems) -> tuple[list[Reviewed], dict]:
    """Every QC'd image that the review names, once; and counts of what did not match."""
    from rezcty_core.stock.adobe_review import read_review

    review = read_review(review_path)
    for p in review.problems:
        where, _, reason = p.partition(": ")
        problems.skip(where, reason or p)
    records = []
    for folder in qc_dirs:
        if not folder.is_dir():
            problems.skip(folder, "QC folder not found")
            continue
        records += sidecar_records(folder, problems) + batch_records(folder, problems)
    items: dict[str, Reviewed] = {}
    not_reviewed = 0
    for names, entry, where in records:
        m = entry.get("measurements") or {}
        verdict = review.find(*names)
        if verdict is None:
            not_reviewed += 1
            continue
        key = Path(verdict.filename).name.lower()
        if "error" in m and len(m) == 1:
            problems.skip(where, f"QC could not measure this image ({m['error']})")
            continue
        if key in items:
            if items[key].where != where:  # the same file in two QC folders: the first one counts
                problems.skip(where, f"{verdict.filename} already read from {items[key].where}")
            continue
        items[key] = Reviewed(verdict.filename, m, verdict.accepted, list(verdict.codes), verdict.reason, where)
    unmatched = [v for k, v in review.verdicts.items() if k not in items]
    return list(items.values()), {"qc_records": len(records), "qc_not_reviewed": not_reviewed,
                                  "review_entries": len(review.verdicts), "review_without_qc": len(unmatched),
                                  "review_without_qc_examples": [f"{v.where}: {v.filename}" for v in unmatched[:5]]}


def output_path(out: str, comfy_user_dir: Path | None) -> tuple[Path, str]:
    """(file, profile name) for --out; a bare NAME goes to the first user profile folder."""
    if out.endswith(".json") or "/" in out or "\\" in out:
        path = Path(out).expanduser()
        return path.with_suffix(".json") if path.suffix != ".json" else path, path.stem
    folders = user_profile_dirs(comfy_user_dir)
    if not folders:
        raise ProfileError("--out NAME needs the user profile folder: give --comfy-user-dir (ComfyUI's user "
                           "directory) or set $REZCTY_QC_PROFILES, or give --out a path ending .json")
    return folders[0] / f"{out}.json", out


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:5.1f} %"


def print_report(cal: Calibration, base: str, out: Path, name: str, matched: dict) -> None:
    c = cal.counts
    print(f"calibrate_qc: {c['reviewed']} reviewed images ({c['fitted']} fitted, {c['held_out']} held out): "
          f"{c['accepted']} accepted, {c['rejected_naming_a_check']} rejected naming a check, "
          f"{c['rejected_generic']} generic ('Quality issues'), {c['rejected_other']} for reasons no threshold sees; "
          f"{c['qc_rejected_but_submitted']} QC had rejected")
    print(f"  QC results read: {matched['qc_records']} ({matched['qc_not_reviewed']} not in the review); review "
          f"entries: {matched['review_entries']} ({matched['review_without_qc']} without a QC result)")
    for note in cal.notes:
        print(f"  note: {note}")
    print(f"thresholds of {base}:")
    for row in cal.checks:
        value = f"{row['side']} {row['old']:g}" + (f" -> {row['new']:g}" if row["new"] != row["old"] else "")
        print(f"  {row['check']:<20} {row['measure']:<20} {value:<22} {row['status']}")
    for label, before, after in (("held out", cal.before, cal.after), ("fitted", cal.fit_before, cal.fit_after)):
        if not before:
            continue
        print(f"{label} ({before['n']} images)                    before    after")
        for key, text in (("agreement", "agreement"), ("precision_pass", "precision of pass"),
                          ("recall_reject", "recall of rejections")):
            print(f"  {text:<36} {pct(before[key]):>8} {pct(after[key]):>8}")
        t0, t1 = before["technical"], after["technical"]
        print(f"  {'agreement without non-technical':<36} {pct(t0['agreement']):>8} {pct(t1['agreement']):>8}")
        for code, row in before["per_reason"].items():
            caught = after["per_reason"][code]["caught"]
            print(f"  {'recall: ' + code:<36} {row['caught']:>4}/{row['n']:<3} {caught:>4}/{row['n']:<3}")
    print(f"wrote {out}: profile '{name}' extends '{base}'" + (
        f" ({', '.join(f'{k}.{next(iter(v))} {next(iter(v.values())):g}' for k, v in cal.overrides.items())})"
        if cal.overrides else " (no threshold moved)"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    user_dirs = user_profile_dirs(args.comfy_user_dir)
    try:
        base = find_profile(args.base, user_dirs)
        out, name = output_path(args.out, args.comfy_user_dir)
    except ProfileError as e:
        return fail(str(e))
    base_name, base_path = base["name"], Path(base["path"])
    if name == base_name:
        return fail(f"--out {args.out}: the calibrated profile needs a name other than its base '{base_name}'")
    if not args.review.exists():
        return fail(f"{args.review}: review file or folder not found")
    problems = Problems()
    items, matched = collect(args.qc, args.review, problems)
    try:
        cal = calibrate(base, items, held_out=args.held_out, seed=args.seed)
    except TooFewReviews as e:
        return fail(f"{e} (QC results in {', '.join(map(str, args.qc))}, review {args.review}; "
                    f"{matched['review_without_qc']} review entries found no QC result)")
    # the profile extends the base by name: the base must be found by that name from where the profile is read
    lookup = [*user_dirs, out.parent]
    try:
        found = Path(load_profile(base_name, lookup)["path"]).resolve()
    except ProfileError:
        found = None
    notes = []
    if found != base_path.resolve():
        copy_to = out.parent / base_path.name
        if copy_to.exists() and copy_to.resolve() != base_path.resolve():
            return fail(f"{copy_to} exists and is not the base {base_path}: the calibrated profile extends "
                        f"'{base_name}' by name; rename one of them")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base_path, copy_to)
        notes.append(f"copied the base {base_path} to {copy_to} (the profile extends it by name)")
    profile = {
        "extends": base_name,
        "description": f"Calibrated by training.calibrate_qc on {cal.counts['reviewed']} Adobe reviews "
                       f"({time.strftime('%Y-%m-%d')}) from '{base_name}'; reviews exist only for images QC passed, "
                       "so thresholds mostly tighten. Re-run it as reviews come in (docs/qc.md).",
        "checks": cal.overrides,
        "calibration": {"base": base_name, "made": time.strftime("%Y-%m-%dT%H:%M:%S"), "counts": cal.counts,
                        "held_out": {"before": _brief(cal.before), "after": _brief(cal.after)},
                        "thresholds": {r["check"]: r["status"] for r in cal.checks if r["named_rejections"]
                                       or r["new"] != r["old"]},
                        "min_rejections": MIN_REJECTIONS, "min_reviews": MIN_REVIEWS},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.part")
    tmp.write_text(json.dumps(profile, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    try:
        load_profile(name, lookup)
    except ProfileError as e:  # never leave a profile the QC Judge cannot load
        out.unlink()
        return fail(f"the calibrated profile would not load ({e}); nothing written")
    print_report(cal, base_name, out, name, matched)
    for note in notes:
        print(f"  {note}")
    if out.parent.resolve() not in {d.resolve() for d in user_dirs}:
        print(f"  note: {out.parent} is not a folder the QC Judge reads; copy the file to "
              "<ComfyUI user dir>/rezcty/qc_profiles/ or add its folder to $REZCTY_QC_PROFILES")
    else:
        print(f"  the QC Judge's profile combo lists '{name}' after a browser refresh (no restart)")
    if problems.items:
        print(f"  {len(problems.items)} input item(s) skipped (listed above)")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"profile": str(out), "matched": matched, "problems": problems.items,
                                           **asdict(cal)}, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


def _brief(ev: dict) -> dict:
    return {k: ev.get(k) for k in ("n", "agreement", "precision_pass", "recall_reject")} if ev else {}


if __name__ == "__main__":
    raise SystemExit(main())
