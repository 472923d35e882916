"""Whisperer Expand: tokens/s of the node's generation path vs a bare `model.generate`, same model and prompt.

    ./rezcty bench whisperer            # or: python bench/bench_whisperer.py [--tokens N] [--reps N]

The node path is `rezcty_core.llm.whisperer.expand_idea` (what RezctyWhispererExpand runs per idea): few-shot
chat, `LoadedLLM.generate` through `inputs_embeds`, then the output hygiene and the CLIP token count.
The baseline is `model.generate(input_ids)` on the very same weights and rendered prompt. Runs alternate
(node, bare, node, bare, ...) so a busy machine slows both alike; the median of each is reported, per
wall-clock second and per CPU second of this process (on a shared, oversubscribed machine the CPU time is
the figure that measures the work done; the overhead target is judged on it).
Also reported: the load time of the embedded LLM, and that a second `load_llm` (what a second execution of
the loader node does) reuses the loaded model instead of loading it again.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rezcty_core.llm import (
    templates,  # noqa: E402
    whisperer,  # noqa: E402
)
from rezcty_core.llm.chat import encode_chat, eos_token_ids  # noqa: E402
from rezcty_core.llm.model import load_llm  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=24, help="max_new_tokens per generation")
    ap.add_argument("--reps", type=int, default=5, help="alternating repetitions of each path")
    ap.add_argument("--idea", default="a lighthouse on a cliff")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: no OpenMP spin-waiting, so CPU time is the work itself on a busy machine)")
    args = ap.parse_args(argv)

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    llm = load_llm("embedded")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = load_llm("embedded")
    reload_s = time.perf_counter() - t0
    print(f"load embedded SmolLM2-135M-Instruct: {load_s:.2f} s (first execution)")
    print(f"second execution: load_llm took {reload_s * 1000:.1f} ms, same model object: {again.model is llm.model}")

    messages = whisperer.whisperer_messages(args.idea, has_image=False, few_shot=True)
    tok, model = llm.tokenizer, llm.model
    chat = encode_chat(tok, messages)
    input_ids = torch.tensor([chat.before], dtype=torch.long)
    eos = eos_token_ids(tok, model)
    sampling = dict(temperature=0.75, top_p=0.95, top_k=50)

    def node_path(seed: int) -> tuple[int, float, float]:
        t, c = time.perf_counter(), time.process_time()
        e = whisperer.expand_idea(llm, args.idea, whisperer.DEFAULT_TRIGGERS, seed=seed, retries=0,
                                  max_new_tokens=args.tokens, **sampling)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        return len(tok(e.raw[0], add_special_tokens=False)["input_ids"]), dt, dc

    def bare_path(seed: int) -> tuple[int, float, float]:
        t, c = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            torch.manual_seed(seed)
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                                 max_new_tokens=args.tokens, eos_token_id=eos, pad_token_id=eos[0], **sampling)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        return out.shape[1] - input_ids.shape[1], dt, dc

    node_path(0)  # warm-up (CLIP tokenizer, first forward)
    rates: dict[str, list[float]] = {"node": [], "bare": []}
    cpu_rates: dict[str, list[float]] = {"node": [], "bare": []}
    for rep in range(args.reps):
        for name, fn in (("node", node_path), ("bare", bare_path)):
            n, dt, dc = fn(100 + rep)
            rates[name].append(n / dt)
            cpu_rates[name].append(n / dc)
            print(f"  rep {rep + 1} {name}: {n} tokens in {dt:.2f} s wall / {dc:.2f} s CPU = {n / dt:.2f} tok/s, "
                  f"{n / dc:.2f} tok/CPU-s", flush=True)
    node, bare = statistics.median(rates["node"]), statistics.median(rates["bare"])
    cpu_node, cpu_bare = statistics.median(cpu_rates["node"]), statistics.median(cpu_rates["bare"])
    overhead = (cpu_bare - cpu_node) / cpu_bare * 100
    print(f"prompt: {len(chat.before)} tokens (system + {len(templates.WHISPERER_EXAMPLES)} examples), "
          f"max_new_tokens {args.tokens}, threads {torch.get_num_threads()}")
    print(f"wall:  node path {node:.2f} tok/s  bare model.generate {bare:.2f} tok/s  ratio {node / bare:.3f}")
    print(f"CPU:   node path {cpu_node:.2f} tok/CPU-s  bare model.generate {cpu_bare:.2f} tok/CPU-s  "
          f"ratio {cpu_node / cpu_bare:.3f}  overhead {overhead:+.1f}% (target <= 5%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
