"""Whisperer at factory speed: prompts/min at batch 1/4/8/16 vs one idea at a time, peak memory per batch size,
and constrained JSON (valid-first-try rate, tok/s) vs free generation, on the embedded models.

    ./rezcty bench whisperer     # or: python bench/bench_whisperer_batch.py [--ideas N] [--tokens N] [--qwen]

The baseline is the same ideas expanded one by one (`expand_idea` per idea, i.e. batch 1) in the same run.
Peak memory is the process's peak RSS (VmHWM) reset before each batch size (/proc/self/clear_refs).
The load average is printed before and after: on a shared 2-core machine every figure moves with it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rezcty_core.llm import whisperer  # noqa: E402
from rezcty_core.llm.json_reply import extract_json  # noqa: E402
from rezcty_core.llm.model import load_llm  # noqa: E402

IDEAS = ["a red bicycle", "a lighthouse on a cliff", "sunrise over a mountain", "a cat in the rain", "a teapot",
         "a city at night", "a forest path in autumn", "a bowl of fruit", "a sailing boat at dusk", "a desert road",
         "a snowy cabin", "a field of sunflowers", "a coffee cup on a table", "a waterfall in a jungle",
         "a hot air balloon", "an old library"]


def peak_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def throughput(llm, ideas: list[str], tokens: int, sizes: list[int]) -> None:
    sampling = dict(temperature=0.75, top_p=0.95, top_k=50, max_new_tokens=tokens, retries=0)
    whisperer.expand_ideas(llm, ideas[0], seed=0, batch_size=1, **sampling)  # warm-up
    peak_reset()
    t = time.perf_counter()
    base = [whisperer.expand_idea(llm, idea, whisperer.DEFAULT_TRIGGERS, seed=1, **sampling) for idea in ideas]
    one = time.perf_counter() - t
    base_rate = len(ideas) / one * 60
    print(f"  one by one: {len(ideas)} prompts in {one:.1f} s = {base_rate:.1f} prompts/min, peak RSS {peak_mb():.0f} MB")
    for size in sizes:
        peak_reset()
        t = time.perf_counter()
        out = whisperer.expand_ideas(llm, "\n".join(ideas), seed=1, batch_size=size, **sampling)
        dt = time.perf_counter() - t
        same = sum(a.text == b.text for a, b in zip(out, base))
        print(f"  batch {size:2d}: {len(out) / dt * 60:.1f} prompts/min = {one / dt:.2f}x one by one, "
              f"peak RSS {peak_mb():.0f} MB, same prompt as one by one {same}/{len(out)}", flush=True)


def constrained_figures(llm, n: int) -> None:
    from rezcty_core.llm.templates import build_messages
    from rezcty_core.qc.judge import judge_verdict_schema, validate_llm_verdict
    from rezcty_core.qc.verdict import REASON_CODES

    messages = build_messages("judge", "Measurements: width 640, height 480, blur_sigma_px 0.6. "
                                       "Technical checks failed: none.", False)
    for label, schema in (("free", None), ("constrained", judge_verdict_schema(REASON_CODES))):
        ok = tokens = 0
        t = time.perf_counter()
        for seed in range(n):
            reply = llm.generate_json(messages, validate_llm_verdict, retries=0, seed=seed, schema=schema,
                                      temperature=0.2, top_p=0.9, max_new_tokens=96)
            ok += int(reply.ok and reply.attempts == 1)
            tokens += len(llm.tokenizer(reply.raw, add_special_tokens=False)["input_ids"])
            if label == "free" and reply.ok is False:
                try:
                    extract_json(reply.raw)
                except ValueError:
                    pass
        dt = time.perf_counter() - t
        print(f"  judge JSON {label:11s}: valid first try {ok}/{n}, {tokens / dt:.2f} tok/s, {dt / n:.1f} s/reply")
        if label == "constrained":
            print(f"    last reply: {json.dumps(reply.raw)[:160]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ideas", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--sizes", default="4,8,16")
    ap.add_argument("--json-replies", type=int, default=4)
    ap.add_argument("--qwen", action="store_true", help="also the embedded Qwen2.5-Coder-1.5B (slow on a CPU)")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    ideas = IDEAS[: args.ideas]
    sizes = [int(s) for s in args.sizes.split(",")]
    models = ["embedded"] + (["embedded: Qwen2.5-Coder-1.5B-Instruct"] if args.qwen else [])
    for name in models:
        llm = load_llm(name)
        print(f"{llm!r}: {len(ideas)} ideas, max_new_tokens {args.tokens}")
        throughput(llm, ideas, args.tokens, sizes)
        if args.json_replies > 0:
            constrained_figures(llm, args.json_replies)
        llm.unload()
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
