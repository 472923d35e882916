"""The eye on subjects never seen in training, with a dataset built by training.build_dataset.

    .venv/bin/python bench/bench_eye_subjects.py [--subjects 8] [--per-family 2] [--steps 24]
    ./rezcty bench eye          # runs with bench_eye_matters.py

A kohya caption folder is written (bench_eye_matters' image families: warm blobs / cold stripes;
captions "a lone SUBJECT made of MATERIAL, rezcty_style", the material following the family), then
`build_dataset whisperer --held-out 0.25` (precompute included) splits by *subject*, and
`train_adapter` trains the embedded SmolLM2-135M + projector on the training subjects. On the
held-out subjects' rows:

* BLEU-4 / ROUGE-L of the trained Whisperer vs the untrained base (the plain baseline, same prompts,
  greedy);
* image dependence: the same idea with its real embedding vs a shuffled one (an image of the other
  family): how often the family-specific material follows the image, and how often the expansion
  changes at all.
Prints the load average before and after (two shared cores make times noisy; no time is asserted).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
SUBJECTS = ["knight", "tower", "ship", "fox", "lantern", "dragon", "owl", "bridge", "castle", "whale", "robot", "tree"]
MATERIALS = ["ember red obsidian", "glacier blue crystal"]


def python(*args: str, threads: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True)


def caption_folder(root: Path, subjects: list[str], per_family: int, seed: int) -> Path:
    from bench_eye_matters import FAMILIES, draw

    folder = root / "10_rezcty_style"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for s in subjects:
        for f in range(2):
            for i in range(per_family):
                path = folder / f"{s}_{FAMILIES[f][0]}_{i}.png"
                draw(f, rng).save(path)
                path.with_suffix(".txt").write_text(f"a lone {s} made of {MATERIALS[f]}, rezcty_style\n", encoding="utf-8")
    return root


def family_of(text: str) -> int | None:
    named = [f for f, m in enumerate(MATERIALS) if m.split()[0] in text.lower()]
    return named[0] if len(named) == 1 else None


def generate_all(adapter: Path | None, rows: list[dict], root: Path, images: list[object | None], tokens: int) -> list[str]:
    from rezcty_core.llm.model import load_llm
    from rezcty_core.llm.templates import build_messages

    llm = load_llm("embedded", adapter, keep_loaded=False)
    out = []
    for row, image in zip(rows, images):
        messages = build_messages("whisperer", row["input_text"], has_image=image is not None)
        out.append(llm.generate(messages, image, max_new_tokens=tokens, do_sample=False, seed=0).strip())
    llm.unload()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--per-family", type=int, default=2, help="images per subject and family")
    ap.add_argument("--held-out", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from rezcty_core.eye.embedding import load_embedding
    from rezcty_core.llm.text_metrics import corpus_scores

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_eye_subjects_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        captions = caption_folder(work / "captions", SUBJECTS[:args.subjects], args.per_family, args.seed)
        ds = work / "dataset"
        res = python("training.build_dataset", "whisperer", "--captions", str(captions), "--embeddings",
                     str(ds / "emb"), "--out", str(ds / "dataset.jsonl"), "--held-out", str(args.held_out),
                     "--seed", str(args.seed), threads=2)
        if res.returncode != 0:
            raise SystemExit(f"build_dataset failed:\n{res.stderr[-3000:]}")
        report = json.loads((ds / "build_report.json").read_text())
        t_build = time.perf_counter() - t0
        res = python("training.train_adapter", "--data", str(ds / "dataset.jsonl"), "--base-model", "embedded",
                     "--out", str(work / "adapter"), "--max-steps", str(args.steps), "--grad-accum", str(args.grad_accum),
                     "--lr", "1e-3", "--projector-lr", "1e-3", "--eval-generate", "0", "--no-gradient-checkpointing",
                     "--seed", str(args.seed), threads=args.threads)
        if res.returncode != 0:
            raise SystemExit(f"train_adapter failed:\n{res.stderr[-3000:]}")
        t_train = time.perf_counter() - t0 - t_build

        held = [json.loads(ln) for ln in (ds / "held_out.jsonl").read_text().splitlines()]
        real = [load_embedding(ds / r["image_embedding_path"]) for r in held]
        families = [family_of(r["output_text"]) for r in held]
        # shuffled: each row gets the embedding of a held-out image of the *other* family
        other = {f: [e for e, g in zip(real, families) if g != f] for f in set(families)}
        shuffled = [other[f][i % len(other[f])] for i, f in enumerate(families)]
        refs = [r["output_text"] for r in held]
        base = generate_all(None, held, ds, [None] * len(held), args.max_new_tokens)
        seeing = generate_all(work / "adapter", held, ds, real, args.max_new_tokens)
        swapped = generate_all(work / "adapter", held, ds, shuffled, args.max_new_tokens)
        s_base, s_trained = corpus_scores(base, refs), corpus_scores(seeing, refs)
        follows_real = sum(family_of(t) == f for t, f in zip(seeing, families)) / len(held)
        follows_swapped = sum(family_of(t) == 1 - f for t, f in zip(swapped, families)) / len(held)
        changed = sum(a != b for a, b in zip(seeing, swapped)) / len(held)

        print(f"dataset (build_dataset): {report['rows']['train']} training rows ({len(report['subjects']['train'])} subjects), "
              f"{len(held)} held-out rows, held-out subjects {report['subjects']['held_out']} (overlap with training: "
              f"{report['subjects']['overlap'] or 'none'}); build {t_build:.0f} s (precompute included)")
        print(f"training: embedded SmolLM2-135M + projector, {args.steps} steps x {args.grad_accum}, {t_train:.0f} s, "
              f"{args.threads} thread(s)")
        print(f"held-out subjects BLEU-4 / ROUGE-L: trained {s_trained['bleu']:.3f} / {s_trained['rouge_l']:.3f} | "
              f"untrained base {s_base['bleu']:.3f} / {s_base['rouge_l']:.3f} | ratio ROUGE-L "
              f"{s_trained['rouge_l'] / max(s_base['rouge_l'], 1e-9):.2f}x")
        print(f"image dependence (held-out subjects): material follows the real image {follows_real:.0%}, "
              f"follows the shuffled image {follows_swapped:.0%}, expansion changed by the shuffle {changed:.0%} "
              f"(chance 50%)")
        for r, t, u in list(zip(held, seeing, swapped))[:3]:
            print(f"  {r['input_text']!r}: real -> {t!r} | shuffled -> {u!r}")
        print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t0:.0f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
