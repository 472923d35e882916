"""`./rezcty demo`: the factory on the embedded default models, on this machine, into one results folder.

Starts the real ComfyUI server (fresh base directory, this pack loaded), then drives the three
lines with the headless client exactly as a user would on Colab:

  line 1  sample ideas -> Whisperer Expand (embedded Qwen2.5-Coder-1.5B when memory allows, else SmolLM2)
          -> prompts.json (each prompt names the model that wrote it)
  line 2  prompts -> SD 1.5 + Dual LoRA + Embedding Bridge -> x4 upscale (only when a checkpoint exists;
          without one, one sample image goes through the embedded Real-ESRGAN x4 to show the step)
  line 3  sample images (+ line 2's) -> DINOv2 -> QC Judge -> Metadata Writer -> JPEGs + adobe_stock.csv

Each line is run as declared in rezcty_core/factory/lines.py (the workflow, its inputs by node title or
class, how its results are collected), with POST /free between the lines. A line whose nodes this build
does not have is reported as skipped — never faked. Results: prompts.json, qc_report.json, the Metadata
Writer's files in stock/ with the server's folders kept (passed JPEGs with embedded metadata, their JSON
sidecars and adobe_stock.csv in stock/, rejected ones in stock/rejected/), the QC contact sheet,
summary.json (which counts what the results folder really holds); the path is printed at the end.

    ./rezcty demo [--out DIR] [--checkpoint FILE.safetensors] [--with-llm-judge] [--keep-base]
                  [--whisperer-llm auto|qwen|smollm2] [--analyst-llm auto|qwen|smollm2]

The embedded LLMs: `auto` (default) runs Qwen2.5-Coder-1.5B-Instruct where the memory plan
(rezcty_core/llm/embedded_choice.py) fits the server's free RAM/VRAM and, on a device with a time budget,
the measured costs (rezcty_core/data/llm_costs.json) keep the demo within it; else SmolLM2-135M, and says why.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from comfy_server import ComfyProcess  # noqa: E402
from demo_samples import write_ideas, write_samples  # noqa: E402

from rezcty_core.factory import lines, validate  # noqa: E402
from rezcty_core.factory.api import ComfyClient  # noqa: E402
from rezcty_core.factory.errors import ClientError  # noqa: E402
from rezcty_core.llm import embedded_choice  # noqa: E402

DEFAULT_MODELS = REPO / ".comfyui" / "base" / "models"  # the default base of `./rezcty comfy`
CKPT_EXTS = (".safetensors", ".ckpt")
LLM_CHOICES = {"qwen": embedded_choice.QWEN, "smollm2": embedded_choice.SMOLLM2}
# line 2 on the CPU: the detail pass and the first-pass size made small, so a render takes minutes
CPU_LINE2 = {"steps": 12, "detail_steps": 4, "base_scale": 0.5}
STOCK = "stock"  # the results sub-folder mirroring the Metadata Writer's files (its output/ tree)


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def find_checkpoint(explicit: str | None, models: Path) -> Path | None:
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SystemExit(f"[demo] error: --checkpoint {path}: no such file")
        return path
    env = os.environ.get("REZCTY_SD15")
    if env and Path(env).is_file():
        return Path(env)
    folder = models / "checkpoints"
    found = sorted(p for p in folder.glob("*") if p.suffix.lower() in CKPT_EXTS) if folder.is_dir() else []
    return found[0] if found else None


def link_user_models(base: Path, checkpoint: Path | None, models: Path) -> None:
    """Make the user's models (default base) visible in the demo's fresh base directory."""
    for sub in ("loras", "embeddings", "vae", "upscale_models", "LLM", "rezcty_adapters", "dinov2"):
        src = models / sub
        if src.is_dir():
            for item in src.iterdir():
                dest = base / "models" / sub / item.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists():
                    dest.symlink_to(item.resolve(), target_is_directory=item.is_dir())
    if checkpoint:
        dest = base / "models" / "checkpoints" / checkpoint.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.symlink_to(checkpoint.resolve())


def missing_nodes(info: dict, line: str) -> list[str]:
    return [n for n in lines.get(line).nodes if n not in info]


def combo_options(info: dict, cls: str, name: str) -> list:
    spec = {**info[cls]["input"].get("required", {}), **(info[cls]["input"].get("optional") or {})}.get(name)
    return validate.combo_options(spec) or [] if spec else []


# ---------------------------------------------------------------------------------------------
# the lines

def choose_llm(wanted: str, stats: dict | None, purpose: str, task: str | None = None, items: int = 0,
               flag: str = "--whisperer-llm") -> embedded_choice.Choice:
    """`qwen` / `smollm2` as asked; `auto`: the memory plan against the server's free memory (/system_stats), then,
    for a `task` of the cost table (rezcty_core/data/llm_costs.json), the demo's time budget on that device."""
    if wanted != "auto":
        return embedded_choice.Choice(LLM_CHOICES[wanted], f"{purpose}: {LLM_CHOICES[wanted]} (asked for)")
    try:
        device, free = embedded_choice.free_memory(stats or {})
    except ValueError as e:
        return embedded_choice.Choice(embedded_choice.SMOLLM2, f"{purpose}: SmolLM2-135M, free memory unknown ({e})")
    choice = embedded_choice.choose_embedded_llm(free, device, purpose=purpose)
    return embedded_choice.within_budget(choice, task, device, items, flag=flag) if task else choice


