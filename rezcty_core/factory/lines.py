"""The three factory lines, declared once: each line's workflow file(s), its inputs bound by node title or class
(never by node number, so a workflow re-saved from the web page, which renumbers its nodes, still binds), and how
its results are collected. `./rezcty demo`, the Colab notebook and `python -m rezcty_core.client line …` all run
the lines through this module.

    line = lines.get("line1")
    graph = line.load()                                  # workflows/api/line1_prompts.json
    line.bind(graph, {"llm": "embedded: SmolLM2-135M-Instruct", "max_new_tokens": 64})
    run = lines.run(line, graph, Path("ideas.txt"), ["http://127.0.0.1:8188"], Path("runs/line1"))
    run.result                                           # line 1: the prompts.json entries

| line | workflow(s) | items | results (in the batch folder) |
| --- | --- | --- | --- |
| line1 | line1_prompts.json | ideas, one per line | prompts.json from the "Expanded prompts" texts |
| line2 | line2_generation.json (`vae`: line2_generation_vae.json) | prompts.json entries, one per seed | files/ (PNG + prompt .txt), blueprints.json |
| line3 | line3_qc_metadata_fast.json (`llm`: line3_qc_metadata.json) | images (+ NAME.txt prompt) | qc_report.json from the "QC report" texts; on the server: JPEGs, sidecars, CSV |
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rezcty_core.factory import blueprint
from rezcty_core.factory.batch import (
    Batch,
    BatchReport,
    Item,
    items_from_ideas,
    items_from_images,
    items_from_prompts,
    write_prompts_json,
)
from rezcty_core.factory.errors import ClientError
from rezcty_core.factory.workflow import find_node, load_workflow, parse_value

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows" / "api"


@dataclass(frozen=True)
class Setting:
    """A named input of a line: the NODE.INPUT targets it sets (NODE = a title, else a class used once)."""

    targets: tuple[str, ...]
    help: str
    optional: bool = False  # absent (or linked) in some workflow versions: skipped there, never an error


@dataclass(frozen=True)
class Line:
    name: str
    summary: str
    workflows: Mapping[str, str]  # variant -> file in workflows/api/; the first is the default
    source: str  # what one batch item is: "ideas" | "prompts" | "images"
    item: str  # NODE.INPUT each item goes to
    settings: Mapping[str, Setting]
    nodes: tuple[str, ...]  # the pack's nodes the line needs (a build without one cannot run it)
    results: str  # the file collected into the batch folder
    texts: str | None = None  # the node whose text outputs the line's result is read from
    item_text: str | None = None  # NODE.INPUT for an image's prompt (NAME.txt beside it)
    server_files: tuple[str, ...] = ()  # what the line writes into the server's output/ (described, for users)

    # -- the workflow ----------------------------------------------------------------------------
    def workflow_path(self, variant: str | None = None) -> Path:
        variant = variant or next(iter(self.workflows))
        if variant not in self.workflows:
            raise ClientError(f"{self.name}: no workflow variant '{variant}' (known: {', '.join(self.workflows)})")
        return WORKFLOWS / self.workflows[variant]

    def load(self, variant: str | None = None, path: str | Path | None = None) -> dict:
        """The line's API workflow (or an edited copy of it at `path`)."""
        return load_workflow(path or self.workflow_path(variant))

    # -- inputs ------------------------------------------------------------------------------------
    def node(self, graph: dict, ref: str) -> str:
        """The id of the node `ref` (title or class) in this graph."""
        return find_node(graph, ref)

    def resolve(self, graph: dict, target: str) -> str | None:
        """`NODE.INPUT` -> `ID.INPUT` in this graph; None when the node is absent."""
        ref, _, name = target.rpartition(".")
        try:
            return f"{find_node(graph, ref)}.{name}"
        except ClientError:
            return None

    def targets(self, graph: dict, setting: str) -> list[str]:
        """Where a setting goes in this graph (`ID.INPUT`, widgets only); a missing required target is an error."""
        if setting not in self.settings:
            raise ClientError(f"{self.name}: no setting '{setting}' (known: {', '.join(self.settings)})")
        spec = self.settings[setting]
        out = []
        for target in spec.targets:
            where = self.resolve(graph, target)
            node, _, name = (where or "").rpartition(".")
            linked = where is not None and isinstance(graph[node].get("inputs", {}).get(name), list)
            if where is None or linked:
                if spec.optional:
                    continue
                why = "is linked to another node" if linked else "is not in the workflow"
                raise ClientError(f"{self.name}: setting '{setting}': {target} {why}")
            out.append(where)
        return out

    def value(self, graph: dict, setting: str) -> Any:
        """The current value of a setting in this graph (its first target), None when it has none here."""
        for target in self.targets(graph, setting):
            node, _, name = target.rpartition(".")
            return graph[node].get("inputs", {}).get(name)
        return None

    def bind(self, graph: dict, values: Mapping[str, Any]) -> dict:
        """Set the line's named settings on a graph in place (a setting of an absent optional node is skipped)."""
        for setting, value in values.items():
            for target in self.targets(graph, setting):
                node, _, name = target.rpartition(".")
                graph[node].setdefault("inputs", {})[name] = value
        return graph

    def item_bind(self, graph: dict) -> str:
        where = self.resolve(graph, self.item)
        if where is None:
            raise ClientError(f"{self.name}: the workflow has no {self.item.rpartition('.')[0]} node for its {self.source}")
        return where

    # -- items ------------------------------------------------------------------------------------
    def items(self, graph: dict, source: Path, together: bool = False, log: Callable[[str], None] | None = None) -> list[Item]:
        """The batch items of a source file/folder. `together` (line 1): all ideas as one queued prompt, which
        the Whisperer generates as one batch (on a memory-bound CPU about the cost of one idea alone)."""
        bind = self.item_bind(graph)
        if self.source == "ideas":
            singles = items_from_ideas(Path(source), bind)
            if not together or len(singles) < 2:
                return singles
            ideas = [it.values[bind] for it in singles]
            return [Item(singles[0].key, f"{len(ideas)} ideas", {bind: "\n".join(ideas)}, prompt=None,
                         source={"idea": ideas[0], "ideas": ideas})]
        if self.source == "prompts":
            return items_from_prompts(Path(source), bind, {}, graph, log=log)
        text_bind = self.resolve(graph, self.item_text) if self.item_text else None
        return items_from_images(Path(source), bind, text_bind)

    # -- results ----------------------------------------------------------------------------------
    def texts_of(self, graph: dict, row: dict) -> list[str]:
        """The text outputs of the line's result node in one results.json row."""
        if not self.texts:
            return []
        return list((row.get("texts") or {}).get(find_node(graph, self.texts), []))


