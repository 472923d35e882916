"""Adobe's upload CSV through the one agency CSV writer: exact header, parallel appends lose no row, 5,000-row
files, foreign files untouched; and the safe, unique stock file names."""
from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

import pytest

from harness import REPO
from rezcty_core.stock import agency_csv, filenames
from rezcty_core.stock.agencies import load_agency, render_row

ADOBE = load_agency("adobe_stock")
HEADER_LINE = "Filename,Title,Keywords,Category,Releases"


def rows(n: int, start: int = 0) -> list[list[str]]:
    return [render_row(ADOBE, {"filename": f"img_{i:05d}.jpg", "title": f"Mountain lake, at dawn number {i}",
                               "keywords": ["mountain", "lake, calm", "dawn"], "category": 11})
            for i in range(start, start + n)]


def test_header_exact_and_keywords_quoted(tmp_path):
    path = tmp_path / "adobe_stock.csv"
    assert agency_csv.append_rows(ADOBE, path, rows(2)) == [path]
    data = path.read_bytes()
    assert data.startswith(HEADER_LINE.encode() + b"\n")
    assert not data.startswith(b"\xef\xbb\xbf")
    back = agency_csv.read_series(ADOBE, path)
    assert [r["Filename"] for r in back] == ["img_00000.jpg", "img_00001.jpg"]
    assert "," not in back[0]["Title"]  # Adobe wants no comma in a title
    assert back[0]["Category"] == "11" and back[0]["Releases"] == ""
    with open(path, newline="", encoding="utf-8") as f:
        assert all(len(r) == 5 for r in csv.reader(f))


def test_two_processes_append_200_rows_each(tmp_path):
    path = tmp_path / "shared.csv"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from rezcty_core.stock import agency_csv
        from rezcty_core.stock.agencies import load_agency
        adobe = load_agency("adobe_stock")
        tag = sys.argv[1]
        for i in range(200):
            agency_csv.append_rows(adobe, Path({str(path)!r}), [[f"{{tag}}_{{i:04d}}.jpg", "Calm lake", "lake,calm", "11", ""]])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, tag]) for tag in ("a", "b")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    text = path.read_text(encoding="utf-8")
    assert text.count(HEADER_LINE) == 1 and text.startswith(HEADER_LINE + "\n") and text.endswith("\n")
    back = agency_csv.read_series(ADOBE, path)
    assert len(back) == 400
    assert len({r["Filename"] for r in back}) == 400
    assert all(r["Title"] == "Calm lake" for r in back)


def test_new_file_after_5000_rows_and_never_two_rows_for_one_image(tmp_path):
    path = tmp_path / "adobe_stock.csv"
    agency_csv.append_rows(ADOBE, path, rows(4999))
    written = agency_csv.append_rows(ADOBE, path, rows(3, start=4999))
    second = tmp_path / "adobe_stock_2.csv"
    assert written == [path, second]
    assert agency_csv.check_series(ADOBE, path) == 5002
    assert [r["Filename"] for r in agency_csv.read_series(ADOBE, second)] == ["img_05000.jpg", "img_05001.jpg"]
    assert second.read_text().startswith(HEADER_LINE + "\n")
    # later appends go on in the newest file; an image already in the series gets no second row
    assert agency_csv.append_rows(ADOBE, path, rows(1, start=6000) + rows(1, start=10)) == [second]
    assert agency_csv.check_series(ADOBE, path) == 5003


def test_foreign_csv_is_refused_and_untouched(tmp_path):
    path = tmp_path / "adobe_stock.csv"
    path.write_text("name,caption\nx.jpg,hello\n")
    before = path.read_bytes()
    with pytest.raises(agency_csv.AgencyCsvError, match="expected Adobe's header"):
        agency_csv.append_rows(ADOBE, path, rows(1))
    assert path.read_bytes() == before


def test_excel_bom_is_accepted(tmp_path):
    path = tmp_path / "adobe_stock.csv"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER_LINE.encode() + b"\n")
    agency_csv.append_rows(ADOBE, path, rows(1))
    assert [r["Filename"] for r in agency_csv.read_series(ADOBE, path)] == ["img_00000.jpg"]


def test_reserved_names_are_ascii_short_and_unique(tmp_path):
    names = [filenames.reserve_filename(tmp_path, "Crème brûlée über einem sehr langen Tisch").name for _ in range(3)]
    assert len(set(names)) == 3
    for name in names:
        assert name.isascii() and len(name) <= 30 and name.endswith(".jpg")
    assert names[0] == "creme-brulee-uber_0001.jpg"


@pytest.mark.parametrize("value,folders,name", [
    ("stock/", ["stock"], ""),
    ("stock/sunset", ["stock"], "sunset"),
    ("../../etc/passwd", ["etc"], "passwd"),
    ("/abs/path/x", ["abs", "path"], "x"),
    ("C:\\Users\\..\\evil", ["Users"], "evil"),
    ("..", [], ""),
])
def test_safe_relative_never_climbs(value, folders, name):
    got_folders, got_name, _ = filenames.safe_relative(value)
    assert (got_folders, got_name) == (folders, name)


def test_inside_refuses_symlink_escape(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside the output folder"):
        filenames.inside(root, root / "link" / "x.csv")