def choose_line1_llm(wanted: str, stats: dict | None, ideas: int = 3) -> embedded_choice.Choice:
    """Line 1's model: memory first, then on a device with a time budget the measured Whisperer cost."""
    return choose_llm(wanted, stats, "line 1 (Whisperer)", "whisperer", ideas)


def choose_analyst_llm(wanted: str, stats: dict | None, images: int) -> embedded_choice.Choice:
    """Line 3's analyst: memory first, then on a device with a time budget the measured judge + writer cost."""
    return choose_llm(wanted, stats, "analyst", "analyst", images, flag="--analyst-llm")


def read_ideas(path: Path) -> list[str]:
    return [i.strip() for i in path.read_text(encoding="utf-8").splitlines() if i.strip() and not i.startswith("#")]


def server_stats(client: ComfyClient) -> dict | None:
    try:
        return client.get_json("/system_stats")
    except ClientError:
        return None


def run_line1(client: ComfyClient, ideas: Path, out: Path, servers: list[str], llm: str) -> dict:
    """All the ideas in one queued prompt: the Whisperer generates them as one batch (issue 21), which on a
    memory-bound CPU costs about what one idea alone does."""
    line = lines.LINE1
    graph = line.bind(line.load(), {"llm": llm, "max_new_tokens": 64})  # a CLIP-sized prompt (77 tokens) needs no more
    done = lines.run(line, graph, ideas, servers, out / "line1", together=True)
    shutil.copy2(done.path, out / "prompts.json")
    for err in done.report.failed.values():
        say(f"  line 1 item failed: {err.splitlines()[0]}")
    texts = sum(len(it.source.get("ideas") or [it.source.get("idea")]) for it in done.batch.items)
    return {"ideas": texts, "prompts": len(done.result), "failed": len(done.report.failed), "model": llm}


def line2_graph(checkpoint: str, steps: int, detail_steps: int, base_scale: float, settings: dict | None = None) -> dict:
    """The shipped line-2 workflow with the demo's sizes: first-pass steps, the detail pass's steps and the base
    size's scale (a smaller first pass and detail pass; the stock target is unchanged), plus any other line-2
    `settings` (factory/lines.py)."""
    line = lines.LINE2
    return line.bind(line.load(), {"checkpoint": checkpoint, "steps": steps, "detail_steps": detail_steps,
                                   "base_scale": base_scale, **(settings or {})})