@dataclass
class LineRun:
    """One line's batch: its report, results.json rows, and the collected result (also written to `path`)."""

    line: Line
    batch: Batch
    report: BatchReport
    rows: list[dict]
    result: list = field(default_factory=list)
    path: Path | None = None


# ---------------------------------------------------------------------------------------------
# the declarations

LINE1 = Line(
    name="line1", summary="ideas -> Whisperer Expand -> prompts.json (only the LLM loaded)",
    workflows={"default": "line1_prompts.json"}, source="ideas", item="RezctyWhispererExpand.prompt",
    settings={
        "llm": Setting(("RezctyLLMLoader.base_model",), "the LLM: a folder in models/LLM/ or an embedded one"),
        "adapter": Setting(("RezctyLLMLoader.adapter",), "a trained whisperer in models/rezcty_adapters/, or none"),
        "quantization": Setting(("RezctyLLMLoader.quantization",), "none, 8bit, 4bit-nf4"),
        "max_new_tokens": Setting(("RezctyWhispererExpand.max_new_tokens",), "tokens per prompt"),
        "seed": Setting(("RezctyWhispererExpand.seed",), "the Whisperer's seed"),
        "temperature": Setting(("RezctyWhispererExpand.temperature",), "sampling temperature"),
        "trigger_words": Setting(("RezctyWhispererExpand.trigger_words",), "appended once at the end of each prompt"),
    },
    nodes=("RezctyLLMLoader", "RezctyWhispererExpand"), results="prompts.json", texts="Expanded prompts")

