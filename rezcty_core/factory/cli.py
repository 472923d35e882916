"""The command line of the headless client (`python -m rezcty_core.client ...`): drive a ComfyUI server headless through its HTTP and websocket API: one run or a resumable batch.

    python -m rezcty_core.client run WORKFLOW_API.json --server URL [--set NODE.INPUT=VALUE ...] [--out DIR]
    python -m rezcty_core.client run line2 --server URL [--variant vae] [--with SETTING=VALUE ...] [--out DIR]
    python -m rezcty_core.client batch WORKFLOW_API.json --server URL [--server URL2 ...] --out DIR
        (--ideas FILE | --prompts FILE.json | --images DIR) [--bind NODE.INPUT] [--set ...]
    python -m rezcty_core.client check WORKFLOW_API.json --server URL [--set ...]
    python -m rezcty_core.client free --server URL
    python -m rezcty_core.client line (line1|line2|line3) --server URL --out DIR (--ideas F | --prompts F | --images D)
        [--with SETTING=VALUE ...] [--variant NAME] [--workflow FILE] [--set NODE.INPUT=VALUE ...]
        (a factory line as declared in rezcty_core/factory/lines.py; `line NAME --list` shows its settings)
    python -m rezcty_core.client export --agency NAME --from OUTPUT_DIR --out FILE [--keywords N]
    python -m rezcty_core.client batch WORKFLOW_API.json --queue URL --out DIR (--ideas … | --prompts … | --images …)
    python -m rezcty_core.client worker --queue URL --server COMFY_URL [--concurrency 1]

Before anything is queued the graph is checked against the server's /object_info: unknown
(missing) node types, missing models, bad combo values, out-of-range numbers and broken links are
listed together, one line each. Local image files given to an image-upload input are uploaded
through /upload/image. Progress comes from the websocket, with /history polled as a fallback, and
every wait has a timeout. Outputs are downloaded through /view.

A batch keeps an append-only manifest (OUT/manifest.jsonl). Every item has a stable key (a hash
of its content and occurrence) and every attempt a deterministic prompt_id, so a re-run of the
same command after the client or the server was stopped asks the server what happened to each
unfinished prompt: finished ones are collected, running ones awaited, lost ones queued again —
no item is lost and none is produced twice. One failing item is recorded and the rest go on;
several --server URLs share one batch.

With --queue redis://… (or rediss://… for a hosted Redis) the items go to a task queue (Celery) instead,
and workers beside any number of ComfyUI servers pull them (`worker`): see factory/queue.py.

Standard library plus websocket-client (and tqdm for the progress bar when installed; Celery, redis and
fsspec for --queue and worker, imported only there); never
imports ComfyUI, so it runs on any machine that can reach the server (a laptop, Colab).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rezcty_core.factory import blueprint, lines
from rezcty_core.factory.api import ComfyClient
from rezcty_core.factory.batch import (
    Batch,
    default_bind,
    items_from_ideas,
    items_from_images,
    items_from_prompts,
    write_prompts_json,
)
from rezcty_core.factory.errors import ClientError
from rezcty_core.factory.workflow import apply_sets, load_workflow
from rezcty_core.sd import presets

# ---------------------------------------------------------------------------------------------
# command line

def _event_printer() -> Callable[[dict], None]:
    def show(msg: dict) -> None:
        data = msg.get("data") or {}
        if msg.get("type") == "executing" and data.get("node"):
            print(f"[client] running node {data['node']}", file=sys.stderr, flush=True)
        elif msg.get("type") == "progress":
            print(f"\r[client] node {data.get('node')}: {data.get('value')}/{data.get('max')}", end="",
                  file=sys.stderr, flush=True)
    return show


def load_graph(args: argparse.Namespace) -> dict:
    """WORKFLOW is a file, or a line's name (line1, line2, line3: its declared workflow, `--variant`, `--with`)."""
    if args.workflow in lines.LINES and not Path(args.workflow).exists():
        line = lines.get(args.workflow)
        graph = line.load(args.variant)
        line.bind(graph, lines.parse_settings(line, args.with_, graph))
    else:
        if args.with_ or args.variant:
            raise ClientError("--with and --variant need a line name (line1, line2, line3) in place of the workflow file")
        graph = load_workflow(args.workflow)
    return apply_sets(graph, args.set)