def run_line2(client: ComfyClient, checkpoint: str, out: Path, servers: list[str], count: int, steps: int,
              models: Path, detail_steps: int = 15, base_scale: float = 1.0, settings: dict | None = None) -> dict:
    line = lines.LINE2
    graph = line2_graph(checkpoint, steps, detail_steps, base_scale, settings)
    info = client.object_info()
    embeddings = [e for e in combo_options(info, "RezctyEmbeddingBridge", "embedding") if e]
    if line.value(graph, "embedding") not in embeddings:
        fallback = next((e for e in embeddings if "genius" in str(e).lower()), None) or (
            "none" if "none" in embeddings else None)
        if fallback is None:
            say("  line 2 skipped: the Embedding Bridge needs a textual-inversion embedding (rezcty_genius) in "
                f"{models / 'embeddings'}/")
            return {"skipped": "no embedding"}
        line.bind(graph, {"embedding": fallback})
    prompts = json.loads((out / "prompts.json").read_text(encoding="utf-8"))[:count]
    if not prompts:
        return {"skipped": "line 1 produced no prompt"}
    (out / "line2").mkdir(parents=True, exist_ok=True)
    subset = out / "line2" / "prompts_subset.json"
    subset.write_text(json.dumps(prompts, indent=1, ensure_ascii=False), encoding="utf-8")
    done = lines.run(line, graph, subset, servers, out / "line2", log=lambda m: None)
    for err in done.report.failed.values():
        say(f"  line 2 item failed: {err.splitlines()[0]}")
    return {"images": len(done.report.done), "failed": len(done.report.failed), "steps": steps,
            "detail_steps": detail_steps, "base_scale": base_scale}


def run_line3(client: ComfyClient, images: Path, out: Path, servers: list[str], with_llm: bool,
              llm: str | None = None) -> dict:
    line = lines.LINE3
    graph = line.load("llm" if with_llm else "fast")
    line.bind(graph, {"filename_prefix": "demo", **({"llm": llm} if with_llm and llm else {})})
    done = lines.run(line, graph, images, servers, out / "line3")
    shutil.copy2(done.path, out / "qc_report.json")
    sheet_entries, sheet_images = [], []
    for row, entry in lines.qc_entries(graph, done.rows):
        sheet_entries.append({**entry, "index": len(sheet_entries) + 1})
        sheet_images.append(_thumbnail_source(Path(row["image"])))
    if sheet_entries:  # one sheet for the whole batch (the node writes one per execution)
        from rezcty_core.qc.contact_sheet import write_contact_sheet

        write_contact_sheet(sheet_entries, sheet_images, out / "qc", "contact_sheet",
                            title="rezcty demo QC: " + ", ".join(f"#{i + 1} {v['image']}"
                                                                 for i, v in enumerate(done.result)))
    result = {"images": len(done.batch.items), "failed": len(done.report.failed), "verdicts": done.result}
    return {**result, "model": llm} if with_llm else result


