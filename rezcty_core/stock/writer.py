"""The batch writer: stock JPEGs with embedded XMP/IPTC, JSON sidecars and rows of each chosen agency's upload CSV.

`write_batch` runs `rules.build_metadata` for each image (with the QC report's verdicts and hints) and
never lets one bad image stop the batch; `summary` is the node's text. Every file name is claimed in
`output/.rezcty_names/` first, so no name is given twice under one output folder (verdict folders, runs,
servers). The sidecar (`NAME.json`) is a contract (docs/metadata.md): other tools and `client export` read it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rezcty_core.common.blocklists import load_blocklist
from rezcty_core.stock import agencies as agency_data
from rezcty_core.stock import agency_csv, categories, filenames, seen_brands, xmp_iptc
from rezcty_core.stock.keyword_budget import budget_keywords
from rezcty_core.stock.qc_report import qc_entries, qc_people_hint
from rezcty_core.stock.rules import build_metadata, clean_keywords


@dataclass
class WriteOptions:
    filename_prefix: str = ""
    csv_name: str = "adobe_stock.csv"
    category: str | int | None = "auto"
    qc_report: str | list | None = None
    generation: dict = field(default_factory=dict)
    workflow: dict | None = None
    agencies: str = agency_data.DEFAULT_AGENCIES  # comma list, `name:N` sets that agency's keyword budget
    agency_dirs: list[str] = field(default_factory=list)  # user folders with agency data files


def _csv_path(output_dir: Path, csv_name: str, warnings: list[str]) -> Path:
    folders, name, changed = filenames.safe_relative(csv_name, default_name="adobe_stock.csv")
    if not name.lower().endswith(".csv"):
        name = f"{name}.csv"
        changed = True
    if changed:
        warnings.append(f"csv_name '{csv_name}' was made safe: '{'/'.join(folders + [name])}'")
    return filenames.inside(output_dir, output_dir.joinpath(*folders, name))


def qc_contract(entry: dict | None) -> dict:
    """The sidecar's `qc`: the QC entry, always with `verdict`, `reasons` and `measurements` (unchecked: no report)."""
    qc = dict(entry or {})
    qc["verdict"] = str(qc.get("verdict") or "unchecked").lower()
    qc["reasons"] = list(qc.get("reasons") or [])
    qc["measurements"] = dict(qc.get("measurements") or {})
    return qc


def agency_paths(out_root: Path, csv_path: Path, choices: list[agency_data.Choice]) -> dict[str, Path]:
    """Where each chosen agency's CSV goes: Adobe's is `csv_name`, the others `<agency>.csv` beside it."""
    return {c.agency.key: csv_path if c.agency.key == "adobe_stock" else
            filenames.inside(out_root, csv_path.parent / c.agency.file_name) for c in choices}


