"""training.build_dataset: what the user already has -> dataset.jsonl for train_adapter.

* a kohya caption folder written here -> build_dataset whisperer (precompute included, held-out by
  subject) -> train_adapter (a few steps, embedded SmolLM2 + DINOv2-small; its eval reads
  held_out.jsonl) -> the adapter in RezctyLLMLoader -> RezctyWhispererExpand with the DINOv2 embedding
  of a held-out subject's image, through the server: the expansion differs from the text-only one.
  The adapter (and its build report) is cached under .comfyui/cache/ keyed by the code that makes it.
* a factory run folder in the demo's layout, its QC line run through the server by the headless
  client -> whisperer rows (ideas -> prompts of passed images) and judge rows; a review CSV flips a QC
  pass into a reject with the mapped reason code.
* every bad-input case is reported by name, skipped (exit 0), and fatal with --strict.
"""
from __future__ import annotations

import csv
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from harness import link_model

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".comfyui" / "cache"
TRIGGERS = "rezcty_style, rezcty_structure"
SUBJECTS = ["knight", "tower", "ship", "fox", "lantern", "dragon"]
MATERIALS = ["ember red obsidian", "glacier blue crystal"]  # one per bench image family (warm blobs, cold stripes)
CODE = [REPO / "training" / "build_dataset.py", REPO / "rezcty_core" / "sd" / "ideas.py",
        REPO / "rezcty_core" / "sd" / "captions.py", REPO / "training" / "train_adapter.py",
        REPO / "training" / "adapter_data.py", REPO / "training" / "precompute_dinov2.py",
        REPO / "bench" / "bench_eye_matters.py", REPO / "rezcty_core" / "llm" / "templates.py",
        REPO / "rezcty_core" / "llm" / "projector.py"]

sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tools"))


def script(*args: str, threads: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True)


def caption_set(root: Path) -> Path:
    """kohya layout: 10_rezcty_style/ with SUBJECT_FAMILY_I.png + .txt, 'a lone SUBJECT made of MATERIAL, rezcty_style'."""
    from bench_eye_matters import FAMILIES, draw

    folder = root / "10_rezcty_style"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in SUBJECTS:
        for f in range(2):
            for i in range(2):
                path = folder / f"{s}_{FAMILIES[f][0]}_{i}.png"
                draw(f, rng).save(path)
                path.with_suffix(".txt").write_text(f"a lone {s} made of {MATERIALS[f]}, rezcty_style\n", encoding="utf-8")
    return folder


def whisperer_from_captions() -> Path:
    """Cached: build_dataset whisperer on caption_set (held-out 0.2 by subject) + train_adapter 32 steps x 2."""
    here = inspect.getsource(caption_set) + inspect.getsource(whisperer_from_captions) + repr((SUBJECTS, MATERIALS))
    digest = hashlib.sha256(here.encode() + b"".join(p.read_bytes() for p in CODE)).hexdigest()[:12]
    path = CACHE / f"build_dataset_whisperer_{digest}"
    if (path / "adapter" / "rezcty_adapter.json").is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build_dataset_", dir=CACHE))
    try:
        captions = caption_set(work / "captions")
        before = sorted(p.name for p in captions.iterdir())
        ds = work / "dataset"
        res = script("training.build_dataset", "whisperer", "--captions", str(captions.parent), "--embeddings",
                     str(ds / "embeddings"), "--out", str(ds / "dataset.jsonl"), "--held-out", "0.2")
        assert res.returncode == 0, res.stderr[-3000:]
        assert sorted(p.name for p in captions.iterdir()) == before, "build_dataset wrote next to the user's images"
        res = script("training.train_adapter", "--data", str(ds / "dataset.jsonl"), "--base-model", "embedded",
                     "--out", str(work / "adapter"), "--max-steps", "32", "--grad-accum", "2", "--lr", "1e-3",
                     "--projector-lr", "1e-3", "--eval-generate", "1", "--eval-max-new-tokens", "8",
                     "--no-gradient-checkpointing")
        assert res.returncode == 0, res.stderr[-3000:]
        assert "held_out.jsonl" in res.stderr, "train_adapter's eval did not read build_dataset's held_out.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shutil.copytree(work / "adapter", tmp / "adapter", ignore=shutil.ignore_patterns("checkpoints"))
        shutil.copy2(ds / "build_report.json", tmp / "build_report.json")
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path