def _thumbnail_source(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((512, 512))
        return np.asarray(im)


# ---------------------------------------------------------------------------------------------
# results

def collect_server_files(base: Path, out: Path) -> dict:
    """The Metadata Writer's files (JPEGs, their JSON sidecars, the CSVs) copied from the server's output/ into
    OUT/stock/ with their folders kept (passed in stock/, rejected in stock/rejected/: the writer numbers files per
    folder, so a flat copy would let a rejected image overwrite a passed one of the same name); then what is
    really in the results folder is counted."""
    output = base / "output"
    dest_root = out / STOCK
    for path in sorted(output.rglob("*")):
        rel = path.relative_to(output)
        if not path.is_file() or rel.parts[0] in SERVER_ONLY or any(part.startswith(".") for part in rel.parts):
            continue  # the QC memory, the upscale copies, the writer's name claims and locks
        wanted = path.suffix.lower() in (".jpg", ".jpeg", ".csv") or (
            path.suffix.lower() == ".json" and any(path.with_suffix(e).exists() for e in (".jpg", ".jpeg")))
        if wanted:
            dest = dest_root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    return count_results(out)


SERVER_ONLY = ("rezcty_qc", "upscale")  # the QC Judge's memory and per-run sheets; the upscale step's own copy


def count_results(out: Path) -> dict:
    """What the results folder really holds: the CSVs (their rows, and how many of them name a passed JPEG
    beside the CSV), the passed and rejected JPEGs, sidecars and the contact sheet(s), as paths inside `out`."""
    root = out / STOCK
    jpegs = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg")) if root.is_dir() else []
    rejected = [p for p in jpegs if "rejected" in p.relative_to(root).parts[:-1]]
    passed = [p for p in jpegs if p not in rejected]
    csvs = sorted(root.rglob("*.csv")) if root.is_dir() else []
    found = {
        "folder": STOCK,
        "csv": [p.relative_to(out).as_posix() for p in csvs],
        "csv_rows": {},
        "passed": [p.relative_to(out).as_posix() for p in passed],
        "rejected": [p.relative_to(out).as_posix() for p in rejected],
        "sidecars": sum(1 for p in jpegs if p.with_suffix(".json").is_file()),
        "contact_sheets": sorted(p.relative_to(out).as_posix() for p in (out / "qc").glob("contact_sheet.*")),
    }
    for csv_path in csvs:
        names = csv_filenames(csv_path)
        found["csv_rows"][csv_path.relative_to(out).as_posix()] = {
            "rows": len(names), "files_here": sum(1 for n in names if (csv_path.parent / n).is_file())}
    return found


def csv_filenames(path: Path) -> list[str]:
    """The first column of every data row (the file each row describes)."""
    import csv

    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:] if r]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="./rezcty demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="results folder (default .comfyui/demo/results-<time>)")
    ap.add_argument("--checkpoint", default=None, help=f"SD 1.5 checkpoint for line 2 (default: first in {DEFAULT_MODELS / 'checkpoints'})")
    ap.add_argument("--line2-count", type=int, default=2, help="how many prompts line 2 renders (CPU is slow)")
    ap.add_argument("--line2-steps", type=int, default=None, help="sampler steps for line 2 (default 25 on GPU, 12 on CPU)")
    ap.add_argument("--line2-detail-steps", type=int, default=None,
                    help=f"steps of line 2's detail pass (default: the workflow's 15 on GPU, {CPU_LINE2['detail_steps']} on CPU)")
    ap.add_argument("--line2-base-scale", type=float, default=None,
                    help=f"scale of line 2's first-pass size (default 1.0 on GPU, {CPU_LINE2['base_scale']} on CPU)")
    ap.add_argument("--with-llm-judge", action="store_true",
                    help="line 3 with the embedded LLM in the judge and the writer (slower on CPU)")
    ap.add_argument("--whisperer-llm", choices=["auto", *LLM_CHOICES], default="auto",
                    help="line 1's embedded LLM: auto = Qwen2.5-Coder-1.5B where memory allows, else SmolLM2-135M")
    ap.add_argument("--analyst-llm", choices=["auto", *LLM_CHOICES], default="auto",
                    help="the LLM of line 3 with --with-llm-judge: auto = Qwen where memory allows, else SmolLM2")
    ap.add_argument("--keep-base", action="store_true", help="keep the server's base directory afterwards")
    ap.add_argument("--models", default=None, help=f"models folder to use (default {DEFAULT_MODELS})")
    args = ap.parse_args(argv)
    models = Path(args.models).resolve() if args.models else DEFAULT_MODELS

    t0 = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or REPO / ".comfyui" / "demo" / f"results-{stamp}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-", dir=out.parent))
    say(f"results folder: {out}")
    ideas = write_ideas(out / "inputs" / "ideas.txt")
    samples = out / "inputs" / "images"
    write_samples(samples)
    checkpoint = find_checkpoint(args.checkpoint, models)
    link_user_models(work, checkpoint, models)

    server = ComfyProcess(work, log_path=out / "server.log")
    say(f"starting ComfyUI on {server.url} (base directory {work})")
    summary: dict = {"results": str(out), "lines": {}}
    exit_code = 0
    try:
        server.start()
        failures = server.import_failures()
        if failures:
            say("warning: custom node import failures:\n  " + "\n  ".join(failures))
        client = ComfyClient(server.url)
        info = client.object_info()
        servers = [server.url]
        stats = server_stats(client)
        on_gpu = _has_gpu(client)

        # line 1
        gone = missing_nodes(info, "line1")
        if gone:
            say(f"line 1 skipped: this build has no {', '.join(gone)} node yet")
            summary["lines"]["line1"] = {"skipped": f"missing nodes {gone}"}
            exit_code = 1
        else:
            choice = choose_line1_llm(args.whisperer_llm, stats, len(read_ideas(ideas)))
            say(f"line 1: {ideas.name} -> Whisperer Expand ({choice.name})")
            say(f"  model: {choice.reason}")
            summary["lines"]["line1"] = {**run_line1(client, ideas, out, servers, choice.name),
                                         "model_reason": choice.reason}
        client.free()

        # line 2
        gone = missing_nodes(info, "line2")
        if checkpoint is None:
            msg = (f"line 2 skipped: no SD 1.5 checkpoint. Put one (e.g. v1-5-pruned-emaonly.safetensors) in "
                   f"{models / 'checkpoints'}/ or pass --checkpoint FILE, then run ./rezcty demo again")
            say(msg)
            summary["lines"]["line2"] = {"skipped": "no SD 1.5 checkpoint", "put_it_in": str(models / "checkpoints")}
        elif gone:
            say(f"line 2 skipped: this build has no {', '.join(gone)} node yet")
            summary["lines"]["line2"] = {"skipped": f"missing nodes {gone}"}
            exit_code = 1
        elif not (out / "prompts.json").exists():
            summary["lines"]["line2"] = {"skipped": "line 1 did not run"}
        else:
            cpu = "--cpu" in server.log_text() or not on_gpu
            steps = args.line2_steps or (CPU_LINE2["steps"] if cpu else 25)
            detail = args.line2_detail_steps or (CPU_LINE2["detail_steps"] if cpu else 15)
            scale = args.line2_base_scale or (CPU_LINE2["base_scale"] if cpu else 1.0)
            say(f"line 2: {args.line2_count} prompt(s) -> {checkpoint.name}, {steps} steps, detail pass {detail} "
                f"steps, base size x{scale}, x4 upscale")
            summary["lines"]["line2"] = run_line2(client, checkpoint.name, out, servers, args.line2_count, steps,
                                                  models, detail, scale)
            gen = out / "line2" / "files"
            if gen.is_dir():
                for f in gen.glob("*.*"):
                    shutil.copy2(f, samples / f.name)
        if not summary["lines"]["line2"].get("images"):
            summary["lines"]["upscale"] = run_upscale_step(client, info, samples / "clean_1.png", out)
        client.free()

        # line 3
        gone = missing_nodes(info, "line3")
        if args.with_llm_judge and "RezctyLLMLoader" not in info:
            gone.append("RezctyLLMLoader")
        if gone:
            say(f"line 3 skipped: this build has no {', '.join(gone)} node yet")
            summary["lines"]["line3"] = {"skipped": f"missing nodes {gone}"}
            exit_code = 1
        else:
            analyst = choose_analyst_llm(args.analyst_llm, server_stats(client), len(list(samples.glob("*.png")))) \
                if args.with_llm_judge else None
            say(f"line 3: {len(list(samples.glob('*.png')))} images -> DINOv2 -> QC Judge -> Metadata Writer"
                + (f" (with the LLM judge: {analyst.name})" if analyst else ""))
            if analyst:
                say(f"  model: {analyst.reason}")
            summary["lines"]["line3"] = run_line3(client, samples, out, servers, args.with_llm_judge,
                                                  analyst.name if analyst else None)
            if analyst:
                summary["lines"]["line3"]["model_reason"] = analyst.reason
        client.free()
        summary["files"] = collect_server_files(work, out)
    except (ClientError, RuntimeError) as e:
        say(f"error: {e}")
        summary["error"] = str(e)
        exit_code = 2
    finally:
        server.stop()
        if not args.keep_base:
            shutil.rmtree(work, ignore_errors=True)

    summary["seconds"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    print_summary(summary, out)
    return exit_code


UPSCALER = "RealESRGAN_x4plus.safetensors"  # embedded (rezcty_core.sd.upscaler), in any base directory
UPSCALE_DEMO_SIDE = 128  # the step on the CPU takes seconds at this size, minutes at 512


def run_upscale_step(client: ComfyClient, info: dict, sample: Path, out: Path) -> dict:
    """Line 2's x4 model upscale on one sample image (reduced), when line 2 itself cannot render."""
    from PIL import Image

    if UPSCALER not in combo_options(info, "UpscaleModelLoader", "model_name"):
        say(f"upscale step skipped: {UPSCALER} is not in UpscaleModelLoader's list (run ./rezcty setup)")
        return {"skipped": f"no {UPSCALER}"}
    folder = out / "upscale"
    folder.mkdir(parents=True, exist_ok=True)
    small = Image.open(sample).convert("RGB")
    small.thumbnail((UPSCALE_DEMO_SIDE, UPSCALE_DEMO_SIDE), Image.LANCZOS)
    src = folder / f"{sample.stem}_{small.width}px.png"
    small.save(src)
    graph = {
        "load": {"class_type": "LoadImage", "inputs": {"image": str(src)}},
        "model": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": UPSCALER}},
        "up": {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["model", 0], "image": ["load", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["up", 0], "filename_prefix": "upscale/x4"}},
    }
    say(f"upscale step: {src.name} ({small.width}x{small.height}) -> {UPSCALER} x4 (core UpscaleModelLoader)")
    t0 = time.time()
    try:
        result = client.run(graph, out_dir=folder, file_prefix=f"{sample.stem}_")
    except ClientError as e:  # the step is a showcase: its failure is reported, the other lines still run
        say(f"upscale step failed: {e}")
        return {"skipped": f"failed: {str(e).splitlines()[0]}"}
    with Image.open(result.files[0]) as im:
        size = f"{im.width}x{im.height}"
    return {"model": UPSCALER, "input": str(src.relative_to(out)), "output": str(result.files[0].relative_to(out)),
            "size": size, "seconds": round(time.time() - t0, 1)}


def _has_gpu(client: ComfyClient) -> bool:
    try:
        devices = client.get_json("/system_stats").get("devices", [])
        return any(d.get("type") not in (None, "cpu") for d in devices)
    except ClientError:
        return False


def print_summary(summary: dict, out: Path) -> None:
    lines = summary.get("lines", {})
    print()
    print("rezcty demo — summary")
    l1 = lines.get("line1", {})
    text1 = l1.get("skipped") or f"{l1.get('prompts')} prompts from {l1.get('ideas')} ideas -> prompts.json"
    print(f"  line 1 prompts : {text1}")
    if l1.get("model"):
        print(f"  line 1 model   : {l1['model']} ({l1.get('model_reason', '')})")
    l2 = lines.get("line2", {})
    text2 = l2.get("skipped") or f"{l2.get('images')} rendered at 4.19 MP (line2/files)"
    print(f"  line 2 images  : {text2}")
    if l2.get("put_it_in"):
        print(f"                   -> put an SD 1.5 checkpoint in {l2['put_it_in']}/")
    up = lines.get("upscale")
    if up:
        text = up.get("skipped") or f"{up['input']} -> {up['output']} ({up['size']}, {up['model']}, {up['seconds']} s)"
        print(f"  x4 upscale     : {text}")
    l3 = lines.get("line3", {})
    if l3.get("skipped"):
        print(f"  line 3 QC      : {l3['skipped']}")
    elif l3:
        verdicts = l3.get("verdicts", [])
        passed = sum(1 for v in verdicts if v.get("verdict") == "pass")
        print(f"  line 3 QC      : {len(verdicts)} checked, {passed} passed, {len(verdicts) - passed} rejected")
        for v in verdicts:
            print(f"      {v['verdict']:>7}  {v['image']}  {', '.join(map(str, v.get('reasons') or []))}")
        if l3.get("model"):
            print(f"  line 3 analyst : {l3['model']} ({l3.get('model_reason', '')})")
    files = summary.get("files", {})
    for csv_name, count in files.get("csv_rows", {}).items():
        print(f"  CSV            : {csv_name} ({count['rows']} rows, {count['files_here']} of their files beside it)")
    if files.get("passed") or files.get("rejected"):
        print(f"  JPEGs          : {len(files['passed'])} passed in {STOCK}/, {len(files['rejected'])} rejected in "
              f"{STOCK}/rejected/ (XMP/IPTC embedded, a .json sidecar each)")
    for sheet in files.get("contact_sheets", []):
        print(f"  contact sheet  : {sheet}")
    if summary.get("error"):
        print(f"  error          : {summary['error'].splitlines()[0]}")
    print(f"  time           : {summary['seconds']} s")
    print(f"results: {out}")


if __name__ == "__main__":
    raise SystemExit(main())