def cmd_run(args: argparse.Namespace) -> int:
    graph = load_graph(args)
    client = ComfyClient(args.server[0])
    result = client.run(graph, out_dir=args.out, timeout=args.timeout, on_event=_event_printer())
    texts = result.texts()
    for node_id, values in texts.items():
        title = graph.get(node_id, {}).get("_meta", {}).get("title", graph.get(node_id, {}).get("class_type"))
        for v in values:
            print(f"{title} [{node_id}]: {v}")
    if args.out:
        Path(args.out, "outputs.json").write_text(json.dumps({"prompt_id": result.prompt_id, "outputs": result.outputs},
                                                             indent=1, ensure_ascii=False), encoding="utf-8")
        for f in result.files:
            print(f)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    graph = load_graph(args)
    client = ComfyClient(args.server[0])
    uploaded = {v for node in graph.values() for v in node.get("inputs", {}).values()
                if isinstance(v, str) and Path(os.path.expanduser(v)).is_file()}
    client.check(graph, uploaded)
    print(f"{args.workflow}: OK on {client.url}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    graph = load_graph(args)
    if bool(args.server) == bool(args.queue):
        raise ClientError("batch: give --server URL (one machine, or a pool) or --queue URL (a task queue), not both")
    sources = [s for s in (args.ideas, args.prompts, args.images) if s]
    if len(sources) != 1:
        raise ClientError("batch: give exactly one of --ideas FILE, --prompts FILE.json, --images DIR")
    kind = "ideas" if args.ideas else "prompts" if args.prompts else "images"
    bind = args.bind or default_bind(graph, kind)
    if not bind:
        raise ClientError(f"batch: no input to bind the {kind} to; give --bind NODE.INPUT")
    maps = dict(m.split("=", 1) for m in args.map)
    if args.preset is not None:
        try:
            args.preset = presets.get_preset(args.preset).name
        except ValueError as e:
            raise ClientError(f"--preset: {e}") from None
    if args.variations < 1:
        raise ClientError(f"--variations: expected 1 or more, got {args.variations}")
    if kind == "ideas":
        items = items_from_ideas(Path(args.ideas), bind)
    elif kind == "prompts":
        items = items_from_prompts(Path(args.prompts), bind, maps, graph)
    else:
        text_bind = args.bind_text if args.bind_text is not None else default_bind(graph, "image_text")
        items = items_from_images(Path(args.images), bind, text_bind or None)
    if args.queue:
        from rezcty_core.factory.queue_batch import QueueBatch

        batch = QueueBatch(graph, items, args.queue, args.out, timeout=args.timeout, store=args.store,
                           inline_max=args.inline_max, broker_timeout=args.server_timeout,
                           retry_failed=args.retry_failed, progress=not args.quiet,
                           workflow_label=Path(args.workflow).name)
    else:
        batch = Batch(graph, items, args.server, args.out, timeout=args.timeout,
                      unreachable_timeout=args.server_timeout, retry_failed=args.retry_failed, progress=not args.quiet)
    report = batch.run()
    if kind == "ideas":
        rows = json.loads((batch.out_dir / "results.json").read_text(encoding="utf-8"))
        defaults = blueprint.defaults_from_graph(apply_sets(load_workflow(args.line2), args.line2_set)) \
            if args.line2 else {}
        # the prompts come from --collect, else from line 1's declared result node where the workflow has it
        collect = args.collect or _line1_texts(graph)
        write_prompts_json(rows, collect, batch.out_dir / "prompts.json", defaults, args.variations,
                           args.seed, args.preset)
    elif kind == "prompts":
        write_blueprints(batch, report, batch.out_dir / "blueprints.json")
    print(f"{len(report.done)} done, {len(report.failed)} failed, {len(report.pending)} pending -> {batch.out_dir}")
    for key, err in report.failed.items():
        print(f"  failed {key}: {err.splitlines()[0] if err else ''}")
    if report.pending:
        where = "queue unreachable?" if args.queue else "server unreachable?"
        print(f"  pending items remain ({where}): run the same command again to resume")
        return 3
    return 1 if report.failed else 0


def _line1_texts(graph: dict) -> str | None:
    try:
        return lines.LINE1.node(graph, lines.LINE1.texts)
    except ClientError:
        return None


def write_blueprints(batch: Batch, report, path: Path) -> None:
    """Line 2: the blueprint of every rendered image as it ran (a prompts.json that renders them again)."""
    lines.collect_blueprints(batch, report, path)


def cmd_line(args: argparse.Namespace) -> int:
    line = lines.get(args.line)
    graph = line.load(args.variant, args.workflow)
    if args.list:
        print(f"{line.name}: {line.summary}")
        print(f"  workflow: {line.workflow_path(args.variant) if not args.workflow else args.workflow}")
        print(f"  items: --{line.source} -> {line.item}; results: {line.results}")
        for name, spec in line.settings.items():
            where = ", ".join(line.targets(graph, name)) or "not in this workflow"
            print(f"  --with {name}=...  {spec.help} [{where}; now {line.value(graph, name)!r}]")
        return 0
    given = {"ideas": args.ideas, "prompts": args.prompts, "images": args.images}
    if [k for k, v in given.items() if v] != [line.source]:
        raise ClientError(f"line {line.name}: give --{line.source} (and only that): its items are {line.source}")
    if args.out is None:
        raise ClientError(f"line {line.name}: give --out DIR (the batch folder)")
    line.bind(graph, lines.parse_settings(line, args.with_, graph))
    apply_sets(graph, args.set)
    line2 = None
    if args.line2 or args.line2_with:
        line2 = lines.LINE2.load(path=args.line2)
        lines.LINE2.bind(line2, lines.parse_settings(lines.LINE2, args.line2_with, line2))
    if args.preset is not None:
        try:
            args.preset = presets.get_preset(args.preset).name
        except ValueError as e:
            raise ClientError(f"--preset: {e}") from None
    done = lines.run(line, graph, given[line.source], args.server, args.out, together=args.together,
                     timeout=args.timeout, unreachable_timeout=args.server_timeout, retry_failed=args.retry_failed,
                     progress=not args.quiet, line2=line2, variations=args.variations, base_seed=args.seed,
                     preset=args.preset)
    report = done.report
    print(f"{line.name}: {len(report.done)} done, {len(report.failed)} failed, {len(report.pending)} pending; "
          f"{len(done.result)} in {done.path}")
    for key, err in report.failed.items():
        print(f"  failed {key}: {err.splitlines()[0] if err else ''}")
    if report.pending:
        print("  pending items remain (server unreachable?): run the same command again to resume")
        return 3
    return 1 if report.failed else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from rezcty_core.factory.queue_worker import run_worker

    return run_worker(args.queue, args.server[0], concurrency=args.concurrency, timeout=args.timeout,
                      store=args.store, server_timeout=args.server_timeout, name=args.name)


def cmd_free(args: argparse.Namespace) -> int:
    for url in args.server:
        ComfyClient(url).free()
        print(f"{url}: models unloaded")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """One agency's upload CSV rebuilt from the Metadata Writer's sidecars (no server needed)."""
    from rezcty_core.stock.agencies import AgencyError, AgencyRefused
    from rezcty_core.stock.export import export_agency

    if not Path(args.source).is_dir():
        raise ClientError(f"export: --from {args.source}: no such folder (give ComfyUI's output folder)")
    try:
        result = export_agency(args.agency, args.source, args.out, args.keywords, args.agencies_dir)
    except AgencyRefused as e:
        print(f"export refused: {e}", file=sys.stderr)
        return 3
    except AgencyError as e:
        raise ClientError(f"export: {e}") from None
    print(result.line())
    for problem in result.problems:
        print(f"  warning: {problem}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m rezcty_core.client", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, workflow: bool = True, server_required: bool = True) -> None:
        if workflow:
            p.add_argument("workflow", help="API-format workflow JSON (workflows/api/*.json), or a line's name "
                                            "(line1, line2, line3: its declared workflow)")
            p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                           help="change an input; NODE is an id, a title or a class used once")
            p.add_argument("--with", dest="with_", action="append", default=[], metavar="SETTING=VALUE",
                           help="with a line's name: one of its named settings (`line NAME --list` shows them)")
            p.add_argument("--variant", default=None, help="with a line's name: its workflow variant")
        p.add_argument("--server", action="append", required=server_required, metavar="URL",
                       help="ComfyUI server, e.g. http://127.0.0.1:8188 (repeat for a pool in batch mode)")

    def batch_run_options(p: argparse.ArgumentParser) -> None:
        """How a batch runs its items (`batch` and `line`)."""
        p.add_argument("--retry-failed", action="store_true", help="run items that failed before once more")
        p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for one item")
        p.add_argument("--server-timeout", type=float, default=60.0,
                       help="seconds a server may stay unreachable before the batch stops (resume later)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("run", help="run one workflow and download its outputs")
    common(p)
    p.add_argument("--out", default=None, help="folder for the downloaded outputs")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the prompt")
    p = sub.add_parser("check", help="only check the workflow against the server")
    common(p)
    p = sub.add_parser("batch", help="run a workflow once per idea, prompt or image, resumably")
    common(p, server_required=False)
    p.add_argument("--queue", default=None, metavar="URL",
                   help="send the items to a task queue (redis://HOST:PORT/DB, rediss://… for a hosted Redis, or "
                        "env:NAME to read it from $NAME) instead of --server; workers run them (`worker`)")
    p.add_argument("--store", default=None, metavar="DIR_OR_URL",
                   help="with --queue: where files travel between the batch and the workers, a folder they all see "
                        "(a mounted Drive) or an fsspec URL (default: OUT/store, for workers on this machine)")
    p.add_argument("--inline-max", type=int, default=256 * 1024, metavar="BYTES",
                   help="with --queue: files up to this size travel in the queue's messages instead of the store")
    p.add_argument("--out", required=True, help="batch folder (manifest.jsonl, results.json, files/)")
    p.add_argument("--ideas", help="text file, one idea per line (line 1)")
    p.add_argument("--prompts", help="JSON list of prompts, e.g. line 1's prompts.json (line 2)")
    p.add_argument("--images", help="folder of images, NAME.txt next to an image holds its prompt (line 3)")
    p.add_argument("--bind", help="NODE.INPUT that receives each item (default: from the node types)")
    p.add_argument("--bind-text", default=None, help="NODE.INPUT for an image's sidecar prompt ('' for none)")
    p.add_argument("--map", action="append", default=[], metavar="FIELD=NODE.INPUT",
                   help="with --prompts: bind another field of each entry, e.g. seed=KSampler.seed")
    p.add_argument("--collect", default=None, help="node id whose text is the prompt in prompts.json (ideas)")
    p.add_argument("--variations", type=int, default=1, metavar="N",
                   help="with --ideas: N distinct recorded seeds per prompt in prompts.json (line 2 renders N images)")
    p.add_argument("--seed", type=int, default=0, help="with --ideas: base of the recorded seeds (same base, same seeds)")
    p.add_argument("--preset", default=None, help="with --ideas: aspect preset recorded for line 2 (1:1, 3:2, 2:3, 4:3, "
                                                  "3:4, 16:9, 9:16)")
    p.add_argument("--line2", default=None, metavar="WORKFLOW_API.json",
                   help="with --ideas: record this line-2 workflow's checkpoint, LoRAs, embedding, negative, VAE, "
                        "upscaler and preset in each prompt")
    p.add_argument("--line2-set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="with --line2: change an input of that workflow before it is recorded")
    batch_run_options(p)
    p = sub.add_parser("line", help="run a factory line (line1, line2, line3) as declared in factory/lines.py")
    p.add_argument("line", help="line1 (ideas -> prompts), line2 (prompts -> images), line3 (images -> QC, metadata)")
    p.add_argument("--server", action="append", default=[], metavar="URL", help="ComfyUI server (repeat for a pool)")
    p.add_argument("--out", default=None, help="batch folder (manifest.jsonl, results.json, files/, the line's results)")
    p.add_argument("--list", action="store_true", help="only list the line's settings and where they go")
    p.add_argument("--ideas", help="line 1: text file, one idea per line")
    p.add_argument("--prompts", help="line 2: line 1's prompts.json")
    p.add_argument("--images", help="line 3: folder of images (NAME.txt beside an image holds its prompt)")
    p.add_argument("--with", dest="with_", action="append", default=[], metavar="SETTING=VALUE",
                   help="a named setting of the line (see --list), e.g. llm=embedded: SmolLM2-135M-Instruct")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="any other input; NODE is a title or a class used once")
    p.add_argument("--variant", default=None, help="workflow variant (line2: vae; line3: fast, llm)")
    p.add_argument("--workflow", default=None, help="an edited copy of the line's API workflow to run instead")
    p.add_argument("--together", action="store_true",
                   help="line 1: all ideas in one queued prompt (generated as one batch)")
    p.add_argument("--variations", type=int, default=1, metavar="N", help="line 1: N recorded seeds per prompt")
    p.add_argument("--seed", type=int, default=0, help="line 1: base of the recorded seeds")
    p.add_argument("--preset", default=None, help="line 1: aspect preset recorded for line 2")
    p.add_argument("--line2", default=None, metavar="WORKFLOW_API.json",
                   help="line 1: record this line-2 workflow's settings in each prompt (default with --line2-with: "
                        "the shipped one)")
    p.add_argument("--line2-with", action="append", default=[], metavar="SETTING=VALUE",
                   help="line 1: a line-2 setting recorded in each prompt")
    batch_run_options(p)
    p = sub.add_parser("free", help="unload models on the server(s) (between lines)")
    common(p, workflow=False)
    p = sub.add_parser("export", help="rebuild one agency's upload CSV from the written images' sidecars")
    p.add_argument("--agency", required=True, help="adobe_stock, freepik, 123rf, dreamstime (rezcty_core/data/agencies)")
    p.add_argument("--from", dest="source", required=True, metavar="OUTPUT_DIR",
                   help="ComfyUI's output folder (every sidecar under it; rejected images get no row)")
    p.add_argument("--out", required=True, help="the CSV to write (replaced; FILE_2.csv ... past the rows per file)")
    p.add_argument("--keywords", type=int, default=None, metavar="N", help="keyword budget (default: the data file's)")
    p.add_argument("--agencies-dir", action="append", default=[], metavar="DIR",
                   help="a folder of your own agency data files (merged onto the built-ins)")
    p = sub.add_parser("worker", help="run queued batch items on one ComfyUI server until stopped (SIGTERM)")
    p.add_argument("--queue", required=True, metavar="URL", help="the queue: redis://… , rediss://… or env:NAME")
    p.add_argument("--server", action="append", required=True, metavar="URL", help="this worker's ComfyUI server")
    p.add_argument("--concurrency", type=int, default=1, help="items held at once (1: one item at a time)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds one item may take here; an item of a killed worker runs again after this + 35 s")
    p.add_argument("--store", default=None, metavar="DIR_OR_URL",
                   help="this machine's path or URL of the batches' store, when it differs from the batch's")
    p.add_argument("--server-timeout", type=float, default=60.0,
                   help="seconds the ComfyUI server may stay unreachable before the worker stops")
    p.add_argument("--name", default=None, help="the worker's name in logs and the manifest (default: host-pid)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "check": cmd_check, "batch": cmd_batch, "free": cmd_free, "line": cmd_line,
               "export": cmd_export, "worker": cmd_worker}[args.command]
    try:
        return handler(args)
    except ClientError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
