"""Metadata Writer through the real ComfyUI server, checked with an independent reader (Debian's exiftool)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from PIL import Image
from test_metadata_core import FORBIDDEN, TRAP_PROMPT

from harness import sd15_graph
from rezcty_core.stock import agency_csv
from rezcty_core.stock.agencies import load_agency
from rezcty_core.stock.provenance import file_sha256

NODE = "RezctyMetadataWriter"
TRAINED_ALGORITHMIC = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


@pytest.fixture(scope="session")
def exiftool() -> str:
    """Path of exiftool; installed with apt-get when missing and running as root, else the tests fail."""
    found = shutil.which("exiftool")
    if not found and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "libimage-exiftool-perl"]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(cmd, env=env, capture_output=True)
        found = shutil.which("exiftool")
    if not found:  # a failure, not a skip: without the independent reader the embedded metadata goes unchecked
        pytest.fail("exiftool (Debian package libimage-exiftool-perl) is not installed and could not be installed "
                    "(needs root and apt-get): it is the independent reader these tests verify with", pytrace=False)
    return found


def read_tags(exiftool: str, path) -> dict:
    out = subprocess.run([exiftool, "-j", "-G1", "-struct", "-charset", "iptc=utf8", "-n", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]


def as_list(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def writer_graph(prompt: str, prefix: str = "stock/", csv_name: str = "adobe_stock.csv", category: str = "auto",
                 width: int = 96, height: int = 64, batch: int = 1, color: int = 0x3C7850,
                 extra: dict | None = None) -> dict:
    """EmptyImage -> Metadata Writer (node 2) -> PreviewAny (node 9, shows the metadata JSON)."""
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": batch,
                                                      "color": color}},
        "2": {"class_type": NODE, "inputs": {"images": ["1", 0], "prompt": prompt, "filename_prefix": prefix,
                                             "csv_name": csv_name, "category": category}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    graph["2"]["inputs"].update(extra or {})
    return graph


def run_writer(comfy, graph: dict) -> list[dict]:
    """Run a writer graph; the metadata JSON entries (one per image), checked against the node's ui."""
    result = comfy.run(graph)
    entries = json.loads(result.text("9")[0])
    saved = result.ui("2")["images"]
    assert [(s["subfolder"], s["filename"]) for s in saved] == [(e["subfolder"], e["filename"]) for e in entries]
    assert "written" in result.ui("2")["text"][0]
    return entries


def assert_file_rules(comfy, exiftool: str, entry: dict) -> dict:
    path = comfy.output_dir / entry["subfolder"] / entry["filename"]
    name = path.name
    assert name.isascii() and len(name) <= 30 and name.endswith(".jpg"), name
    tags = read_tags(exiftool, path)
    assert tags["File:FileType"] == "JPEG"
    title, description = tags["XMP-dc:Title"], tags["XMP-dc:Description"]
    keywords = as_list(tags["XMP-dc:Subject"])
    assert title == entry["title"] and description == entry["description"]
    assert keywords == entry["keywords"]
    assert tags["XMP-photoshop:Headline"] == title
    assert tags["XMP-iptcExt:DigitalSourceType"] == TRAINED_ALGORITHMIC
    # IPTC IIM, read back as UTF-8 because the record says so (1:90 = ESC % G)
    assert tags["IPTC:CodedCharacterSet"] == "\x1b%G"
    assert tags["IPTC:ObjectName"] == title[:64] or title.startswith(tags["IPTC:ObjectName"])
    assert len(tags["IPTC:ObjectName"].encode()) <= 64
    assert tags["IPTC:Headline"] == title and tags["IPTC:Caption-Abstract"] == description
    iptc_keywords = as_list(tags["IPTC:Keywords"])
    assert iptc_keywords == keywords and all(len(k.encode()) <= 64 for k in iptc_keywords)
    # Adobe's text rules
    assert 0 < len(title) <= 70 and "," not in title
    assert len(description) <= 200
    assert 15 <= len(keywords) <= 49 and len({k.lower() for k in keywords}) == len(keywords)
    assert all(k == k.lower() for k in keywords)
    # sRGB JPEG at quality >= 95: ICC profile, EXIF colour space, and the quantisation tables of quality 95
    assert tags["ExifIFD:ColorSpace"] == 1
    assert "sRGB" in tags["ICC_Profile:ProfileDescription"]
    with Image.open(path) as im:
        assert im.mode == "RGB"
        reference = comfy.base_dir / "q95.jpg"
        Image.new("RGB", (8, 8)).save(reference, quality=95, subsampling=0)
        with Image.open(reference) as ref:
            assert im.quantization == ref.quantization
    assert path.stat().st_size <= 45 * 1024 * 1024
    return tags


