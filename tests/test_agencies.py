"""Agency CSVs, unique file names, keyword budgets and `client export`: through the real server where it counts.

The server tests share one module fixture: two Metadata Writer runs over passed and rejected images, each writing
Adobe's, Freepik's, 123RF's and Dreamstime's CSV; every CSV written is then checked against its agency's data file
(validate_csv) and read back with Python's csv reader.
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from harness import REPO
from rezcty_core.factory.upload import build_upload_set
from rezcty_core.stock import agency_csv, filenames
from rezcty_core.stock.agencies import (
    AgencyError,
    AgencyRefused,
    list_agencies,
    load_agency,
    parse_agencies,
    render_row,
)
from rezcty_core.stock.keyword_budget import budget_keywords, order_keywords, redundancy, singular

NODE = "RezctyMetadataWriter"
ACCEPTING = ["adobe_stock", "freepik", "123rf", "dreamstime"]
REFUSING = ["shutterstock", "alamy", "depositphotos", "pond5", "getty_istock"]
PROMPT = "sunrise over layered mountain ridges with an orange sky and a bright sun, rezcty_style"
REPORT = [{"index": 0, "verdict": "pass", "score": 0.9, "reasons": [], "measurements": {"sharpness": 1.0}},
          {"index": 1, "verdict": "reject", "score": 0.1, "reasons": ["blurry"], "measurements": {"sharpness": 0.1}},
          {"index": 2, "verdict": "pass", "score": 0.8, "reasons": [], "measurements": {"sharpness": 0.9}}]


def writer_graph(color: int) -> dict:
    """Three images (one rejected by the report) -> Metadata Writer for four agencies -> PreviewAny."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 3, "color": color}},
        "3": {"class_type": "PrimitiveString", "inputs": {"value": json.dumps(REPORT)}},
        "2": {"class_type": NODE, "inputs": {"images": ["1", 0], "prompt": PROMPT, "filename_prefix": "agencies/",
                                             "csv_name": "agencies/adobe_stock.csv", "category": "auto",
                                             "qc_report": ["3", 0], "agencies": ", ".join(ACCEPTING)}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }


@pytest.fixture(scope="module")
def two_runs(comfy) -> list[dict]:
    """Entries of two runs (different pixels, the same prompt: the same name stem both times)."""
    entries = []
    for color in (0x3C7850, 0x785030):
        entries += json.loads(comfy.run(writer_graph(color)).text("9")[0])
    assert all(e["error"] is None for e in entries), entries
    return entries


def test_node_offers_agencies_input(comfy):
    optional = comfy.object_info(NODE)[NODE]["input"]["optional"]
    assert optional["agencies"][0] == "STRING" and optional["agencies"][1]["default"] == "adobe_stock"


def test_no_file_name_is_used_twice_under_output(comfy, two_runs):
    names = Counter(p.name for p in comfy.output_dir.rglob("*") if p.is_file() and p.suffix in (".jpg", ".json")
                    and filenames.CLAIMS_DIR not in p.parts and "rezcty_qc" not in p.parts)
    assert [n for n, c in names.items() if c > 1] == []
    ours = [(e["subfolder"], e["filename"]) for e in two_runs]
    assert [s for s, _ in ours] == ["agencies", "agencies/rejected", "agencies"] * 2
    assert len({f for _, f in ours}) == 6 and all(f.isascii() and len(f) <= 30 for _, f in ours)


def test_every_agency_csv_matches_its_data_file(comfy, two_runs):
    passed = [e["filename"] for e in two_runs if e["qc_verdict"] == "pass"]
    folder = comfy.output_dir / "agencies"
    for key in ACCEPTING:
        agency = load_agency(key)
        path = folder / agency.file_name
        assert agency_csv.validate_csv(agency, path) == [], key
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=agency.csv["delimiter"]))
        assert rows[0] == agency.headers
        assert all(len(r) == len(agency.headers) for r in rows)
        expected = passed if "filename" in agency.values else [Path(n).stem for n in passed]
        assert [agency_csv.key_of(agency, r) for r in rows[1:]] == expected, key  # one row per passed image
        assert all(e["agencies"][key] == f"agencies/{agency.file_name}" for e in two_runs if e["qc_verdict"] == "pass")
    dreamstime = load_agency("dreamstime")
    row = agency_csv.read_series(dreamstime, folder / "dreamstime.csv")[0]
    assert row["Category 1"] == "212" and row["Description"].startswith("AI-generated image.")
    freepik = agency_csv.read_series(load_agency("freepik"), folder / "freepik.csv")[0]
    assert freepik["Model"] == "Stable Diffusion 1.5" and "rezcty_style" not in freepik["Prompt"]
    assert "layered mountain ridges" in freepik["Prompt"]


