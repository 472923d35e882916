"""Build a dataset.jsonl for train_adapter from what the user already has.

    python -m training.build_dataset whisperer --captions DIR [--captions DIR ...] --embeddings DIR --out FILE
           [--ideas-per-caption K] [--held-out F] [--text-only] [--curate K] [--strict]
    python -m training.build_dataset whisperer --factory RUN_DIR [...] [--accepted FILE] --out FILE
    python -m training.build_dataset judge --qc RUN_DIR [...] [--review FILE_OR_DIR] [--upload-csv FILE] --out FILE

Sources:
* captions: kohya-layout caption folders (image + same-stem .txt, `N_name` folders name the trigger).
  Each clean caption (Two-Teachers rules, `rezcty_core.sd.captions`) is an `output_text`; its
  `input_text` is a short idea distilled from it (`rezcty_core.sd.ideas`, K granularities); the
  image embedding comes from the `precompute_dinov2` manifest in --embeddings, and precompute runs
  first (same cache) for images it does not cover yet.
* factory runs (whisperer): a run folder of the headless client / `./rezcty demo` (`*/results.json`,
  `prompts.json`, images with their NAME.txt prompt): (idea -> prompt) pairs whose image passed QC
  (or, with --accepted, that Adobe accepted), with that image's embedding.
* QC runs (judge): QC report entries -> input `qc.measurements_text`, output the verdict and reason
  codes as JSON (+ title and keywords of passed/accepted images from the upload CSV). A review
  (`rezcty_core.stock.adobe_review`) overrides the QC verdict.

For every source: duplicates (same image, same texts) dropped; `--held-out F` moves whole subjects
(the caption's head noun) to `held_out.jsonl` beside --out, which train_adapter's eval reads;
`--curate K` keeps a diverse K-row subset of the training rows (training.curate);
`build_report.json` beside --out. Bad items are reported as `FILE[:LINE]: reason; skipped` and
skipped (exit 0); --strict makes them fatal (exit 1). Nothing is written next to the user's images.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from rezcty_core.sd.captions import (
    IMAGE_EXTS,
    caption_files,
    check_caption,
    folder_trigger,
    load_word_lists,
    read_caption,
)
from rezcty_core.sd.ideas import ideas as distil_ideas
from rezcty_core.sd.ideas import subject as caption_subject


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.build_dataset", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="specialist", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, type=Path, help="dataset.jsonl to write (held_out.jsonl, build_report.json beside it)")
        p.add_argument("--embeddings", type=Path, default=None,
                       help="precompute_dinov2 output folder (read, and filled when images are missing; "
                            "default: embeddings/ beside --out)")
        p.add_argument("--held-out", type=float, default=0.0, help="fraction of the rows moved to held_out.jsonl, by subject")
        p.add_argument("--curate", type=int, default=0, help="keep a diverse subset of K training rows (training.curate)")
        p.add_argument("--strict", action="store_true", help="any bad item is fatal (exit 1) instead of skipped")
        p.add_argument("--model", default="embedded", help="DINOv2 for precompute (default: the embedded dinov2-small)")
        p.add_argument("--pooling", default="cls", help="pooling for precompute (cls, mean, cls+mean, patch)")
        p.add_argument("--seed", type=int, default=0)

    w = sub.add_parser("whisperer", help="idea -> prompt rows (captions, factory runs)")
    w.add_argument("--captions", action="append", type=Path, default=[], help="kohya-layout caption folder (repeatable)")
    w.add_argument("--factory", action="append", type=Path, default=[], help="factory run folder (repeatable)")
    w.add_argument("--accepted", type=Path, default=None, help="only factory images Adobe accepted (list, review CSV or folder)")
    w.add_argument("--ideas-per-caption", type=int, default=1, help="ideas per caption, coarse to fine (1-4)")
    w.add_argument("--text-only", action="store_true", help="also write every row without its image")
    w.add_argument("--trigger", default=None, help="trigger word of the captions (default: the kohya folder name)")
    common(w)
    j = sub.add_parser("judge", help="measurements -> verdict rows (QC runs, Adobe review)")
    j.add_argument("--qc", action="append", type=Path, default=[], required=True, help="run folder with QC reports (repeatable)")
    j.add_argument("--review", type=Path, default=None, help="Adobe review: CSV Filename,Status,Reason or accepted/ rejected/<reason>/ folder")
    j.add_argument("--upload-csv", action="append", type=Path, default=[],
                   help="the upload CSV with titles/keywords (default: Filename,Title,Keywords CSVs found in the run folders)")
    common(j)
    args = ap.parse_args(argv)
    if args.specialist == "whisperer" and not (args.captions or args.factory):
        ap.error("whisperer needs --captions DIR and/or --factory RUN_DIR")
    if not 0 <= args.held_out < 1:
        ap.error("--held-out must be from 0 to below 1")
    if args.specialist == "whisperer" and not 1 <= args.ideas_per_caption <= 4:
        ap.error("--ideas-per-caption must be 1 to 4")
    return args


def fail(message: str, code: int = 2) -> int:
    print(f"build_dataset: error: {message}", file=sys.stderr)
    return code


@dataclass
class Build:
    """Rows collected so far, and every skipped item with its reason."""
    out: Path
    strict: bool
    rows: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def skip(self, where: str | Path, reason: str, source: str) -> None:
        self.skipped.append({"file": str(where), "reason": reason, "source": source})
        tqdm.write(f"{where}: {reason}; skipped", file=sys.stderr)

    def problem(self, text: str, source: str) -> None:
        """A `FILE[:LINE]: reason` string from a reader -> a skipped item."""
        where, _, reason = text.partition(": ")
        self.skip(where, reason or text, source)

    def add(self, row: dict) -> None:
        self.rows.append(row)


# --- embeddings: the precompute manifest (precompute runs first for what it lacks) -------------

def read_manifests(emb_dir: Path) -> dict[str, dict]:
    """Resolved image path -> manifest line (embedding made absolute), from every manifest.jsonl under emb_dir."""
    found: dict[str, dict] = {}
    if not emb_dir.is_dir():
        return found
    for manifest in sorted(emb_dir.rglob("manifest.jsonl")):
        for raw in manifest.read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(line, dict) or "image" not in line:
                continue
            image = Path(line["image"])
            image = image if image.is_absolute() else (Path.cwd() / image)
            entry = dict(line)
            if "embedding" in line:
                entry["embedding_abs"] = str((manifest.parent / line["embedding"]).resolve())
            found[str(image.resolve())] = entry
    return found


def ensure_embeddings(images: list[Path], emb_dir: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Manifest lines for every image; precompute_dinov2 runs (shared cache emb_dir) per folder lacking some."""
    from training import precompute_dinov2

    known = read_manifests(emb_dir)
    missing = sorted({p.parent for p in images if str(p.resolve()) not in known})
    for folder in missing:
        digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
        out = emb_dir / "manifests" / f"{folder.name}-{digest}"
        print(f"build_dataset: precompute_dinov2 for {folder} -> {out}", file=sys.stderr)
        code = precompute_dinov2.main(["--images", str(folder.resolve()), "--out", str(out), "--cache", str(emb_dir),
                                       "--no-recursive", "--model", args.model, "--pooling", args.pooling])
        if code not in (0, 1):
            raise SystemExit(fail(f"precompute_dinov2 failed for {folder} (exit {code})"))
    return read_manifests(emb_dir) if missing else known