def test_node_schema_matches_contract(comfy):
    info = comfy.object_info(NODE)[NODE]
    assert info["output_node"] is True
    assert info["output"] == ["STRING"]
    required = info["input"]["required"]
    assert list(required) == ["images", "prompt", "filename_prefix", "csv_name", "category"]
    assert required["csv_name"][1]["default"] == "adobe_stock.csv"
    options = required["category"][1]["options"] if isinstance(required["category"][1], dict) and "options" in \
        required["category"][1] else required["category"][0]
    assert options[0] == "auto" and len(options) == 22 and "11 Landscapes" in options
    optional = info["input"]["optional"]
    assert optional["llm"][0] == "REZCTY_LLM" and optional["image_embedding"][0] == "REZCTY_EMBEDDING"
    assert optional["qc_report"][0] == "STRING"


def test_trap_prompt_through_server(comfy, exiftool):
    entries = run_writer(comfy, writer_graph(TRAP_PROMPT, prefix="traps/", csv_name="traps.csv"))
    entry = entries[0]
    tags = assert_file_rules(comfy, exiftool, entry)
    everything = "\n".join([tags["XMP-dc:Title"], tags["XMP-dc:Description"], *as_list(tags["XMP-dc:Subject"]),
                            tags["IPTC:ObjectName"], *as_list(tags["IPTC:Keywords"])]).lower()
    assert [w for w in FORBIDDEN if w in everything] == []
    assert "knight" in as_list(tags["XMP-dc:Subject"])[:5]
    # the CSV row: Adobe's exact header, the same title / keywords / category
    csv_path = comfy.output_dir / "traps.csv"
    assert csv_path.read_text(encoding="utf-8").splitlines()[0] == "Filename,Title,Keywords,Category,Releases"
    rows = agency_csv.read_series(load_agency("adobe_stock"), csv_path)
    assert len(rows) == 1
    row = rows[0]
    assert row["Filename"] == entry["filename"] and row["Title"] == entry["title"]
    assert row["Keywords"] == ", ".join(entry["keywords"]) and row["Category"] == str(entry["category"])
    # the prompt is kept for reproducibility (in the rezcty namespace and the sidecar), never in dc/IPTC fields
    assert tags["XMP-rezcty:Prompt"] == TRAP_PROMPT
    assert entry["source"] == "deterministic"


def test_reproducibility_fields_from_a_real_render(comfy, exiftool, tiny_sd15):
    graph = sd15_graph(tiny_sd15, text="a red cube on a table, rezcty_style", seed=4242)
    graph["8"] = {"class_type": NODE, "inputs": {"images": ["6", 0], "prompt": "a red cube on a table, rezcty_style",
                                                 "filename_prefix": "repro/cube", "csv_name": "repro.csv",
                                                 "category": "8 Graphic Resources"}}
    result = comfy.run(graph)
    saved = result.ui("8")["images"]
    assert len(saved) == 1 and saved[0]["filename"].startswith("cube_")
    path = comfy.output_file(saved[0])
    tags = read_tags(exiftool, path)
    assert str(tags["XMP-rezcty:Seed"]) == "4242"
    models = json.loads(tags["XMP-rezcty:Models"])
    ckpt = next(m for m in models if m["folder"] == "checkpoints")
    assert ckpt["name"] == tiny_sd15
    assert ckpt["sha256"] == file_sha256(comfy.models_dir / "checkpoints" / tiny_sd15)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["category"] == 8 and sidecar["reproducibility"]["seeds"] == [4242]
    assert sidecar["workflow"]["prompt"]["5"]["class_type"] == "KSampler"


