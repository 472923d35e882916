"""Adobe Stock's review results, read back so the judge learns the reviewer and the Whisperer what sold.

Two layouts are read:

* a CSV with a header row `Filename,Status,Reason` (UTF-8, any column order, more columns ignored):
  Status `accepted` or `rejected` (also `approved`, `declined`); Reason in Adobe's own wording
  (e.g. "Quality issues: out of focus"), mapped to the project's reason codes by `reason_codes`;
* a folder with `accepted/` and `rejected/<reason>/` holding the files (or same-named stand-ins);
  the `<reason>` folder name is the Adobe wording (`rejected/noise/`, `rejected/similar_content/`).

`--accepted FILE` lists may also be a plain text file: one accepted file name per line.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

# Adobe's wording (lower case, any part of the reason) -> reason code. Codes beyond the QC's own
# (REASON_CODES in rezcty_core/qc/verdict.py) are reviewer-only: the judge learns them from Adobe.
ADOBE_REASONS: tuple[tuple[str, str], ...] = (
    ("out of focus", "blurry"), ("focus", "blurry"), ("blur", "blurry"), ("soft", "blurry"),
    ("camera shake", "blurry"), ("noise", "noisy"), ("grain", "noisy"),
    ("compression", "jpeg_artifacts"), ("artifact", "jpeg_artifacts"), ("artefact", "jpeg_artifacts"),
    ("over-filter", "over_filtering"), ("overfilter", "over_filtering"), ("over filter", "over_filtering"),
    ("overprocess", "over_filtering"),
    ("overexpos", "overexposed"), ("over-expos", "overexposed"), ("underexpos", "underexposed"),
    ("under-expos", "underexposed"), ("exposure", "exposure"), ("white balance", "color_cast"),
    ("colour cast", "color_cast"), ("color cast", "color_cast"), ("contrast", "low_contrast"),
    ("saturat", "oversaturated"), ("chromatic aberration", "chromatic_aberration"), ("banding", "banding"),
    ("similar", "similar"), ("duplicate", "duplicate"), ("spam", "duplicate"),
    ("commercial appeal", "low_commercial_appeal"), ("aesthetic", "low_commercial_appeal"),
    ("intellectual property", "intellectual_property"), ("trademark", "intellectual_property"),
    ("logo", "intellectual_property"), ("copyright", "intellectual_property"), ("brand", "intellectual_property"),
    ("keyword", "irrelevant_keywords"), ("title", "irrelevant_keywords"), ("metadata", "irrelevant_keywords"),
    ("anatomy", "ai_anatomy"), ("extra finger", "ai_anatomy"), ("limb", "ai_anatomy"), ("deform", "ai_anatomy"),
    ("resolution", "low_resolution"), ("too small", "low_resolution"), ("size", "low_resolution"),
    ("release", "missing_release"), ("quality", "poor_quality"), ("technical", "poor_quality"),
)
ACCEPTED = {"accepted", "approved", "accept", "approve", "live"}
REJECTED = {"rejected", "declined", "reject", "decline", "refused"}


def reason_codes(wording: str) -> list[str]:
    """Adobe's reason text -> project reason codes (first match per clause; 'poor_quality' when unknown)."""
    codes: list[str] = []
    for clause in re.split(r"[;/|]+", wording.lower().replace("_", " ")):
        clause = clause.strip()
        if not clause:
            continue
        code = next((c for needle, c in ADOBE_REASONS if needle in clause), None)
        if code and code not in codes:
            codes.append(code)
    return codes or ["poor_quality"]


@dataclass
class Verdict:
    filename: str
    accepted: bool
    reason: str  # Adobe's wording, '' when accepted
    codes: list[str]
    where: str  # FILE:LINE or the folder path, for reports


@dataclass
class Review:
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # file name (lower case) -> verdict
    problems: list[str] = field(default_factory=list)

    def find(self, *names: str) -> Verdict | None:
        """The verdict for any of these names; also matches by stem (Adobe may change the extension)."""
        for name in names:
            if not name:
                continue
            key = Path(name).name.lower()
            if key in self.verdicts:
                return self.verdicts[key]
            stem = Path(key).stem
            hit = next((v for k, v in self.verdicts.items() if Path(k).stem == stem), None)
            if hit:
                return hit
        return None


def _add(review: Review, verdict: Verdict) -> None:
    key = Path(verdict.filename).name.lower()
    old = review.verdicts.get(key)
    if old and old.accepted != verdict.accepted:
        review.problems.append(f"{verdict.where}: {verdict.filename} also listed at {old.where} with the other "
                               "status; the later one is used")
    review.verdicts[key] = verdict


