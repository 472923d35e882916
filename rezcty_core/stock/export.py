"""Agency CSVs rebuilt from the written images' sidecars, so an agency can be added after the images were made.

The sidecar (`NAME.json` beside each JPEG the Metadata Writer wrote) is the contract read here: `filename`,
`subfolder`, `title`, `description`, `keywords` (and `keyword_pool`, the longer ranked list the budgets cut from),
`category`, `prompt_clean`, `qc` (`verdict`, `reasons`, `measurements`). Rejected images (verdict `reject`, or a
sidecar under a `rejected/` folder) get no row.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rezcty_core.stock import agency_csv
from rezcty_core.stock.agencies import Agency, AgencyError, AgencyRefused, load_agency, render_row

IMAGE_EXTS = (".jpg", ".jpeg")
SKIP_FOLDERS = (".rezcty_names", "rezcty_qc")
REQUIRED = ("filename", "subfolder", "title", "keywords", "category", "qc")


@dataclass
class Sidecars:
    records: list[dict] = field(default_factory=list)  # each with "_sidecar": its path
    problems: list[str] = field(default_factory=list)


def image_of(sidecar: Path) -> Path | None:
    return next((sidecar.with_suffix(e) for e in IMAGE_EXTS if sidecar.with_suffix(e).exists()), None)


def read_sidecars(output_dir: str | Path) -> Sidecars:
    """Every Metadata Writer sidecar under `output_dir` (a JSON with an image beside it), sorted by path; a broken
    one is a problem line (file and reason) and is skipped."""
    root = Path(output_dir)
    out = Sidecars()
    for path in sorted(root.rglob("*.json")):
        rel = path.relative_to(root).parts
        if any(part in SKIP_FOLDERS for part in rel) or image_of(path) is None:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            out.problems.append(f"{path}: unreadable sidecar ({e}); image left out")
            continue
        missing = [k for k in REQUIRED if k not in data] if isinstance(data, dict) else list(REQUIRED)
        if missing:
            out.problems.append(f"{path}: not a Metadata Writer sidecar (missing {', '.join(missing)}); left out")
            continue
        out.records.append({**data, "_sidecar": str(path)})
    return out


def is_passed(record: dict) -> bool:
    """Not rejected: neither the QC verdict nor the folder says reject."""
    verdict = str((record.get("qc") or {}).get("verdict") or record.get("qc_verdict") or "").lower()
    return verdict != "reject" and "rejected" not in Path(str(record.get("subfolder", ""))).parts


def rows_for(agency: Agency, records: list[dict], budget: int | None = None,
             problems: list[str] | None = None) -> list[list[str]]:
    """One row per passed image, in order; a second image with the same name (key) gets none (a problem line:
    only outputs written before names were claimed can hold one)."""
    rows, seen = [], {}
    for record in records:
        if not is_passed(record):
            continue
        row = render_row(agency, record, budget)
        key = agency_csv.key_of(agency, row)
        if key in seen:
            if problems is not None:
                problems.append(f"{record.get('_sidecar')}: '{key}' is already the row of {seen[key]}; left out")
            continue
        seen[key] = record.get("_sidecar")
        rows.append(row)
    return rows


@dataclass
class ExportResult:
    agency: Agency
    files: list[Path]
    rows: int
    skipped: int
    problems: list[str]

    def line(self) -> str:
        return (f"{self.agency.key}: {self.rows} row(s) -> {', '.join(str(f) for f in self.files)} "
                f"({self.skipped} rejected image(s) left out, {len(self.problems)} problem(s))")


def export_agency(name: str, output_dir: str | Path, out: str | Path, budget: int | None = None,
                  agency_dirs: list[str | Path] | None = None) -> ExportResult:
    """Write `out` (and `out_2`, … past the agency's rows per file) from the sidecars under `output_dir`.
    Raises AgencyRefused (one line) for an agency that refuses AI content, AgencyError for an unknown one."""
    agency = load_agency(name, agency_dirs)
    if not agency.accepts_ai:
        raise AgencyRefused(agency.refusal())
    if budget is not None:
        low, high = agency.keyword_range
        if not low <= budget <= high:
            raise AgencyError(f"--keywords {budget}: {agency.key} takes {low} to {high} keywords")
    found = read_sidecars(output_dir)
    rows = rows_for(agency, found.records, budget, found.problems)
    files = agency_csv.write_series(agency, Path(out), rows)
    skipped = sum(1 for r in found.records if not is_passed(r))
    return ExportResult(agency, files, len(rows), skipped, found.problems)
