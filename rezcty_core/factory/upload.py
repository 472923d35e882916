"""The upload set: only the images QC passed, with each chosen agency's CSV naming exactly those files, in one folder.

The Metadata Writer keeps passed JPEGs in `output/<folder>/`, rejected ones in `output/<folder>/rejected/`, a JSON
sidecar beside each and one growing CSV series per chosen agency in `output/`. `build_upload_set` turns that (plus
the QC verdicts in the sidecars) into a folder ready for the agencies' uploaders, and is safe to call again: the
folder is brought back to exactly the passed set each time (a file no longer passed is removed, nothing is copied
twice). The agencies are the ones the sidecars say their rows went to (the writer's `agencies` input), or `agencies`.

    python -m rezcty_core.factory.upload OUTPUT_DIR UPLOAD_DIR [--folder stock] [--csv-name adobe_stock.csv]
        [--agencies adobe_stock,freepik]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rezcty_core.stock import agency_csv
from rezcty_core.stock.agencies import Agency, key_of, parse_agencies, render_row

JPEG_EXTS = (".jpg", ".jpeg")


@dataclass
class UploadSet:
    folder: Path
    images: list[str] = field(default_factory=list)  # file names in the upload folder
    csv_files: list[Path] = field(default_factory=list)
    verdicts: Counter = field(default_factory=Counter)  # pass / reject / unchecked
    reasons: Counter = field(default_factory=Counter)  # reason code -> images
    problems: list[str] = field(default_factory=list)  # one line each: file and what is wrong
    entries: list[dict] = field(default_factory=list)  # every checked image: sidecar path, verdict, reasons

    def lines(self) -> list[str]:
        csvs = ", ".join(p.name for p in self.csv_files) or "no CSV"
        out = [f"upload folder {self.folder}: {len(self.images)} passed image(s) + {csvs}"]
        out.append("verdicts: " + (", ".join(f"{k} {v}" for k, v in sorted(self.verdicts.items())) or "none"))
        out.append("reasons:  " + (", ".join(f"{k} {v}" for k, v in self.reasons.most_common()) or "none"))
        return out + [f"warning: {p}" for p in self.problems]


def _sidecars(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.json") if p.with_suffix(".jpg").exists() or p.with_suffix(".jpeg").exists())


def _image_of(sidecar: Path) -> Path:
    jpg = sidecar.with_suffix(".jpg")
    return jpg if jpg.exists() else sidecar.with_suffix(".jpeg")


def chosen_agencies(metas: list[dict], agencies: str | list[str] | None,
                    agency_dirs: list[str | Path] | None = None) -> list[Agency]:
    """The agencies given, else every agency a passed image's sidecar has a row in (Adobe for older sidecars)."""
    if agencies is None:
        names = ["adobe_stock"]
        for meta in metas:
            names += [k for k in (meta.get("agencies") or {}) if k not in names]
        agencies = names
    text = agencies if isinstance(agencies, str) else ",".join(agencies)
    return [c.agency for c in parse_agencies(text, agency_dirs)]


def _agency_rows(agency: Agency, output_dir: Path, csv_name: str) -> dict[str, list[str]]:
    """Rows of the writer's series for this agency (Adobe's is csv_name), by image key, in the header's order."""
    adobe = output_dir / csv_name
    path = adobe if agency.key == "adobe_stock" else adobe.parent / agency.file_name  # the writer puts them beside
    try:
        rows = agency_csv.read_series(agency, path)
    except OSError:
        return {}
    out: dict[str, list[str]] = {}
    for row in rows:
        cells = [row.get(h, "") for h in agency.headers]
        if key_of(agency, cells):
            out[key_of(agency, cells)] = cells
    return out