def read_review_csv(path: Path) -> Review:
    review = Review()
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        review.problems.append(f"{path}:1: empty review file (expected a header Filename,Status,Reason)")
        return review
    header = [h.strip().lower() for h in rows[0]]
    if "filename" not in header or "status" not in header:
        review.problems.append(f"{path}:1: header must name Filename and Status (and Reason), got {','.join(rows[0])}")
        return review
    fi, si = header.index("filename"), header.index("status")
    ri = header.index("reason") if "reason" in header else None
    for lineno, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        where = f"{path}:{lineno}"
        name = row[fi].strip() if fi < len(row) else ""
        status = row[si].strip().lower() if si < len(row) else ""
        reason = row[ri].strip() if ri is not None and ri < len(row) else ""
        if not name:
            review.problems.append(f"{where}: no Filename; row skipped")
        elif status in ACCEPTED:
            _add(review, Verdict(name, True, "", [], where))
        elif status in REJECTED:
            _add(review, Verdict(name, False, reason, reason_codes(reason or "quality"), where))
        else:
            review.problems.append(f"{where}: Status {row[si] if si < len(row) else ''!r} is neither accepted nor "
                                   "rejected; row skipped")
    return review


def read_review_folder(root: Path) -> Review:
    review = Review()
    if not (root / "accepted").is_dir() and not (root / "rejected").is_dir():
        review.problems.append(f"{root}: a review folder needs accepted/ and/or rejected/<reason>/ inside")
        return review
    for p in sorted((root / "accepted").rglob("*")) if (root / "accepted").is_dir() else []:
        if p.is_file() and not p.name.startswith("."):
            _add(review, Verdict(p.name, True, "", [], str(p)))
    for p in sorted((root / "rejected").rglob("*")) if (root / "rejected").is_dir() else []:
        if not p.is_file() or p.name.startswith("."):
            continue
        rel = p.relative_to(root / "rejected").parts
        reason = rel[0].replace("_", " ") if len(rel) > 1 else ""
        _add(review, Verdict(p.name, False, reason, reason_codes(reason or "quality"), str(p)))
    return review


def read_review(path: str | Path) -> Review:
    """A review CSV or folder (see the module docstring); problems are `FILE:LINE: what` strings."""
    path = Path(path)
    if path.is_dir():
        return read_review_folder(path)
    if not path.is_file():
        return Review(problems=[f"{path}: review file or folder not found"])
    return read_review_csv(path)


def read_accepted(path: str | Path) -> Review:
    """`--accepted`: a review CSV/folder (its accepted rows) or a plain list of accepted file names."""
    path = Path(path)
    if path.is_dir():
        return read_review_folder(path)
    if not path.is_file():
        return Review(problems=[f"{path}: accepted list not found"])
    first = path.read_text(encoding="utf-8-sig").splitlines()[:1]
    if first and "filename" in first[0].lower() and "," in first[0]:
        return read_review_csv(path)
    review = Review()
    for lineno, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        name = raw.strip()
        if name and not name.startswith("#"):
            _add(review, Verdict(name, True, "", [], f"{path}:{lineno}"))
    return review


def read_upload_csv(path: Path) -> tuple[dict[str, dict], list[str]]:
    """The user's Adobe upload CSV (Filename,Title,Keywords,...) -> {file name lower: {title, keywords}}."""
    found: dict[str, dict] = {}
    problems: list[str] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            fields = {(h or "").strip().lower(): h for h in reader.fieldnames or []}
            if "filename" not in fields or "title" not in fields:
                return {}, [f"{path}:1: not an upload CSV (needs Filename,Title,Keywords)"]
            for lineno, row in enumerate(reader, 2):
                name = (row.get(fields["filename"]) or "").strip()
                if not name:
                    problems.append(f"{path}:{lineno}: no Filename; row skipped")
                    continue
                keywords = [k.strip() for k in (row.get(fields.get("keywords", ""), "") or "").split(",") if k.strip()]
                found[name.lower()] = {"title": (row.get(fields["title"]) or "").strip(), "keywords": keywords,
                                       "where": f"{path}:{lineno}"}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        problems.append(f"{path}: cannot read the upload CSV ({e})")
    return found, problems


def is_upload_csv(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = f.readline().lower()
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("filename,") and "title" in head and "keywords" in head