LINE2 = Line(
    name="line2", summary="prompts.json -> SD 1.5 + Dual LoRA + Embedding Bridge -> detail pass -> x4 -> stock size",
    workflows={"default": "line2_generation.json", "vae": "line2_generation_vae.json"}, source="prompts",
    item="RezctyEmbeddingBridge.text",
    settings={
        "checkpoint": Setting(("CheckpointLoaderSimple.ckpt_name",), "SD 1.5 checkpoint in models/checkpoints/"),
        "vae": Setting(("VAELoader.vae_name",), "VAE in models/vae/ (the vae variant)", optional=True),
        "style_lora": Setting(("RezctyDualLoraLoader.style_lora",), "style LoRA or none"),
        "style_weight": Setting(("RezctyDualLoraLoader.style_strength_model", "RezctyDualLoraLoader.style_strength_clip"),
                                "style LoRA strength (model and CLIP)"),
        "structure_lora": Setting(("RezctyDualLoraLoader.structure_lora",), "structure LoRA or none"),
        "structure_weight": Setting(("RezctyDualLoraLoader.structure_strength_model",
                                     "RezctyDualLoraLoader.structure_strength_clip"), "structure LoRA strength"),
        "embedding": Setting(("RezctyEmbeddingBridge.embedding",), "rezcty_genius (or none)"),
        "embedding_weight": Setting(("RezctyEmbeddingBridge.weight",), "embedding weight, 0.2-0.4"),
        "preset": Setting(("RezctyStockSize.preset",), "aspect preset: 1:1, 3:2, 2:3, 4:3, 3:4, 16:9, 9:16"),
        "base_scale": Setting(("RezctyStockSize.base_scale",), "scale of the first pass (drafts < 1)"),
        "steps": Setting(("KSampler.steps",), "first-pass sampler steps"),
        "detail_steps": Setting(("KSampler (detail pass).steps",), "detail-pass sampler steps"),
        "cfg": Setting(("KSampler.cfg", "KSampler (detail pass).cfg"), "CFG of both samplers"),
        "detail_scale": Setting(("LatentUpscaleBy.scale_by",), "the detail pass's latent scale (1.5-2)"),
        "upscaler": Setting(("UpscaleModelLoader.model_name",), "the x4 upscale model"),
        # workflows without the Stock Size node (older copies): the render size and a plain upscale
        "width": Setting(("EmptyLatentImage.width",), "render width (without Stock Size)", optional=True),
        "height": Setting(("EmptyLatentImage.height",), "render height (without Stock Size)", optional=True),
        "upscale": Setting(("ImageScaleBy.scale_by",), "plain upscale factor (without the x4 model)", optional=True),
    },
    nodes=("RezctyDualLoraLoader", "RezctyEmbeddingBridge", "RezctyStockSize"), results="blueprints.json")

LINE3 = Line(
    name="line3", summary="images -> DINOv2 -> QC Judge -> Metadata Writer -> JPEGs + sidecars + CSV",
    workflows={"fast": "line3_qc_metadata_fast.json", "llm": "line3_qc_metadata.json"}, source="images",
    item="LoadImage.image", item_text="RezctyMetadataWriter.prompt",
    settings={
        "profile": Setting(("RezctyQCJudge.profile",), "QC profile (adobe_stock or a user profile)"),
        "filename_prefix": Setting(("RezctyMetadataWriter.filename_prefix",), "sub-folder/stem inside output/"),
        "csv_name": Setting(("RezctyMetadataWriter.csv_name",), "the Adobe CSV inside output/"),
        "category": Setting(("RezctyMetadataWriter.category",), "auto or an Adobe category"),
        "agencies": Setting(("RezctyMetadataWriter.agencies",), "agencies (comma list): one CSV each beside the Adobe CSV"),
        "llm": Setting(("RezctyLLMLoader.base_model",), "the analyst LLM (the llm variant)", optional=True),
        "adapter": Setting(("RezctyLLMLoader.adapter",), "a trained judge adapter (the llm variant)", optional=True),
        "quantization": Setting(("RezctyLLMLoader.quantization",), "none, 8bit, 4bit-nf4 (the llm variant)",
                                optional=True),
    },
    nodes=("RezctyDINOv2Loader", "RezctyDINOv2Embed", "RezctyQCJudge", "RezctyMetadataWriter"),
    results="qc_report.json", texts="QC report",
    server_files=("<prefix> JPEGs (XMP/IPTC) + NAME.json sidecars; rejected ones in rejected/",
                  "the Adobe CSV (csv_name) and one <agency>.csv per agency naming the passed ones",
                  "rezcty_qc/: duplicate memory, contact sheets"))

LINES = {line.name: line for line in (LINE1, LINE2, LINE3)}


def get(name: str) -> Line:
    """A line by name: `line1`, `line2`, `line3` (or `1`, `2`, `3`)."""
    key = name if name in LINES else f"line{name}"
    if key not in LINES:
        raise ClientError(f"no line '{name}' (known: {', '.join(LINES)})")
    return LINES[key]