def build_upload_set(output_dir: str | Path, upload_dir: str | Path, folder: str = "stock",
                     csv_name: str = "adobe_stock.csv", agencies: str | list[str] | None = None,
                     agency_dirs: list[str | Path] | None = None) -> UploadSet:
    """Copy the passed JPEGs of `output_dir/folder` into `upload_dir` with each agency's CSV rows for exactly them;
    count every verdict. A passed image missing from an agency's CSV gets its row made from its sidecar."""
    output_dir, upload_dir = Path(output_dir), Path(upload_dir)
    source = output_dir / folder
    result = UploadSet(upload_dir)
    upload_dir.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, tuple[Path, dict]] = {}
    for sidecar in _sidecars(source) if source.is_dir() else []:
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            result.problems.append(f"{sidecar}: unreadable sidecar ({e}); image left out")
            continue
        verdict = str(meta.get("qc_verdict") or "unchecked")
        reasons = list((meta.get("qc") or {}).get("reasons") or [])
        in_rejected = "rejected" in sidecar.relative_to(source).parts
        if in_rejected and verdict == "pass":
            verdict = "reject"
        result.verdicts[verdict] += 1
        result.reasons.update(reasons)
        result.entries.append({"sidecar": str(sidecar), "image": str(_image_of(sidecar)), "verdict": verdict,
                               "reasons": reasons, "qc": meta.get("qc") or {}})
        if verdict != "pass" or in_rejected:
            continue
        image = _image_of(sidecar)
        if image.name in chosen:
            result.problems.append(f"{image}: the name is already used by {chosen[image.name][0]}; image left out")
            continue
        chosen[image.name] = (image, meta)

    for old in upload_dir.iterdir():  # the folder holds exactly the passed set, also after a re-run
        stale = old.suffix.lower() in JPEG_EXTS and old.name not in chosen
        if old.is_file() and (stale or old.suffix.lower() in (".csv", ".lock", ".tmp")):
            old.unlink()
    for name, (image, _) in sorted(chosen.items()):
        dest = upload_dir / name
        if not dest.exists() or dest.stat().st_size != image.stat().st_size:
            shutil.copy2(image, dest)
        result.images.append(name)
    for agency in chosen_agencies([m for _, m in chosen.values()], agencies, agency_dirs) if chosen else []:
        written = _agency_rows(agency, output_dir, csv_name)
        rows = []
        for name, (_, meta) in sorted(chosen.items()):
            row = written.get(name if "filename" in agency.values else Path(name).stem)
            if row is None:  # e.g. an agency chosen after these images were written
                row = render_row(agency, {**meta, "filename": name})
                result.problems.append(f"{name}: no row in the written {agency.file_name}; made from its sidecar")
            rows.append(row)
        out_name = csv_name if agency.key == "adobe_stock" else agency.file_name
        result.csv_files += agency_csv.write_series(agency, upload_dir / Path(out_name).name, rows)
    return result


def write_sheet(result: UploadSet, folder: str | Path, stem: str = "contact_sheet") -> tuple[Path, Path] | None:
    """One contact sheet (HTML + PNG) for every image checked, passed and rejected, with its verdict."""
    import numpy as np
    from PIL import Image

    from rezcty_core.qc.contact_sheet import write_contact_sheet

    entries, images = [], []
    for n, entry in enumerate(result.entries, 1):
        try:
            with Image.open(entry["image"]) as im:
                im = im.convert("RGB")
                im.thumbnail((384, 384))
                images.append(np.asarray(im))
        except OSError as e:
            result.problems.append(f"{entry['image']}: cannot read for the contact sheet ({e})")
            continue
        entries.append({**entry["qc"], "index": n, "verdict": entry["verdict"], "reasons": entry["reasons"]})
    if not entries:
        return None
    return write_contact_sheet(entries, images, folder, stem, title=f"rezcty QC: {len(entries)} image(s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rezcty_core.factory.upload", description=__doc__.splitlines()[0])
    ap.add_argument("output_dir", type=Path, help="ComfyUI's output folder (where the Metadata Writer wrote)")
    ap.add_argument("upload_dir", type=Path)
    ap.add_argument("--folder", default="stock", help="the Metadata Writer's filename_prefix folder")
    ap.add_argument("--csv-name", default="adobe_stock.csv")
    ap.add_argument("--agencies", default=None,
                    help="comma list (default: every agency the Metadata Writer wrote rows for)")
    args = ap.parse_args(argv)
    if not args.output_dir.is_dir():
        print(f"upload: {args.output_dir}: no such folder", file=sys.stderr)
        return 2
    try:
        result = build_upload_set(args.output_dir, args.upload_dir, args.folder, args.csv_name, args.agencies)
    except ValueError as e:  # an unknown agency, or one that refuses AI content: one line
        print(f"upload: {e}", file=sys.stderr)
        return 2
    print("\n".join(result.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