def test_sidecar_keeps_its_contract(comfy, two_runs):
    for entry in two_runs:
        side = json.loads((comfy.output_dir / entry["subfolder"] / entry["filename"]).with_suffix(".json").read_text())
        assert {"filename", "subfolder", "title", "keywords", "category", "qc"} <= set(side)
        assert side["filename"] == entry["filename"] and side["subfolder"] == entry["subfolder"]
        assert {"verdict", "reasons", "measurements"} <= set(side["qc"])
        assert side["qc"]["verdict"] == entry["qc_verdict"]
        assert side["keywords"] == entry["keywords"] and set(side["keywords"]) <= set(side["keyword_pool"])


def test_export_refuses_an_agency_that_refuses_ai_content(comfy, two_runs, tmp_path):
    out = tmp_path / "shutterstock.csv"
    run = subprocess.run([sys.executable, "-m", "rezcty_core.client", "export", "--agency", "shutterstock",
                          "--from", str(comfy.output_dir), "--out", str(out)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0 and not out.exists()
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "shutterstock" in lines[0] and "AI-generated" in lines[0] and "2026-12-07" in lines[0]


def test_export_rebuilds_freepik_csv_from_the_sidecars(comfy, two_runs, tmp_path):
    out = tmp_path / "freepik.csv"
    run = subprocess.run([sys.executable, "-m", "rezcty_core.client", "export", "--agency", "freepik",
                          "--from", str(comfy.output_dir / "agencies"), "--out", str(out)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "freepik: 4 row(s)" in run.stdout
    assert out.read_bytes() == (comfy.output_dir / "agencies" / "freepik.csv").read_bytes()


def test_upload_set_carries_every_chosen_agency(comfy, two_runs, tmp_path):
    result = build_upload_set(comfy.output_dir, tmp_path / "up", folder="agencies", csv_name="agencies/adobe_stock.csv")
    passed = sorted(e["filename"] for e in two_runs if e["qc_verdict"] == "pass")
    assert sorted(result.images) == passed and result.problems == []
    assert sorted(p.name for p in result.csv_files) == sorted(load_agency(k).file_name for k in ACCEPTING)
    for key in ACCEPTING:
        agency = load_agency(key)
        assert agency_csv.validate_csv(agency, tmp_path / "up" / agency.file_name) == []


# --- core, no server -----------------------------------------------------------------------------

def test_data_files_name_sources_with_dates():
    assert set(ACCEPTING + REFUSING) <= set(list_agencies())
    for key in ACCEPTING + REFUSING:
        agency = load_agency(key)
        assert agency.data["sources"] and all(s["url"].startswith("https://") and s["read"] == "2026-12-07"
                                              for s in agency.data["sources"]), key
        assert agency.accepts_ai == (key in ACCEPTING)
    assert load_agency("adobe_stock").headers == ["Filename", "Title", "Keywords", "Category", "Releases"]
    assert load_agency("getty").key == load_agency("istock").key == "getty_istock"


def test_refusal_is_one_line_with_policy_and_date():
    for key in REFUSING:
        with pytest.raises(AgencyRefused) as err:
            parse_agencies(f"adobe_stock, {key}")
        line = str(err.value)
        assert "\n" not in line and line.startswith(key) and "AI-generated" in line and "2026-12-07" in line


def test_budget_override_and_bad_input():
    choices = parse_agencies("freepik:20, dreamstime")
    assert [(c.agency.key, c.budget) for c in choices] == [("freepik", 20), ("dreamstime", 35)]
    with pytest.raises(AgencyError, match="from 7 to 50"):
        parse_agencies("dreamstime:3")
    with pytest.raises(AgencyError, match="unknown agency 'nope'"):
        parse_agencies("nope")


def test_user_file_corrects_a_header_without_code(tmp_path):
    (tmp_path / "dreamstime.json").write_text(json.dumps({"csv": {"columns": [
        {"header": "Filename", "value": "filename"}, {"header": "Title", "value": "title"},
        {"header": "Description", "value": "description"}, {"header": "Keywords", "value": "keywords"},
        {"header": "Category", "value": "ai_category"}]}}))
    agency = load_agency("dreamstime", [tmp_path])
    assert agency.headers == ["Filename", "Title", "Description", "Keywords", "Category"]
    assert agency.ai["category"] == 212  # the rest still comes from the built-in file
    record = {"filename": "a_0001.jpg", "title": "Calm lake", "description": "A calm lake at dawn with pine trees.",
              "keywords": ["lake", "calm", "pine", "trees", "dawn", "water", "forest"], "category": 11}
    path = tmp_path / "d.csv"
    agency_csv.write_series(agency, path, [render_row(agency, record)])
    assert agency_csv.validate_csv(agency, path) == []


def test_validate_csv_catches_what_breaks_the_format(tmp_path):
    agency = load_agency("123rf")
    record = {"filename": "a_0001.jpg", "description": "A calm lake.", "keywords": ["lake", "calm"], "category": 11}
    path = tmp_path / "123rf.csv"
    agency_csv.write_series(agency, path, [render_row(agency, record)])
    assert agency_csv.validate_csv(agency, path) == []
    path.write_text(path.read_text().replace('"', ""))  # quoting lost
    assert any("quoting" in p for p in agency_csv.validate_csv(agency, path))
    dream = load_agency("dreamstime")
    path = tmp_path / "dreamstime.csv"
    path.write_bytes(agency_csv.encode_lines(dream, [dream.headers]))  # no BOM
    assert any("BOM missing" in p for p in agency_csv.validate_csv(dream, path))


def test_appends_never_give_an_image_two_rows(tmp_path):
    agency = load_agency("freepik")
    row = render_row(agency, {"filename": "a_0001.jpg", "title": "Calm lake", "keywords": ["lake"] * 1 + [
        f"word{i}" for i in range(8)], "category": 11, "prompt_clean": "calm lake"})
    path = tmp_path / "freepik.csv"
    agency_csv.append_rows(agency, path, [row])
    agency_csv.append_rows(agency, path, [row, row])
    assert len(agency_csv.read_series(agency, path)) == 1


def test_keyword_budget_drops_redundant_terms_first():
    demo = ["mountain ridges", "layered mountain ridges", "ridges", "mountain", "layered"]
    assert budget_keywords(demo, 49) == ["mountain ridges", "ridges", "mountain", "layered"]
    assert budget_keywords(demo, 3) == ["ridges", "mountain", "layered"]
    assert budget_keywords(["ridge", "ridges", "mist", "misty", "fog", "lake"], 49) == ["ridge", "mist", "misty",
                                                                                       "fog", "lake"]
    assert budget_keywords(["ridge", "mist", "misty", "fog", "lake", "pine"], 4) == ["ridge", "mist", "lake", "pine"]
    assert singular("berries") == "berry" and singular("glass") == "glass" and singular("leaves") == "leaf"
    assert redundancy(demo).count == 2


def test_order_puts_the_images_own_terms_first():
    terms = ["nature", "weather", "blue", "sunrise", "landscape", "mountain ridges", "horizontal"]
    ordered = order_keywords(terms, "sunrise over layered mountain ridges")
    assert ordered[:2] == ["sunrise", "mountain ridges"] and ordered[2] == "blue"
    assert ordered[-3:] == ["nature", "landscape", "horizontal"]


def test_two_processes_claim_names_in_two_folders_without_collision(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from rezcty_core.stock.filenames import reserve_filename
        root = Path({str(tmp_path)!r})
        sub = root / sys.argv[1]
        for _ in range(60):
            reserve_filename(sub, "Sunrise over mountains", claims=root / ".rezcty_names")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, folder]) for folder in ("stock", "stock/rejected")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    names = [p.name for p in (tmp_path / "stock").rglob("*.jpg")]
    assert len(names) == 120 == len(set(names))