def test_caption_folder_to_image_aware_whisperer_through_the_server(comfy, tmp_path):
    from bench_eye_matters import FAMILIES

    cached = whisperer_from_captions()
    report = json.loads((cached / "build_report.json").read_text())
    config = json.loads((cached / "adapter" / "rezcty_adapter.json").read_text())
    held_subjects = report["subjects"]["held_out"]
    assert held_subjects and not report["subjects"]["overlap"]
    assert set(held_subjects) | set(report["subjects"]["train"]) == set(SUBJECTS)
    assert report["rows"]["held_out"] == 4 * len(held_subjects) and report["rows_per_source"] == {"captions": 24}
    assert report["trigger"]["rows_with_trigger_at_end"] == 24 and report["skipped_count"] == 0
    assert config["training"]["held_out"] == report["rows"]["held_out"]  # train_adapter evaluated on held_out.jsonl
    assert config["eye"]["dim"] == 384

    adapter = link_model(comfy, "rezcty_adapters", cached / "adapter", "build_dataset_whisperer")
    subject = held_subjects[0]
    captions = caption_set(tmp_path / "captions")  # deterministic: the same pixels the dataset was built from
    images = []
    for family, _ in FAMILIES[:2]:  # one held-out image of each family (warm blobs, cold stripes)
        images.append(comfy.input_dir / f"bd_{subject}_{family}.png")
        shutil.copy2(captions / f"{subject}_{family}_0.png", images[-1])

    def expand(image: Path | None) -> str:
        graph = {
            "1": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": "embedded: SmolLM2-135M-Instruct",
                                                              "adapter": adapter, "quantization": "none",
                                                              "keep_loaded": True}},
            "2": {"class_type": "RezctyWhispererExpand", "inputs": {
                "llm": ["1", 0], "prompt": f"a lone {subject}", "trigger_words": TRIGGERS, "seed": 3,
                "temperature": 0.0, "top_p": 0.95, "top_k": 50, "max_new_tokens": 16}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
        }
        if image is not None:
            graph.update({
                "10": {"class_type": "LoadImage", "inputs": {"image": image.name}},
                "11": {"class_type": "RezctyDINOv2Loader", "inputs": {"model": "embedded: dinov2-small",
                                                                      "device": "cpu", "dtype": "fp32"}},
                "12": {"class_type": "RezctyDINOv2Embed", "inputs": {"dino": ["11", 0], "image": ["10", 0],
                                                                     "pooling": "cls", "use_cache": False}},
            })
            graph["2"]["inputs"]["image_embedding"] = ["12", 0]
        [text] = comfy.run(graph).text("3")
        assert text.endswith(f", {TRIGGERS}") and text.count("rezcty_style") == 1, text
        return text

    blind = expand(None)
    seeing = [expand(image) for image in images]
    # the image changes the expansion of the same idea, seed and greedy decoding
    assert any(text != blind for text in seeing), (blind, seeing)


# --- bad input --------------------------------------------------------------------------------