def embedding_of(manifest: dict[str, dict], image: Path) -> tuple[str | None, str | None]:
    """(absolute embedding path, None) or (None, why not)."""
    line = manifest.get(str(image.resolve()))
    if line is None:
        return None, "no embedding for this image in the manifest"
    if "error" in line:
        return None, f"unreadable image ({str(line['error']).split(': ', 1)[-1]})"
    return line["embedding_abs"], None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


# --- source 1: caption folders ----------------------------------------------------------------

def caption_image(caption: Path) -> Path | None:
    for ext in sorted(IMAGE_EXTS):
        for cand in (caption.with_suffix(ext), caption.with_suffix(ext.upper())):
            if cand.is_file():
                return cand
    return None


def caption_rows(build: Build, roots: list[Path], emb_dir: Path, args: argparse.Namespace) -> None:
    lists = load_word_lists()
    pairs: list[tuple[Path, Path, Path]] = []
    for root in roots:
        if not root.is_dir():
            build.skip(root, "caption folder not found", "captions")
            continue
        captions, orphans = caption_files(root)
        for image in orphans:
            build.skip(image, "image without a caption (no same-stem .txt)", "captions")
        for cap in captions:
            image = caption_image(cap)
            if image is None:
                build.skip(cap, "caption without an image (no same-stem .png/.jpg/.jpeg/.webp/.bmp)", "captions")
            else:
                pairs.append((root, cap, image))
    if not pairs:
        return
    manifest = ensure_embeddings([img for _, _, img in pairs], emb_dir, args)
    known = set(lists.triggers) | {t for _, c, _ in pairs if (t := folder_trigger(c.parent))}
    for _root, cap, image in tqdm(pairs, desc="build_dataset: captions", unit="caption", file=sys.stderr):
        trigger = args.trigger or folder_trigger(cap.parent)
        if not trigger:
            build.skip(cap, "no trigger word: put the set in a kohya N_name folder or pass --trigger", "captions")
            continue
        try:
            text = read_caption(cap)
        except ValueError as e:
            build.skip(cap, str(e).split(": ", 1)[-1], "captions")
            continue
        others = sorted(known - {trigger})
        violations = check_caption(text, trigger, others, lists)
        if violations:
            build.skip(cap, "breaks the Two-Teachers caption rules: " + "; ".join(map(str, violations))
                       + " (python -m training.lint_captions --fix can repair most)", "captions")
            continue
        emb, why = embedding_of(manifest, image)
        if emb is None:
            build.skip(image, why, "captions")
            continue
        for idea in distil_ideas(text, args.ideas_per_caption, [trigger, *others]):
            build.add({"image_embedding_path": emb, "input_text": idea, "output_text": text, "source": "captions",
                       "subject": caption_subject(text, [trigger, *others]), "trigger": trigger,
                       "source_image": str(image), "source_file": str(cap)})