def parse_settings(line: Line, pairs: list[str], graph: dict) -> dict[str, Any]:
    """`NAME=VALUE` strings (`--with`) -> {setting: value}; VALUE is JSON where the current input is not text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ClientError(f"--with '{pair}': expected NAME=VALUE (settings of {line.name}: {', '.join(line.settings)})")
        current = line.value(graph, name) if line.targets(graph, name) else None
        out[name] = parse_value(text, current)
    return out


# ---------------------------------------------------------------------------------------------
# running a line and collecting its results

def run(line: Line, graph: dict, source: str | Path, servers: list[str], out: str | Path, *, together: bool = False,
        timeout: float = 3600.0, unreachable_timeout: float = 60.0, retry_failed: bool = False, progress: bool = True,
        log: Callable[[str], None] | None = None, line2: dict | None = None, variations: int = 1, base_seed: int = 0,
        preset: str | None = None) -> LineRun:
    """One line's batch over `source` (ideas file, prompts.json, image folder) on `servers`, resumable from
    OUT/manifest.jsonl, then its results collected into OUT (prompts.json, blueprints.json or qc_report.json).

    Line 1 only: `line2` = a line-2 graph whose settings each prompt records (blueprint), `variations` seeds per
    prompt from `base_seed`, `preset`."""
    items = line.items(graph, Path(source), together=together, log=log)
    batch = Batch(graph, items, servers, out, timeout=timeout, unreachable_timeout=unreachable_timeout,
                  retry_failed=retry_failed, progress=progress, log=log)
    report = batch.run()
    rows = json.loads((batch.out_dir / "results.json").read_text(encoding="utf-8"))
    done = LineRun(line, batch, report, rows, path=batch.out_dir / line.results)
    if line is LINE1:
        done.result = collect_prompts(graph, rows, done.path, line2, variations, base_seed, preset)
    elif line is LINE2:
        done.result = collect_blueprints(batch, report, done.path)
    else:
        done.result = collect_qc(graph, rows, done.path)
    return done


def collect_prompts(graph: dict, rows: list[dict], path: Path, line2: dict | None = None, variations: int = 1,
                    base_seed: int = 0, preset: str | None = None) -> list[dict]:
    """Line 1: prompts.json, each entry with its idea, its blueprint for line 2, and the LLM that wrote it."""
    defaults = blueprint.defaults_from_graph(line2) if line2 is not None else {}
    prompts = write_prompts_json(rows, find_node(graph, LINE1.texts), path, defaults, variations, base_seed, preset)
    llm = LINE1.value(graph, "llm")
    if llm:
        for entry in prompts:
            entry["whisperer_llm"] = llm
        path.write_text(json.dumps(prompts, indent=1, ensure_ascii=False), encoding="utf-8")
    return prompts


def collect_blueprints(batch: Batch, report: BatchReport, path: Path) -> list[dict]:
    """Line 2: the blueprint of every rendered image as it ran (a prompts.json that renders them again)."""
    done = set(report.done)
    rows = [blueprint.resolved(batch.item_graph(item), item.prompt or "", item.source.get("idea"))
            for item in batch.items if item.key in done]
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    return rows


def qc_entries(graph: dict, rows: list[dict]) -> list[tuple[dict, dict]]:
    """Line 3: (results.json row, QC report entry) for every judged image, in input order."""
    out = []
    for row in rows:
        for text in LINE3.texts_of(graph, row):
            try:
                parsed = json.loads(text)
            except (json.JSONDecodeError, TypeError):
                continue
            entries = parsed if isinstance(parsed, list) else parsed.get("entries", [parsed])
            out.extend((row, entry) for entry in entries if isinstance(entry, dict))
    return out


def collect_qc(graph: dict, rows: list[dict], path: Path) -> list[dict]:
    """Line 3: qc_report.json, one verdict per image in input order (a failed item: verdict "error", its message)."""
    verdicts = []
    for row in rows:
        for _, entry in qc_entries(graph, [row]):
            verdicts.append({"image": row["label"], "verdict": entry.get("verdict"), "score": entry.get("score"),
                             "reasons": entry.get("reasons", [])})
        if row.get("status") == "failed":
            verdicts.append({"image": row["label"], "verdict": "error", "reasons": [row.get("error", "")[:200]]})
    path.write_text(json.dumps(verdicts, indent=1, ensure_ascii=False), encoding="utf-8")
    return verdicts