def write_batch(frames: list[np.ndarray], prompt: str, output_dir: str | Path, options: WriteOptions | None = None,
                llm: Any = None, embeddings: list | None = None) -> list[dict]:
    """Write each image as a stock JPEG with metadata + sidecar, and add passed ones to every chosen agency's CSV.

    One entry per image comes back (`error` set when that image failed; the others go on).
    Rejected images (QC report) go to `rejected/` next to the others and never into a CSV.
    """
    opts = options or WriteOptions()
    out_root = Path(output_dir).resolve()
    batch_warnings: list[str] = []
    choices = agency_data.parse_agencies(opts.agencies, opts.agency_dirs)  # a refused agency stops here
    folders, stem, changed = filenames.safe_relative(opts.filename_prefix)
    if changed:
        batch_warnings.append(f"filename_prefix '{opts.filename_prefix}' was made safe: '{'/'.join(folders + [stem])}'")
    folder = filenames.inside(out_root, out_root.joinpath(*folders))
    csv_path = _csv_path(out_root, opts.csv_name, batch_warnings)
    paths = agency_paths(out_root, csv_path, choices)
    for choice in choices:  # a foreign CSV fails the batch before any image is written
        agency_csv.check_series(choice.agency, paths[choice.agency.key])
    adobe = next((c for c in choices if c.agency.key == "adobe_stock"), None)
    embed_budget = adobe.budget if adobe else agency_data.load_agency("adobe_stock", opts.agency_dirs).budget
    claims = out_root / filenames.CLAIMS_DIR
    qc = qc_entries(opts.qc_report, len(frames))
    blocklist = load_blocklist()
    seeds = list(opts.generation.get("seeds", []))
    repro_base = {"prompt": prompt, **{k: v for k, v in opts.generation.items() if k != "workflow"}}
    results: list[dict] = []
    rows: dict[str, list[tuple[int, list[str]]]] = {c.agency.key: [] for c in choices}
    for index, pixels in enumerate(frames):
        entry: dict[str, Any] = {"index": index, "error": None}
        try:
            emb = embeddings[index] if embeddings and index < len(embeddings) else None
            hint_category, hint_keywords = qc_people_hint(qc[index])
            auto = categories.parse_category(opts.category) is None
            seen = seen_brands.seen_brands(qc[index], blocklist)  # brand names QC read in this image
            image_blocklist = load_blocklist({"brands_seen": seen}) if seen else blocklist
            meta = build_metadata(prompt, pixels, category=hint_category if auto and hint_category else opts.category,
                                  llm=llm, embedding=emb, seed=seeds[0] if seeds else 0, blocklist=image_blocklist)
            if hint_keywords:  # the QC judge saw people: their words early in the list (Adobe weighs the first 10)
                meta.keywords = clean_keywords(meta.keywords[:5] + hint_keywords + meta.keywords[5:], image_blocklist)
            if seen:
                meta.warnings.append("brand names read in the image kept out of the metadata: " + ", ".join(seen))
            pool = list(meta.keywords)  # every agency's list is cut from this one, within its own budget
            meta.keywords = budget_keywords(pool, embed_budget)
            verdict = str((qc[index] or {}).get("verdict", "")).lower() or None
            target = folder / "rejected" if verdict == "reject" else folder
            also = [folder, folder / "rejected"] if verdict == "reject" else [folder / "rejected"]
            path = filenames.reserve_filename(target, stem or meta.title, claims=claims, also=also)
            repro = dict(repro_base)
            if emb is not None:
                repro["image_embedding"] = dict(getattr(emb, "meta", {}) or {})
            if llm is not None:
                repro["llm"] = dict(getattr(llm, "identity", {}) or {})
            size = xmp_iptc.write_stock_jpeg(pixels, path, meta.title, meta.description, meta.keywords, repro)
            entry.update(meta.to_dict())
            entry["warnings"] = batch_warnings + meta.warnings
            entry.update(filename=path.name, subfolder=path.parent.relative_to(out_root).as_posix(), bytes=size,
                         width=int(pixels.shape[1]), height=int(pixels.shape[0]), qc_verdict=verdict,
                         csv=None, agencies={})
            sidecar = {**entry, "keyword_pool": pool, "reproducibility": repro, "qc": qc_contract(qc[index]),
                       "workflow": opts.workflow}
            if verdict != "reject":
                for choice in choices:
                    rows[choice.agency.key].append((index, agency_data.render_row(choice.agency, sidecar,
                                                                                   choice.budget)))
            path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, ensure_ascii=False, default=str),
                                                 encoding="utf-8")
        except Exception as e:  # one bad image never stops the batch
            entry["error"] = f"image {index}: {type(e).__name__}: {e}"
        results.append(entry)
    if frames and all(r.get("error") for r in results):
        raise RuntimeError("no image was written: " + " | ".join(r["error"] for r in results)[:2000])
    for choice in choices:
        key = choice.agency.key
        if not rows[key]:
            continue
        files = agency_csv.append_rows(choice.agency, paths[key], [r for _, r in rows[key]])
        where = (files[-1] if files else paths[key]).relative_to(out_root).as_posix()
        for index, _ in rows[key]:
            results[index]["agencies"][key] = where
            if key == "adobe_stock":
                results[index]["csv"] = where
    _record_csvs(out_root, results)
    return results


def _record_csvs(out_root: Path, results: list[dict]) -> None:
    """The sidecars learn which CSVs their rows went to (written after the rows, like the node's output)."""
    for r in results:
        if r.get("error") or not r.get("agencies"):
            continue
        path = out_root / r["subfolder"] / Path(r["filename"]).with_suffix(".json")
        data = json.loads(path.read_text(encoding="utf-8"))
        data.update(csv=r["csv"], agencies=r["agencies"])
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def summary(results: list[dict]) -> str:
    """A few lines for the node: counts, CSV, first title and keywords, warnings and errors."""
    ok = [r for r in results if not r.get("error")]
    in_csv = [r for r in ok if r.get("csv")]
    lines = [f"{len(ok)}/{len(results)} written, {len(in_csv)} added to {in_csv[0]['csv'] if in_csv else 'no CSV'}"]
    others = sorted({(k, v) for r in ok for k, v in (r.get("agencies") or {}).items() if k != "adobe_stock"})
    if others:
        lines.append("agency CSVs: " + ", ".join(f"{k} -> {v}" for k, v in others))
    for r in ok[:3]:
        lines.append(f"{r['filename']}: {r['title']} [{r['category']} {r['category_name']}] "
                     f"({len(r['keywords'])} keywords, {r['source']})")
        lines.append("  " + ", ".join(r["keywords"][:12]) + (" ..." if len(r["keywords"]) > 12 else ""))
    for w in sorted({w for r in ok for w in r.get("warnings", [])}):
        lines.append(f"warning: {w}")
    lines += [r["error"] for r in results if r.get("error")]
    return "\n".join(lines)