def bad_caption_set(root: Path) -> Path:
    from bench_eye_matters import draw

    folder = root / "5_rezcty_style"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, text in [("good_a", "a red fox on a rock, rezcty_style"), ("good_b", "a small boat on a lake, rezcty_style")]:
        draw(0, rng, 64).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(text + "\n", encoding="utf-8")
    (folder / "lonely_caption.txt").write_text("a tower in the fog, rezcty_style\n", encoding="utf-8")
    draw(1, rng, 64).save(folder / "no_caption.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "broken.txt").write_text("a broken bridge, rezcty_style\n", encoding="utf-8")
    draw(1, rng, 64).save(folder / "stylish.png")
    (folder / "stylish.txt").write_text("a cinematic castle at night, rezcty_style\n", encoding="utf-8")
    draw(0, rng, 64).save(folder / "no_trigger.png")
    (folder / "no_trigger.txt").write_text("a wooden chair\n", encoding="utf-8")
    return folder


def test_bad_captions_are_reported_by_name_and_skipped_or_fatal_with_strict(tmp_path):
    folder = bad_caption_set(tmp_path / "user")
    before = sorted(p.name for p in folder.iterdir())
    out = tmp_path / "ds" / "dataset.jsonl"
    args = ["training.build_dataset", "whisperer", "--captions", str(folder.parent), "--embeddings",
            str(tmp_path / "emb"), "--out", str(out), "--text-only", "--ideas-per-caption", "2"]
    res = script(*args, threads=2)
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    expected = {"lonely_caption.txt": "caption without an image", "no_caption.png": "image without a caption",
                "broken.png": "unreadable image", "stylish.txt": "style_word", "no_trigger.txt": "trigger_missing"}
    for name, reason in expected.items():
        line = next((ln for ln in err.splitlines() if name in ln and ln.endswith("; skipped")
                     and not ln.startswith("precompute_dinov2")), None)
        assert line and reason in line and str(folder) in line, (name, err[-3000:])
    assert "good_a" not in "".join(ln for ln in err.splitlines() if "skipped" in ln)
    report = json.loads((out.parent / "build_report.json").read_text())
    assert sorted(Path(s["file"]).name for s in report["skipped"]) == sorted(expected)
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert {r["output_text"] for r in rows} == {"a red fox on a rock, rezcty_style", "a small boat on a lake, rezcty_style"}
    with_image = [r for r in rows if "image_embedding_path" in r]
    assert len(with_image) == len(rows) // 2 and all((out.parent / r["image_embedding_path"]).is_file() for r in with_image)
    assert {r["input_text"] for r in rows} >= {"a red fox", "a small boat"}
    assert all(2 <= len(r["input_text"].split()) <= 6 for r in rows)
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written next to the user's images

    from training.build_dataset import curate

    subset = curate(out, 2, seed=0)  # --curate K: training.curate's diverse subset of the written rows
    assert subset and len(subset) == 2
    assert {(r["input_text"], r["output_text"]) for r in subset} <= {(r["input_text"], r["output_text"]) for r in rows}

    strict = script(*args, "--strict", threads=2)
    assert strict.returncode == 1 and "--strict" in strict.stderr, strict.stderr[-2000:]
    inside = script("training.build_dataset", "whisperer", "--captions", str(folder), "--embeddings",
                    str(tmp_path / "emb"), "--out", str(folder / "dataset.jsonl"))
    assert inside.returncode == 2 and "inside the caption folder" in inside.stderr
    assert sorted(p.name for p in folder.iterdir()) == before


def test_duplicates_dropped_and_split_by_subject():
    from training.build_dataset import deduplicate, split_by_subject

    rows = [{"image_embedding_path": f"e{i % 4}", "input_text": f"a {s}", "output_text": f"a {s}, t", "subject": s}
            for i, s in enumerate(["cat", "cat", "dog", "dog", "owl", "owl", "cow", "cow"] * 2)]
    unique, dropped = deduplicate(rows)
    assert dropped == 8 and len(unique) == 8
    train, held, subjects = split_by_subject(unique, 0.25, seed=0)
    assert len(held) == 2 and len(subjects) == 1 and not {r["subject"] for r in train} & set(subjects)
    assert split_by_subject(unique, 0.25, seed=0)[2] == subjects  # deterministic


def test_ideas_are_short_and_deterministic():
    from rezcty_core.sd.ideas import ideas, subject

    caption = "a futuristic city under heavy rain, glowing neon lights, rezcty_style"
    assert ideas(caption, 4, ["rezcty_style"]) == ["a futuristic city", "city under heavy rain", "a city",
                                                     "a futuristic city under heavy rain"]
    assert subject(caption, ["rezcty_style"]) == "city"
    assert ideas("three foxes running across a snowy field", 1) == ["three foxes"]
    assert subject("three foxes running across a snowy field") == "fox"


# --- factory runs and the review --------------------------------------------------------------

def factory_run(comfy, run: Path) -> dict:
    """The demo's layout: inputs/images (+ NAME.txt prompts), prompts.json (line 1), line3/ run by the headless
    client through the server (QC + Metadata Writer), the upload CSV copied into the run folder."""
    from demo_samples import landscape

    from rezcty_core.factory.batch import Batch, default_bind, items_from_images
    from rezcty_core.factory.workflow import load_workflow, set_input

    images = run / "inputs" / "images"
    images.mkdir(parents=True)
    made = {"bd_clean_a.png": (landscape(101), "sunrise over a quiet mountain lake with a pale pink sky"),
            "bd_clean_b.png": (landscape(102), "misty pine valley under a low morning sun"),
            "bd_blurry.png": (np.asarray(Image.fromarray(landscape(103)).filter(ImageFilter.GaussianBlur(8))),
                              "rolling hills at dusk with a warm glow")}
    ideas = {"bd_clean_a.png": "sunrise over a lake", "bd_clean_b.png": "a misty valley", "bd_blurry.png": "hills at dusk"}
    for name, (pixels, prompt) in made.items():
        Image.fromarray(pixels).save(images / name, compress_level=1)
        (images / name).with_suffix(".txt").write_text(prompt + "\n", encoding="utf-8")
    (run / "prompts.json").write_text(json.dumps([{"idea": ideas[n], "prompt": p} for n, (_, p) in made.items()]))
    graph = load_workflow(REPO / "workflows" / "api" / "line3_qc_metadata_fast.json")
    set_input(graph, "6.filename_prefix", "bdrun")
    set_input(graph, "6.csv_name", "bd_upload.csv")
    items = items_from_images(images, default_bind(graph, "images"), default_bind(graph, "image_text"))
    Batch(graph, items, [comfy.url], run / "line3", progress=False).run()
    shutil.copy2(next(comfy.output_dir.rglob("bd_upload.csv")), run / "adobe_stock.csv")
    rows = json.loads((run / "line3" / "results.json").read_text())
    verdicts = {}
    for row in rows:
        [entry] = json.loads(row["texts"]["7"][0])
        verdicts[Path(row["image"]).name] = entry["verdict"]
    return {"verdicts": verdicts, "ideas": ideas, "prompts": {n: p for n, (_, p) in made.items()}}


def test_factory_run_gives_whisperer_and_judge_rows_and_the_review_overrides_qc(comfy, tmp_path):
    run = tmp_path / "run"
    facts = factory_run(comfy, run)
    assert facts["verdicts"] == {"bd_clean_a.png": "pass", "bd_clean_b.png": "pass", "bd_blurry.png": "reject"}
    emb = tmp_path / "emb"

    # line 1 + line 3 -> whisperer rows: the passed images' (idea -> prompt), with their embeddings
    out = tmp_path / "w" / "dataset.jsonl"
    res = script("training.build_dataset", "whisperer", "--factory", str(run), "--embeddings", str(emb), "--out", str(out),
                 threads=2)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert sorted((r["input_text"], r["output_text"]) for r in rows) == sorted(
        (facts["ideas"][n], facts["prompts"][n]) for n in ("bd_clean_a.png", "bd_clean_b.png"))
    assert all((out.parent / r["image_embedding_path"]).is_file() for r in rows)

    # --accepted: only what Adobe accepted teaches the Whisperer; an unknown name is reported
    accepted = tmp_path / "accepted.txt"
    accepted.write_text("bd_clean_b.png\nnot_in_any_run.jpg\n")
    res = script("training.build_dataset", "whisperer", "--factory", str(run), "--accepted", str(accepted),
                 "--embeddings", str(emb), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert [json.loads(ln)["input_text"] for ln in out.read_text().splitlines()] == [facts["ideas"]["bd_clean_b.png"]]
    assert f"{accepted}:2" in res.stderr and "not_in_any_run.jpg" in res.stderr

    # judge rows: measurements text -> QC verdict; the upload CSV's title/keywords on passed images
    upload = list(csv.DictReader(open(run / "adobe_stock.csv", encoding="utf-8")))
    assert len(upload) == 2  # the writer lists the passed images only
    judge = tmp_path / "j" / "dataset.jsonl"
    res = script("training.build_dataset", "judge", "--qc", str(run), "--embeddings", str(emb), "--out", str(judge))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {Path(r["source_image"]).name: r for r in map(json.loads, judge.read_text().splitlines())}
    assert set(rows) == set(facts["verdicts"])
    for name, row in rows.items():
        assert row["input_text"].startswith("Measurements: ") and "Reason codes:" in row["input_text"]
        assert row["output_text"]["verdict"] == facts["verdicts"][name]
    assert "blurry" in rows["bd_blurry.png"]["output_text"]["reasons"]
    clean_a = rows["bd_clean_a.png"]["output_text"]
    assert clean_a["title"] and len(clean_a["keywords"]) >= 5

    # the review CSV: Adobe rejected a QC pass -> a judge reject with the mapped reason; unknown rows reported
    uploaded_a = next(r["Filename"] for r in upload if r["Title"] == clean_a["title"])
    review = tmp_path / "review.csv"
    review.write_text("Filename,Status,Reason\n"
                      f"{uploaded_a},rejected,Quality issues: out of focus\n"
                      "ghost_0001.jpg,rejected,Similar content\n", encoding="utf-8")
    res = script("training.build_dataset", "judge", "--qc", str(run), "--review", str(review), "--embeddings", str(emb),
                 "--out", str(judge))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {Path(r["source_image"]).name: r for r in map(json.loads, judge.read_text().splitlines())}
    flipped = rows["bd_clean_a.png"]
    assert flipped["output_text"] == {"verdict": "reject", "reasons": ["blurry"]}
    assert flipped["review"]["qc_verdict"] == "pass" and flipped["source"] == "review"
    assert rows["bd_clean_b.png"]["output_text"]["verdict"] == "pass"
    assert f"{review}:3" in res.stderr and "ghost_0001.jpg" in res.stderr
    strict = script("training.build_dataset", "judge", "--qc", str(run), "--review", str(review), "--embeddings",
                    str(emb), "--out", str(judge), "--strict")
    assert strict.returncode == 1 and "ghost_0001.jpg" in strict.stderr
