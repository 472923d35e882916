"""The embedded Qwen2.5-Coder-1.5B-Instruct on the CPU: decode tok/s in fp32 vs bf16 (same run, same prompt, greedy),
and its judge-JSON valid-first-try rate and tok/s with and without schema-constrained decoding.

    ./rezcty bench qwen     # or: python bench/bench_qwen_dtype.py [--tokens N] [--json-replies N]

The baseline is fp32 (the precision policy's CPU dtype); the ratio printed is bf16 / fp32 tok/s. Prefill is timed
apart from decoding (a 1-token generate), so tok/s is decode speed. The load average is printed before and after.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QWEN = "embedded: Qwen2.5-Coder-1.5B-Instruct"


def decode_rate(dtype: str, tokens: int) -> tuple[float, float, str]:
    from rezcty_core.llm import whisperer
    from rezcty_core.llm.model import load_llm

    t = time.perf_counter()
    llm = load_llm(QWEN, dtype=dtype, keep_loaded=False)
    load_s = time.perf_counter() - t
    chat = whisperer.whisperer_messages("a lighthouse on a cliff", False, True)
    llm.generate_batch([chat], [0], do_sample=False, max_new_tokens=2)  # warm-up
    t = time.perf_counter()
    llm.generate_batch([chat], [0], do_sample=False, max_new_tokens=1)
    prefill = time.perf_counter() - t
    t = time.perf_counter()
    text = llm.generate_batch([chat], [0], do_sample=False, max_new_tokens=tokens)[0]
    total = time.perf_counter() - t
    n = len(llm.tokenizer(text, add_special_tokens=False)["input_ids"])
    rate = max(n - 1, 1) / max(total - prefill, 1e-6)
    print(f"  {dtype}: load {load_s:.1f} s, prefill {prefill:.1f} s, {n} tokens in {total:.1f} s -> decode "
          f"{rate:.2f} tok/s; text: {text[:120]!r}", flush=True)
    llm.unload()
    return rate, load_s, text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--json-replies", type=int, default=2)
    ap.add_argument("--json-dtype", default="fp32")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    fp32, _, t32 = decode_rate("fp32", args.tokens)
    bf16, _, t16 = decode_rate("bf16", args.tokens)
    print(f"  bf16 / fp32 decode: {bf16 / fp32:.2f}x; same greedy text: {t32 == t16}")
    if args.json_replies > 0:
        from bench_whisperer_batch import constrained_figures

        from rezcty_core.llm.model import load_llm

        llm = load_llm(QWEN, dtype=args.json_dtype, keep_loaded=False)
        print(f"  judge JSON on {QWEN} ({args.json_dtype}), {args.json_replies} replies each:")
        constrained_figures(llm, args.json_replies)
        llm.unload()
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
