"""Memory residency through the real server: who holds the LLM's and DINOv2's memory, and when it comes back.

    ./rezcty bench memory               # or: python bench/bench_memory.py [--ideas N] [--tokens N]

Starts ComfyUI (`--cpu` without a GPU, as `./rezcty comfy` does) and reads the server process's RSS
(/proc/<pid>/status VmRSS) at each step:
  (a) idle after start;
  (b) after a Whisperer run with the embedded SmolLM2-135M (LLM Loader keep_loaded on) and a DINOv2 embed;
  (c) after ComfyUI's own `/free` with `unload_models` (the web page's "Unload Models"): both dropped;
  (d) the same Whisperer run again, then a core model load (the tiny SD 1.5 checkpoint, CheckpointLoaderSimple ->
      KSampler) in the next prompt: ComfyUI's node cache evicts the LLM Loader's old output (old ModelPatchers go
      first under its RAM-pressure policy), and the log says which of our models left;
  (e) after `/free` with `unload_models` + `free_memory` (models and the node cache).
Prints `uptime` before and after (the machine's load average: run one benchmark at a time).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from harness import ComfyServer, link_model, sd15_graph, tiny_sd15_checkpoint  # noqa: E402

SMOL = "embedded: SmolLM2-135M-Instruct"
IDEAS = ["a lighthouse on a cliff", "a red bicycle", "sunrise over a mountain", "a bowl of fruit"]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def rss_mib(server: ComfyServer) -> dict[str, float]:
    """VmRSS and its anonymous / file-backed parts (our weights are mmapped safetensors: file-backed)."""
    fields = ("VmRSS", "RssAnon", "RssFile")
    return {line.split(":")[0]: int(line.split()[1]) / 1024
            for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines() if line.startswith(fields)}


def mapped_weights(server: ComfyServer) -> str:
    """Which safetensors files the server has mapped: whose weights are resident right now."""
    files = {Path(line.split()[-1]) for line in Path(f"/proc/{server.proc.pid}/maps").read_text().splitlines()
             if line.endswith(".safetensors")}
    names = {f.parent.name if f.name == "model.safetensors" else f.name for f in files}
    return ", ".join(sorted(names)) or "none"


def wait_log(server: ComfyServer, text: str, count: int, timeout: float = 120) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.log_text().count(text) >= count:
            return True
        time.sleep(0.25)
    return False


def whisper_graph(ideas: list[str], tokens: int, image: str, seed: int = 1, pooling: str = "cls") -> dict:
    return {
        "llm": {"class_type": "RezctyLLMLoader", "inputs": {"base_model": SMOL, "adapter": "none",
                                                             "quantization": "none", "keep_loaded": True}},
        "w": {"class_type": "RezctyWhispererExpand", "inputs": {
            "llm": ["llm", 0], "prompt": "\n".join(ideas), "trigger_words": "rezcty_style", "seed": seed,
            "temperature": 0.75, "top_p": 0.95, "top_k": 50, "max_new_tokens": tokens, "batch_size": len(ideas)}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["w", 0]}},
        "img": {"class_type": "LoadImage", "inputs": {"image": image}},
        "dino": {"class_type": "RezctyDINOv2Loader", "inputs": {"model": "embedded: dinov2-small", "device": "auto",
                                                                 "dtype": "auto"}},
        "embed": {"class_type": "RezctyDINOv2Embed", "inputs": {"dino": ["dino", 0], "image": ["img", 0],
                                                                 "pooling": pooling, "use_cache": False}},
        "show_e": {"class_type": "PreviewAny", "inputs": {"source": ["embed", 0]}},
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ideas", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args(argv)
    from PIL import Image

    print(f"uptime before: {uptime()}")
    rows: list[tuple[str, dict, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = ComfyServer(Path(tmp) / "base")
        server.start()
        try:
            server.input_dir.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (256, 192), (120, 90, 60)).save(server.input_dir / "bench_memory.png")
            ckpt = link_model(server, "checkpoints", tiny_sd15_checkpoint(), "tiny_sd15.safetensors")
            time.sleep(2)
            rows.append(("(a) idle after start", rss_mib(server), mapped_weights(server), ""))
            graph = whisper_graph(IDEAS[:args.ideas], args.tokens, "bench_memory.png")
            t0 = time.perf_counter()
            server.run(graph)
            rows.append(("(b) after a Whisperer run (SmolLM2-135M fp32) + a DINOv2 embed", rss_mib(server),
                         mapped_weights(server), f"prompt {time.perf_counter() - t0:.1f} s"))
            llm_drops = server.log_text().count("LLM weights dropped: SmolLM2")
            dino_drops = server.log_text().count("DINOv2 weights dropped: dinov2-small")
            server.post("/free", {"unload_models": True})
            ok = wait_log(server, "LLM weights dropped: SmolLM2", llm_drops + 1) and \
                wait_log(server, "DINOv2 weights dropped: dinov2-small", dino_drops + 1)
            rows.append(("(c) after ComfyUI's /free {unload_models} (\"Unload Models\")", rss_mib(server),
                         mapped_weights(server), "both dropped" if ok else "NOT dropped within 120 s"))
            server.run(whisper_graph(IDEAS[:args.ideas], args.tokens, "bench_memory.png", seed=2, pooling="mean"))
            loads = server.log_text().count("weights loaded from disk")
            rows.append(("(d1) the Whisperer + DINOv2 run again (another seed and pooling)", rss_mib(server),
                         mapped_weights(server), f"{loads} weight loads from disk so far"))
            left = server.log_text().count("left ComfyUI's node cache")
            t0 = time.perf_counter()
            server.run(sd15_graph(ckpt, seed=3, size=64, prefix="bench_memory"))
            gone = wait_log(server, "left ComfyUI's node cache", left + 1, timeout=30)
            time.sleep(11)  # ComfyUI's worker runs gc.collect() at most every 10 s after a prompt
            which = [line.split("] ", 1)[-1].split(" left")[0] for line in server.log_text().splitlines()
                     if "left ComfyUI's node cache" in line][left:]
            rows.append(("(d2) after a core model load (tiny SD 1.5, next prompt)", rss_mib(server),
                         mapped_weights(server),
                         ("evicted by ComfyUI: " + ", ".join(which)) if gone else "nothing evicted"))
            server.post("/free", {"unload_models": True, "free_memory": True})
            time.sleep(12)
            rows.append(("(e) after /free {unload_models, free_memory}", rss_mib(server), mapped_weights(server), ""))
        finally:
            server.stop()
    print(f"uptime after: {uptime()}\n")
    print("| step | server RSS | anon | file | safetensors mapped | note |\n| --- | --- | --- | --- | --- | --- |")
    for label, mib, mapped, note in rows:
        print(f"| {label} | {mib['VmRSS']:.0f} MiB | {mib['RssAnon']:.0f} | {mib['RssFile']:.0f} | {mapped} | {note} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