def test_indonesian_prompt_with_accents(comfy, exiftool):
    prompt = "Danau Toba yang tenang saat senja, perahu nelayan, kabut tipis — suasana café tepi danau, rezcty_style"
    entries = run_writer(comfy, writer_graph(prompt, prefix="indo/", csv_name="indo.csv", color=0x203060))
    entry = entries[0]
    tags = assert_file_rules(comfy, exiftool, entry)
    keywords = as_list(tags["XMP-dc:Subject"])
    assert {"lake", "boat", "dusk"} <= set(" ".join(keywords).split())
    assert "café" in " ".join(keywords)  # UTF-8 survives XMP, IPTC and the CSV
    assert "café" in as_list(tags["IPTC:Keywords"])[keywords.index(next(k for k in keywords if "café" in k))]
    row = agency_csv.read_series(load_agency("adobe_stock"), comfy.output_dir / "indo.csv")[0]
    assert row["Keywords"] == ", ".join(keywords)
    assert entry["filename"].isascii()


def test_names_that_try_to_leave_output_are_made_safe(comfy):
    outside = comfy.base_dir.parent
    before = {p.name for p in outside.iterdir()}
    base_before = {p.name for p in comfy.base_dir.iterdir()}
    graph = writer_graph("a calm lake at dawn, pine trees, mist", prefix="../../escape/evil",
                         csv_name="../../../../tmp_escape.csv")
    entry = run_writer(comfy, graph)[0]
    assert {p.name for p in outside.iterdir()} == before
    assert {p.name for p in comfy.base_dir.iterdir()} - base_before <= {"q95.jpg"}
    path = comfy.output_file(entry)
    assert path.resolve().is_relative_to(comfy.output_dir.resolve())
    assert entry["subfolder"] == "escape" and entry["filename"].startswith("evil_")
    assert (comfy.output_dir / "tmp_escape.csv").exists()
    graph = writer_graph("a calm lake at dawn", prefix="/etc/cron.d/x", csv_name="/etc/passwd")
    entry = run_writer(comfy, graph)[0]
    assert entry["subfolder"] == "etc/cron.d"
    assert any("made safe" in w for w in entry["warnings"])
    assert comfy.output_file(entry).resolve().is_relative_to(comfy.output_dir.resolve())
    assert (comfy.output_dir / "etc" / "passwd.csv").exists()


def test_qc_report_keeps_rejected_images_out_of_the_csv(comfy):
    report = json.dumps([{"index": 0, "verdict": "reject", "score": 0.1, "reasons": ["blurry"], "measurements": {}},
                         {"index": 1, "verdict": "pass", "score": 0.9, "reasons": [], "measurements": {}}])
    graph = writer_graph("red tulips in a glass vase on a windowsill", prefix="qc/", csv_name="qc.csv", batch=2,
                         extra={"qc_report": ["3", 0]})
    graph["3"] = {"class_type": "PrimitiveString", "inputs": {"value": report}}
    saved = run_writer(comfy, graph)
    assert [s["subfolder"] for s in saved] == ["qc/rejected", "qc"]
    rows = agency_csv.read_series(load_agency("adobe_stock"), comfy.output_dir / "qc.csv")
    assert [r["Filename"] for r in rows] == [saved[1]["filename"]]
    sidecar = json.loads(comfy.output_file(saved[0]).with_suffix(".json").read_text())
    assert sidecar["qc_verdict"] == "reject" and sidecar["csv"] is None


def test_metadata_json_output_and_summary(comfy):
    graph = writer_graph("a cup of black coffee on a wooden table, morning light", prefix="json/", csv_name="j.csv",
                         batch=2)
    result = comfy.run(graph)
    entries = json.loads(result.text("9")[0])
    assert [e["index"] for e in entries] == [0, 1] and all(e["error"] is None for e in entries)
    assert entries[0]["category"] == 4 and entries[0]["category_name"] == "Drinks"
    assert entries[0]["filename"] != entries[1]["filename"]
    assert all(e["csv"] == "j.csv" for e in entries)
    summary = result.ui("2")["text"][0]
    assert "2/2 written" in summary and entries[0]["title"] in summary


def test_foreign_csv_is_refused_before_anything_is_written(comfy):
    csv_path = comfy.output_dir / "foreign.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text("file,caption\na.jpg,hello\n")
    before = csv_path.read_bytes()
    error = comfy.run_error(writer_graph("a sailboat at sea", prefix="foreign/", csv_name="foreign.csv"))
    assert "expected Adobe's header" in error and "foreign.csv" in error
    assert csv_path.read_bytes() == before
    assert not (comfy.output_dir / "foreign").exists()