# --- factory run folders ----------------------------------------------------------------------

@dataclass
class Judged:
    """One QC report entry of a run, with what the run knows about its image."""
    image: Path
    names: list[str]  # names the image goes by: the input file, the files the writer saved
    entry: dict
    prompt: str | None
    where: str


def _report_entries(texts: dict) -> list[dict]:
    out = []
    for values in (texts or {}).values():
        for text in values if isinstance(values, list) else [values]:
            try:
                parsed = json.loads(text)
            except (TypeError, ValueError):
                continue
            items = parsed if isinstance(parsed, list) else parsed.get("entries", [parsed]) if isinstance(parsed, dict) else []
            out.extend(e for e in items if isinstance(e, dict) and e.get("verdict") in ("pass", "reject"))
    return out


def _find_image(run: Path, row: dict) -> Path | None:
    recorded = row.get("image")
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    name = Path(recorded or row.get("label") or "").name
    if not name:
        return None
    hits = sorted(p for p in run.rglob(name) if p.is_file())
    return hits[0] if hits else None


def judged_images(build: Build, run: Path, source: str) -> list[Judged]:
    """Every QC report entry in a run folder (any results.json whose texts hold QC entries)."""
    found = []
    if not run.is_dir():
        build.skip(run, "run folder not found", source)
        return found
    for results in sorted(run.rglob("results.json")):
        try:
            rows = json.loads(results.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            build.skip(results, f"not readable JSON ({e})", source)
            continue
        for n, row in enumerate(rows if isinstance(rows, list) else [], 1):
            entries = _report_entries(row.get("texts"))
            if not entries:
                continue
            where = f"{results}:entry {n}"
            image = _find_image(run, row)
            if image is None:
                build.skip(where, f"QC'd image {row.get('image') or row.get('label')!r} not found in {run}", source)
                continue
            names = [image.name] + [Path(f).name for f in row.get("files", [])]
            key8 = str(row.get("key", ""))[:8]
            names += [n[len(key8) + 1:] for n in names if key8 and n.startswith(key8 + "_")]
            sidecar = image.with_suffix(".txt")
            prompt = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else row.get("prompt")
            for entry in entries[:1]:  # one image per item: its first entry
                found.append(Judged(image, names, entry, prompt or None, where))
    return found


def run_ideas(run: Path) -> dict[str, str]:
    """prompt -> idea, from prompts.json files and line-1 results of a run folder."""
    found: dict[str, str] = {}
    for path in sorted(run.rglob("prompts*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for r in data if isinstance(data, list) else []:
            if isinstance(r, dict) and r.get("idea") and r.get("prompt"):
                found.setdefault(str(r["prompt"]).strip(), str(r["idea"]).strip())
    for results in sorted(run.rglob("results.json")):
        try:
            rows = json.loads(results.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for r in rows if isinstance(rows, list) else []:
            if isinstance(r, dict) and r.get("idea"):
                for values in (r.get("texts") or {}).values():
                    for text in values if isinstance(values, list) else []:
                        if isinstance(text, str) and not text.lstrip().startswith(("[", "{")):
                            found.setdefault(text.strip(), str(r["idea"]).strip())
    return found


def factory_rows(build: Build, runs: list[Path], emb_dir: Path, args: argparse.Namespace) -> None:
    from rezcty_core.stock.adobe_review import read_accepted

    accepted = read_verdict_file(build, args.accepted, read_accepted, "accepted")
    candidates = []
    for run in runs:
        ideas_by_prompt = run_ideas(run)
        for j in judged_images(build, run, "factory"):
            candidates.append((run, j, ideas_by_prompt))
    matched: set[str] = set()
    keep = []
    for run, j, ideas_by_prompt in candidates:
        if accepted is not None:
            verdict = accepted.find(*j.names)
            if verdict is None or not verdict.accepted:
                continue
            matched.add(Path(verdict.filename).name.lower())
        elif j.entry.get("verdict") != "pass":
            continue
        if not j.prompt:
            build.skip(j.image, "no prompt for this image (no NAME.txt beside it)", "factory")
            continue
        keep.append((run, j, ideas_by_prompt))
    skip_unmatched(build, accepted, matched, "factory", "accepted file {name!r} is not in any factory run given",
                   accepted_only=True)
    if not keep:
        return
    manifest = ensure_embeddings([j.image for _, j, _ in keep], emb_dir, args)
    for _run, j, ideas_by_prompt in keep:
        emb = row_embedding(build, manifest, j, "factory")
        if emb is None:
            continue
        idea = ideas_by_prompt.get(j.prompt)
        derived = idea is None
        idea = idea or next(iter(distil_ideas(j.prompt, 1)), None)
        if not idea:
            build.skip(j.image, "no idea for this prompt (not in prompts.json, nothing to distil)", "factory")
            continue
        build.add({"image_embedding_path": emb, "input_text": idea, "output_text": j.prompt, "source": "factory",
                   "subject": caption_subject(idea) or caption_subject(j.prompt), "idea_distilled": derived,
                   "source_image": str(j.image), "source_file": j.where})


# --- judge ------------------------------------------------------------------------------------

def judge_rows(build: Build, runs: list[Path], emb_dir: Path, args: argparse.Namespace) -> None:
    from rezcty_core.qc.judge import measurements_text
    from rezcty_core.stock.adobe_review import is_upload_csv, read_review, read_upload_csv

    review = read_verdict_file(build, args.review, read_review, "review")
    uploads: dict[str, dict] = {}
    csvs = list(args.upload_csv) + [p for run in runs if run.is_dir() for p in sorted(run.rglob("*.csv")) if is_upload_csv(p)]
    for path in csvs:
        found, problems = read_upload_csv(path)
        uploads.update(found)
        for p in problems:
            build.problem(p, "upload_csv")
    judged = [j for run in runs for j in judged_images(build, run, "qc")]
    if not judged:
        return
    manifest = ensure_embeddings([j.image for j in judged], emb_dir, args)
    matched: set[str] = set()
    for j in tqdm(judged, desc="build_dataset: judge", unit="image", file=sys.stderr):
        m = j.entry.get("measurements") or {}
        if "error" in m and len(m) == 1:
            build.skip(j.where, f"QC could not measure the image ({m['error']})", "qc")
            continue
        verdict, reasons = j.entry["verdict"], list(j.entry.get("reasons") or [])
        reviewed = review.find(*j.names) if review else None
        extra: dict = {}
        if reviewed is not None:
            matched.add(Path(reviewed.filename).name.lower())
            verdict = "pass" if reviewed.accepted else "reject"
            reasons = [] if reviewed.accepted else reviewed.codes
            extra["review"] = {"status": "accepted" if reviewed.accepted else "rejected", "reason": reviewed.reason,
                               "qc_verdict": j.entry["verdict"], "qc_reasons": j.entry.get("reasons") or []}
        answer: dict = {"verdict": verdict, "reasons": reasons}
        if verdict == "pass":
            meta = next((uploads[n.lower()] for n in j.names if n.lower() in uploads), None)
            if meta:
                answer.update(title=meta["title"], keywords=meta["keywords"])
        emb = row_embedding(build, manifest, j, "qc")
        if emb is None:
            continue
        subject_text = caption_subject(j.prompt) if j.prompt else ""
        build.add({"image_embedding_path": emb, "input_text": measurements_text(m, j.entry.get("failed_checks") or []),
                   "output_text": answer, "source": "review" if reviewed else "qc",
                   "subject": subject_text or j.image.stem, "source_image": str(j.image), "source_file": j.where,
                   **extra})
    skip_unmatched(build, review, matched, "review", "review names {name!r}, which is in no QC run given")


def read_verdict_file(build: Build, path: Path | None, reader, source: str):
    """An Adobe review / accepted-uploads file read with `reader`; its bad lines reported under `source`."""
    if not path:
        return None
    verdicts = reader(path)
    for p in verdicts.problems:
        build.problem(p, source)
    return verdicts


def skip_unmatched(build: Build, verdicts, matched: set[str], source: str, message: str,
                   accepted_only: bool = False) -> None:
    """Report each verdict of a review file that named no image of the runs given (`message` gets `name`)."""
    if verdicts is None:
        return
    for key, v in verdicts.verdicts.items():
        if key not in matched and (v.accepted or not accepted_only):
            build.skip(v.where, message.format(name=v.filename), source)


def row_embedding(build: Build, manifest, judged, source: str) -> str | None:
    """The embedding path of a judged image, or None with the image skipped and the reason reported."""
    emb, why = embedding_of(manifest, judged.image)
    if emb is None:
        build.skip(judged.image, why, source)
    return emb


# --- for every source: de-duplicate, held-out by subject, curate, report ----------------------

def deduplicate(rows: list[dict]) -> tuple[list[dict], int]:
    """Same image (the embedding file is keyed by the pixels), same texts -> one row."""
    seen, out = set(), []
    for r in rows:
        key = (r.get("image_embedding_path"), r["input_text"], json.dumps(r["output_text"], sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out, len(rows) - len(out)


def split_by_subject(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """Whole subjects go to held-out (shuffled with the seed) until `fraction` of the rows; >= 1 train subject."""
    if fraction <= 0 or not rows:
        return rows, [], []
    counts = Counter(r["subject"] for r in rows)
    subjects = sorted(counts)
    if len(subjects) < 2:
        return rows, [], []
    random.Random(seed).shuffle(subjects)
    held, n, target = [], 0, fraction * len(rows)
    for s in subjects[:-1]:
        if n > 0 and abs(n + counts[s] - target) >= abs(n - target):
            break  # one more subject would move the split further from the fraction asked for
        held.append(s)
        n += counts[s]
    chosen = set(held)
    return [r for r in rows if r["subject"] not in chosen], [r for r in rows if r["subject"] in chosen], sorted(held)


def add_text_only(rows: list[dict]) -> list[dict]:
    return rows + [{k: v for k, v in r.items() if k != "image_embedding_path"} | {"text_only": True} for r in rows]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            line = dict(r)
            if line.get("image_embedding_path"):
                line["image_embedding_path"] = Path(os.path.relpath(line["image_embedding_path"], path.parent)).as_posix()
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def curate(path: Path, size: int, seed: int) -> list[dict] | None:
    """training.curate's diverse subset of the rows written to `path` (None when it could not run)."""
    import tempfile

    from training import curate as curate_script

    with tempfile.TemporaryDirectory(prefix="build_dataset_curate_", dir=path.parent) as tmp:
        code = curate_script.main([str(path), "--out", tmp, "--size", str(size), "--seed", str(seed)])
        if code != 0:
            return None
        lines = Path(tmp, "subset.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(ln) for ln in lines if ln.strip()]
    for r in rows:
        if r.get("image_embedding_path"):
            r["image_embedding_path"] = str((path.parent / r["image_embedding_path"]).resolve())
    return rows


def _lengths(values: list[int]) -> dict:
    if not values:
        return {}
    s = sorted(values)
    return {"min": s[0], "median": s[len(s) // 2], "max": s[-1], "mean": round(sum(s) / len(s), 2)}


def report(build: Build, train: list[dict], held: list[dict], held_subjects: list[str], dropped: int,
           args: argparse.Namespace, curated: int | None) -> dict:
    everything = train + held
    text_out = [r["output_text"] for r in everything if isinstance(r["output_text"], str)]
    triggers = [r.get("trigger") for r in everything if r.get("trigger")]
    with_trigger = sum(1 for r in everything if isinstance(r["output_text"], str) and
                       (r.get("trigger") and r["output_text"].rstrip(" .,").endswith(r["trigger"])))
    return {
        "specialist": args.specialist, "out": str(args.out), "held_out_file": str(args.out.parent / "held_out.jsonl"),
        "rows": {"train": len(train), "held_out": len(held), "duplicates_dropped": dropped,
                 "curated_to": curated, "with_image": sum(1 for r in everything if r.get("image_embedding_path"))},
        "rows_per_source": dict(Counter(r["source"] for r in everything)),
        "skipped": build.skipped, "skipped_count": len(build.skipped),
        "skipped_reasons": dict(Counter(s["reason"].split(" (")[0].split(":")[0] for s in build.skipped)),
        "idea_words": _lengths([len(r["input_text"].split()) for r in everything]) if args.specialist == "whisperer" else None,
        "output_words": _lengths([len(t.split()) for t in text_out]),
        "trigger": {"rows_with_trigger_at_end": with_trigger, "rows": len(text_out), "triggers": dict(Counter(triggers))},
        "subjects": {"train": sorted({r["subject"] for r in train}), "held_out": held_subjects,
                     "overlap": sorted({r["subject"] for r in train} & {r["subject"] for r in held})},
        "verdicts": dict(Counter(r["output_text"]["verdict"] for r in everything if isinstance(r["output_text"], dict))),
    }


# --- main -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    emb_dir = (args.embeddings or args.out.parent / "embeddings").resolve()
    user_dirs = list(getattr(args, "captions", [])) + list(getattr(args, "factory", [])) + list(getattr(args, "qc", []))
    for folder in getattr(args, "captions", []):  # nothing is ever written next to the user's images
        for target, name in ((args.out, "--out"), (emb_dir, "--embeddings")):
            if folder.is_dir() and _inside(target, folder):
                return fail(f"{name} {target} is inside the caption folder {folder}: choose a folder outside it")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    build = Build(args.out, args.strict)
    if args.specialist == "whisperer":
        if args.captions:
            caption_rows(build, args.captions, emb_dir, args)
        if args.factory:
            factory_rows(build, args.factory, emb_dir, args)
    else:
        judge_rows(build, args.qc, emb_dir, args)
    if build.skipped and args.strict:
        return fail(f"{len(build.skipped)} bad item(s) (--strict): first {build.skipped[0]['file']}: "
                    f"{build.skipped[0]['reason']}", 1)
    rows, dropped = deduplicate(build.rows)
    if not rows:
        return fail(f"no usable rows from {', '.join(map(str, user_dirs))} ({len(build.skipped)} item(s) skipped)", 1)
    train, held, held_subjects = split_by_subject(rows, args.held_out, args.seed)
    curated = None
    if args.curate and args.curate < len(train):
        write_jsonl(args.out, train)
        subset = curate(args.out, args.curate, args.seed)
        if subset is None:
            return fail(f"training.curate failed on {args.out}")
        train, curated = subset, len(subset)
    if getattr(args, "text_only", False):
        train, held = add_text_only(train), add_text_only(held)
    write_jsonl(args.out, train)
    held_path = args.out.parent / "held_out.jsonl"
    if held:
        write_jsonl(held_path, held)
    elif held_path.exists():
        held_path.unlink()  # a stale split from an earlier build would mislead train_adapter
    summary = report(build, train, held, held_subjects, dropped, args, curated)
    (args.out.parent / "build_report.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n",
                                                       encoding="utf-8")
    print(f"build_dataset: {len(train)} training rows -> {args.out}, {len(held)} held-out rows "
          f"({len(held_subjects)} subjects) -> {held_path.name if held else 'none'}, {dropped} duplicate(s) dropped, "
          f"{len(build.skipped)} item(s) skipped; report {args.out.parent / 'build_report.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
