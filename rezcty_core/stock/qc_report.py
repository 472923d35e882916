"""The QC Judge's report as the metadata writer reads it: each image's entry, and what its flags say."""
from __future__ import annotations

import json


def qc_entries(report: str | list | None, n_images: int) -> list[dict | None]:
    """The QC entry of each image. The report may cover this batch (same length, by `index`) or the
    original batch when only the passed images are connected (then every image is a pass)."""
    if report is None or (isinstance(report, str) and not report.strip()):
        return [None] * n_images
    try:
        entries = json.loads(report) if isinstance(report, str) else report
    except json.JSONDecodeError as e:
        raise ValueError(f"qc_report is not valid JSON ({e}); connect the QC Judge's report output") from None
    if isinstance(entries, dict):
        entries = entries.get("entries", entries.get("images", [entries]))
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError("qc_report must be a JSON list of entries {\"index\", \"verdict\", ...}")
    if len(entries) == n_images:
        by_index = {int(e.get("index", i)): e for i, e in enumerate(entries)}
        return [by_index.get(i, entries[i]) for i in range(n_images)]
    passed = [e for e in entries if str(e.get("verdict", "")).lower() == "pass"]
    if len(passed) == n_images:
        return passed
    raise ValueError(f"qc_report has {len(entries)} entries ({len(passed)} pass) but {n_images} images arrived: "
                     "connect the same batch the QC Judge saw, or its 'passed' output")


def qc_people_hint(entry: dict | None) -> tuple[int | None, list[str]]:
    """(category, keywords) from a QC entry's flags (rezcty_core/qc/people.py): a face found means Adobe's
    13 People and people words; a large face adds portrait words."""
    flags = (entry or {}).get("flags") or []
    if "people" not in flags:
        return None, []
    share = float(((entry or {}).get("measurements") or {}).get("face_max_share") or 0.0)
    return 13, ["people", "person", "human", *(("portrait", "face") if share >= 0.02 else ())]
