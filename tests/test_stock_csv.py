"""Adobe's upload CSV: exact header, parallel appends lose no row, 5,000-row files, foreign files untouched."""
from __future__ import annotations

import csv
import subprocess
import sys
import textwrap

import pytest

from harness import REPO
from rezcty_core.stock import adobe_csv as stock_csv
from rezcty_core.stock.adobe_csv import HEADER_LINE, CsvHeaderError, StockRow


def rows(n: int, start: int = 0) -> list[StockRow]:
    return [StockRow(f"img_{i:05d}.jpg", f"Mountain lake at dawn number {i}", ["mountain", "lake, calm", "dawn"], 11)
            for i in range(start, start + n)]


def test_header_exact_and_keywords_quoted(tmp_path):
    path = tmp_path / "adobe_stock.csv"
    assert stock_csv.append_rows(path, rows(2)) == [path]
    data = path.read_bytes()
    assert data.startswith(b"Filename,Title,Keywords,Category,Releases\n")
    assert not data.startswith(b"\xef\xbb\xbf")
    back = stock_csv.read_rows(path)
    assert [r["Filename"] for r in back] == ["img_00000.jpg", "img_00001.jpg"]
    # a comma inside a keyword cannot split the Keywords cell; Releases is empty
    assert back[0]["Keywords"] == "mountain, lake calm, dawn"
    assert back[0]["Category"] == "11" and back[0]["Releases"] == ""
    with open(path, newline="", encoding="utf-8") as f:
        assert all(len(r) == 5 for r in csv.reader(f))


def test_two_processes_append_200_rows_each(tmp_path):
    path = tmp_path / "shared.csv"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from rezcty_core.stock.adobe_csv import StockRow, append_rows
        tag = sys.argv[1]
        for i in range(200):
            append_rows(Path({str(path)!r}), [StockRow(f"{{tag}}_{{i:04d}}.jpg", "Calm lake", ["lake", "calm"], 11)])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, tag]) for tag in ("a", "b")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    text = path.read_text(encoding="utf-8")
    assert text.count(HEADER_LINE) == 1 and text.startswith(HEADER_LINE + "\n") and text.endswith("\n")
    back = stock_csv.read_rows(path)
    assert len(back) == 400
    assert len({r["Filename"] for r in back}) == 400
    assert all(r["Title"] == "Calm lake" and r["Keywords"] == "lake, calm" for r in back)


def test_new_file_after_5000_rows(tmp_path):
    path = tmp_path / "adobe_stock.csv"
    stock_csv.append_rows(path, rows(4999))
    written = stock_csv.append_rows(path, rows(3, start=4999))
    second = tmp_path / "adobe_stock_2.csv"
    assert written == [path, second]
    assert len(stock_csv.read_rows(path)) == 5000
    assert [r["Filename"] for r in stock_csv.read_rows(second)] == ["img_05000.jpg", "img_05001.jpg"]
    assert second.read_text().startswith(HEADER_LINE + "\n")
    # later appends go on in the newest file
    assert stock_csv.append_rows(path, rows(1, start=6000)) == [second]
    assert stock_csv.check_series(path) == 5003


def test_foreign_csv_is_refused_and_untouched(tmp_path):
    path = tmp_path / "adobe_stock.csv"
    path.write_text("name,caption\nx.jpg,hello\n")
    before = path.read_bytes()
    with pytest.raises(CsvHeaderError, match="expected Adobe's header"):
        stock_csv.append_rows(path, rows(1))
    assert path.read_bytes() == before


def test_excel_bom_is_accepted(tmp_path):
    path = tmp_path / "adobe_stock.csv"
    path.write_bytes(b"\xef\xbb\xbf" + HEADER_LINE.encode() + b"\n")
    stock_csv.append_rows(path, rows(1))
    assert [r["Filename"] for r in stock_csv.read_rows(path)] == ["img_00000.jpg"]


def test_reserved_names_are_ascii_short_and_unique(tmp_path):
    names = [stock_csv.reserve_filename(tmp_path, "Crème brûlée über einem sehr langen Tisch").name for _ in range(3)]
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
    got_folders, got_name, _ = stock_csv.safe_relative(value)
    assert (got_folders, got_name) == (folders, name)


def test_inside_refuses_symlink_escape(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="outside the output folder"):
        stock_csv.inside(root, root / "link" / "x.csv")
