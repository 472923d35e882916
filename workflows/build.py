"""Build the shared workflows from one Python description: UI format, API format, example workflows.

    .venv/bin/python workflows/build.py          # (re)write workflows/*.json and example_workflows/*.json
    .venv/bin/python workflows/build.py --check  # exit 1 when a file on disk differs from what would be built

Each workflow below is a list of nodes (class, title, widget values by name, links by name).
`SCHEMAS` holds the input order and output types of every class used — what the ComfyUI web
page needs to lay the widget values out — and tests/test_workflows.py checks it against the real
server's /object_info, so a node that changes its inputs cannot silently break these files.

Files written:
  workflows/ui/NAME.json       UI format (open it in the ComfyUI web page: drag-and-drop or Workflow > Open)
  workflows/api/NAME.json      API format (python -m rezcty_core.client run workflows/api/NAME.json ...)
  example_workflows/NAME.json  the UI file again, for ComfyUI's template browser
(ComfyUI also scans a custom node's workflows/*.json for templates, so nothing lives there directly.)
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLES = REPO / "example_workflows"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@dataclass(frozen=True)
class Schema:
    inputs: tuple  # ((name, type, required, is_widget), ...) in /object_info order; type "COMBO" for lists
    outputs: tuple  # ((name, type), ...)
    seed_control: tuple = ()  # INT inputs that carry a control_after_generate widget


def _s(inputs: str, outputs: str, seed_control: tuple = ()) -> Schema:
    """Compact notation: 'name:TYPE' with a trailing '?' for optional and '!' for a socket-only value
    input (forceInput); outputs 'name:TYPE, ...'."""
    ins = []
    for part in filter(None, (p.strip() for p in inputs.split(","))):
        name, typ = part.split(":")
        optional, forced = typ.endswith("?"), "!" in typ
        typ = typ.rstrip("?").rstrip("!")
        ins.append((name, typ, not optional, typ in WIDGET_TYPES and not forced))
    outs = tuple(tuple(p.strip().split(":")) for p in outputs.split(",") if p.strip())
    return Schema(tuple(ins), outs, seed_control)


SCHEMAS: dict[str, Schema] = {
    # ComfyUI core
    "CheckpointLoaderSimple": _s("ckpt_name:COMBO", "MODEL:MODEL, CLIP:CLIP, VAE:VAE"),
    "CLIPTextEncode": _s("text:STRING, clip:CLIP", "CONDITIONING:CONDITIONING"),
    "EmptyLatentImage": _s("width:INT, height:INT, batch_size:INT", "LATENT:LATENT"),
    "KSampler": _s("model:MODEL, seed:INT, steps:INT, cfg:FLOAT, sampler_name:COMBO, scheduler:COMBO, "
                   "positive:CONDITIONING, negative:CONDITIONING, latent_image:LATENT, denoise:FLOAT",
                   "LATENT:LATENT", seed_control=("seed",)),
    "VAEDecode": _s("samples:LATENT, vae:VAE", "IMAGE:IMAGE"),
    "VAELoader": _s("vae_name:COMBO", "VAE:VAE"),
    "ImageScaleBy": _s("image:IMAGE, upscale_method:COMBO, scale_by:FLOAT", "IMAGE:IMAGE"),
    "ImageScale": _s("image:IMAGE, upscale_method:COMBO, width:INT, height:INT, crop:COMBO", "IMAGE:IMAGE"),
    "LatentUpscaleBy": _s("samples:LATENT, upscale_method:COMBO, scale_by:FLOAT", "LATENT:LATENT"),
    "UpscaleModelLoader": _s("model_name:COMBO", "UPSCALE_MODEL:UPSCALE_MODEL"),
    "ImageUpscaleWithModel": _s("upscale_model:UPSCALE_MODEL, image:IMAGE", "IMAGE:IMAGE"),
    "SaveImage": _s("images:IMAGE, filename_prefix:STRING", "images:IMAGE"),
    "LoadImage": _s("image:COMBO", "IMAGE:IMAGE, MASK:MASK"),
    "PreviewAny": _s("source:*", "STRING:STRING"),
    # rezcty (docs/CONTRACT.md)
    "RezctyDINOv2Loader": _s("model:COMBO, device:COMBO, dtype:COMBO", "dino:REZCTY_DINO"),
    "RezctyDINOv2Embed": _s("dino:REZCTY_DINO, image:IMAGE, pooling:COMBO, use_cache:BOOLEAN, resolution:INT?",
                            "embedding:REZCTY_EMBEDDING"),
    "RezctyLLMLoader": _s("base_model:COMBO, adapter:COMBO, quantization:COMBO, keep_loaded:BOOLEAN", "llm:REZCTY_LLM"),
    "RezctyWhispererExpand": _s("llm:REZCTY_LLM, prompt:STRING, trigger_words:STRING, seed:INT, temperature:FLOAT, "
                                "top_p:FLOAT, top_k:INT, max_new_tokens:INT, image_embedding:REZCTY_EMBEDDING?, "
                                "keep_within_77:BOOLEAN?, batch_size:INT?", "prompt:STRING", seed_control=("seed",)),
    "RezctyQCJudge": _s("images:IMAGE, profile:COMBO, llm:REZCTY_LLM?, image_embedding:REZCTY_EMBEDDING?",
                        "passed:IMAGE, rejected:IMAGE, report:STRING"),
    "RezctyMetadataWriter": _s("images:IMAGE, prompt:STRING, filename_prefix:STRING, csv_name:STRING, category:COMBO, "
                               "llm:REZCTY_LLM?, image_embedding:REZCTY_EMBEDDING?, qc_report:STRING!?, agencies:STRING?",
                               "metadata_json:STRING"),
    "RezctyDualLoraLoader": _s("model:MODEL, clip:CLIP, style_lora:COMBO, style_strength_model:FLOAT, "
                               "style_strength_clip:FLOAT, structure_lora:COMBO, structure_strength_model:FLOAT, "
                               "structure_strength_clip:FLOAT", "MODEL:MODEL, CLIP:CLIP, trigger_words:STRING"),
    "RezctyEmbeddingBridge": _s("clip:CLIP, text:STRING, embedding:COMBO, weight:FLOAT",
                                "CONDITIONING:CONDITIONING, encoded_text:STRING"),
    "RezctyStockSize": _s("preset:COMBO, base_scale:FLOAT",
                          "base_width:INT, base_height:INT, target_width:INT, target_height:INT, info:STRING"),
}

DEFAULT_SIZES = {"Note": (370, 280), "PreviewAny": (380, 220), "SaveImage": (380, 420), "LoadImage": (320, 380),
                 "RezctyWhispererExpand": (420, 400), "RezctyMetadataWriter": (380, 300), "KSampler": (320, 290)}


# ---------------------------------------------------------------------------------------------
# the description

@dataclass
class Node:
    id: int
    cls: str
    pos: tuple[int, int]
    title: str | None = None
    values: dict = field(default_factory=dict)  # widget name -> value
    links: dict = field(default_factory=dict)  # input name -> (source node id, output index)
    text: str = ""  # for Note nodes


@dataclass
class Workflow:
    name: str
    title: str
    nodes: list[Node]


def note(id: int, pos: tuple[int, int], text: str) -> Node:
    return Node(id, "Note", pos, title="About this line", text=text.strip() + "\n")


SD15 = "v1-5-pruned-emaonly.safetensors"
NEGATIVE = "blurry, lowres, jpeg artifacts, watermark, text, logo, signature, extra fingers, deformed hands"
IDEAS = "a knight\nsunrise over mountain\na lighthouse in a storm"
PROMPT = "sunrise over mountain with layered ridges and low clouds, rezcty_style, rezcty_structure, rezcty_genius"
TRIGGERS = "rezcty_style, rezcty_structure"
EMBEDDING = "rezcty_genius.safetensors"

NOTE_LINE1 = """
LINE 1 - PROMPTS (only the LLM is loaded)

Short ideas in, rich rezcty prompts out. Every non-empty line of "prompt" in Whisperer Expand is one idea;
the node returns one expanded prompt per idea, each ending with the trigger words exactly once.

- LLM Loader: "embedded: SmolLM2-135M-Instruct" works offline out of the box; for the real thing put
  Llama 3.1 8B / Mistral 7B in models/LLM/ and your trained whisperer adapter in models/rezcty_adapters/.
- Sampling follows the brief: temperature 0.75, top_p 0.95, top_k 50. A fixed seed gives the same text.
- Optional: feed a reference image through DINOv2 Loader + DINOv2 Embed into "image_embedding".

Headless, for hundreds of ideas (resumable):
  python -m rezcty_core.client batch workflows/api/line1_prompts.json --server URL --ideas ideas.txt --out runs/line1
-> runs/line1/prompts.json feeds line 2. Then POST /free (client: free) so line 2 gets the whole GPU.
"""

NOTE_LINE2 = """
LINE 2 - GENERATION (only SD 1.5 + LoRAs + embedding + VAE + the upscaler are loaded)

Checkpoint -> Dual LoRA Loader (rezcty_style 0.7-1.0, rezcty_structure 0.4-0.7)
-> Embedding Bridge (rezcty_genius at 0.2-0.4, the semantic bridge)
-> Stock Size (aspect preset: 1:1, 3:2, 2:3, 4:3, 3:4, 16:9, 9:16) -> Empty Latent at the SD 1.5-native base size
-> KSampler -> detail pass ("hires fix": latent x1.5 + a second KSampler at denoise 0.45, same prompts)
-> VAE Decode -> Real-ESRGAN x4plus (Load Upscale Model + Upscale Image using Model)
-> Upscale Image to the exact stock size of the preset (>= 4 MP, e.g. 3:2 -> 2454 x 1636) -> Save Image.
Line 3's Metadata Writer turns the saved image into the stock JPEG.

- Put an SD 1.5 checkpoint in models/checkpoints/ (e.g. v1-5-pruned-emaonly.safetensors),
  your LoRAs in models/loras/, rezcty_genius in models/embeddings/.
- RealESRGAN_x4plus.safetensors (photos) and RealESRGAN_x4plus_anime.safetensors (illustrations) come with
  the pack; any other ESRGAN-type x4 model in models/upscale_models/ works too.
- VAE as the final lens: this file decodes with the checkpoint's VAE; workflows/ui/line2_generation_vae.json
  loads one from models/vae/ (a dreamy one or a clean one).
- Same seed + same preset + same models = the same pixels: line 1's prompts.json records all of it.

Headless: python -m rezcty_core.client batch workflows/api/line2_generation.json --server URL
  --prompts runs/line1/prompts.json --out runs/line2     (each image gets NAME.txt with its prompt)
"""

NOTE_LINE3 = """
LINE 3 - QC AND METADATA (the eye + the analyst)

Load Image -> DINOv2 Embed (the eye, no language bias) -> Projector-LLM QC Judge (Adobe Stock profile:
resolution, sharpness, noise, exposure, artifacts, duplicates; the LLM verdict when an LLM is connected)
-> Metadata Writer: JPEG with XMP/IPTC title, description, keywords + a row in adobe_stock.csv
(rejected images get no CSV row). The QC report is also shown as text.

- "prompt" on the Metadata Writer is the prompt the image was made from (the batch client fills it from NAME.txt).
- The LLM (judge) of the LLM variant is the embedded Qwen2.5-Coder-1.5B-Instruct: about 9 GB of RAM on a CPU,
  5 GB on a GPU. Where memory is short pick "embedded: SmolLM2-135M-Instruct" (./rezcty demo --with-llm-judge
  decides from the server's free memory and says why).
- Disconnect "llm" from the judge and the writer for a fast measurements-only pass.

Headless: python -m rezcty_core.client batch workflows/api/line3_qc_metadata.json --server URL
  --images runs/line2/files --out runs/line3
"""

NOTE_ALL = """
ALL IN ONE - ideas -> prompts -> images -> QC -> metadata in one graph.

Handy to try the chain in the web page. For real batches run the three lines separately
(workflows/line1..3) with POST /free in between, so each line gets the whole GPU (a 16 GB T4).
Each idea line in Whisperer Expand becomes one prompt, one image, one QC verdict and one CSV row.
"""


def line1() -> Workflow:
    return Workflow("line1_prompts", "rezcty line 1: prompts", [
        note(100, (20, 20), NOTE_LINE1),
        Node(1, "RezctyLLMLoader", (20, 350), "LLM (whisperer)", {
            "base_model": "embedded: SmolLM2-135M-Instruct", "adapter": "none", "quantization": "none",
            "keep_loaded": True}),
        Node(2, "RezctyWhispererExpand", (480, 20), "Whisperer Expand", {
            "prompt": IDEAS, "trigger_words": TRIGGERS, "seed": 42, "temperature": 0.75, "top_p": 0.95,
            "top_k": 50, "max_new_tokens": 96, "keep_within_77": True, "batch_size": 0}, {"llm": (1, 0)}),
        Node(3, "PreviewAny", (960, 20), "Expanded prompts", links={"source": (2, 0)}),
    ])


UPSCALER = "RealESRGAN_x4plus.safetensors"
PRESET = "1:1"
DETAIL_SCALE, DETAIL_DENOISE, DETAIL_STEPS = 1.5, 0.45, 15


def stock_chain(ids: dict, x: int, y: int, model: tuple, positive: tuple, negative: tuple, vae: tuple) -> list[Node]:
    """Line 2's render as stock practice: preset base size -> KSampler -> detail pass (latent x1.5 + a second
    KSampler at low denoise, same conditioning) -> VAE Decode -> x4 model upscale -> exact stock size.

    `ids` names the node ids: size, latent, sampler, detail_up, detail, decode, loader, upscale, exact."""
    i = ids
    return [
        Node(i["size"], "RezctyStockSize", (x - 420, y + 840), "Stock size (aspect preset)",
             {"preset": PRESET, "base_scale": 1.0}),
        Node(i["latent"], "EmptyLatentImage", (x - 420, y + 1080), "Empty latent (preset base size)",
             {"width": 512, "height": 512, "batch_size": 1}, {"width": (i["size"], 0), "height": (i["size"], 1)}),
        Node(i["sampler"], "KSampler", (x, y), "KSampler", {
            "seed": 42, "steps": 25, "cfg": 7.0, "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0},
            {"model": model, "positive": positive, "negative": negative, "latent_image": (i["latent"], 0)}),
        Node(i["detail_up"], "LatentUpscaleBy", (x, y + 330), f"Detail pass: latent x{DETAIL_SCALE:g}",
             {"upscale_method": "nearest-exact", "scale_by": DETAIL_SCALE}, {"samples": (i["sampler"], 0)}),
        Node(i["detail"], "KSampler", (x, y + 470), "KSampler (detail pass)", {
            "seed": 42, "steps": DETAIL_STEPS, "cfg": 7.0, "sampler_name": "dpmpp_2m", "scheduler": "karras",
            "denoise": DETAIL_DENOISE},
            {"model": model, "positive": positive, "negative": negative, "latent_image": (i["detail_up"], 0)}),
        Node(i["decode"], "VAEDecode", (x + 360, y), "VAE Decode (the final lens)",
             links={"samples": (i["detail"], 0), "vae": vae}),
        Node(i["loader"], "UpscaleModelLoader", (x + 360, y + 120), "Upscaler (Real-ESRGAN x4plus)",
             {"model_name": UPSCALER}),
        Node(i["upscale"], "ImageUpscaleWithModel", (x + 360, y + 240), "Upscale x4 (model)",
             links={"upscale_model": (i["loader"], 0), "image": (i["decode"], 0)}),
        Node(i["exact"], "ImageScale", (x + 360, y + 360), "Exact stock size", {
            "upscale_method": "lanczos", "width": 2000, "height": 2000, "crop": "center"},
            {"image": (i["upscale"], 0), "width": (i["size"], 2), "height": (i["size"], 3)}),
    ]


LINE2_IDS = {"latent": 5, "sampler": 6, "decode": 7, "exact": 8, "size": 11, "detail_up": 12, "detail": 13,
             "loader": 14, "upscale": 15}
ALL_IDS = {"latent": 7, "sampler": 8, "decode": 9, "exact": 10, "size": 16, "detail_up": 17, "detail": 18,
           "loader": 19, "upscale": 20}


def line2(custom_vae: bool = False) -> Workflow:
    nodes = [
        note(100, (20, 20), NOTE_LINE2),
        Node(1, "CheckpointLoaderSimple", (20, 350), "SD 1.5 checkpoint", {"ckpt_name": SD15}),
        Node(2, "RezctyDualLoraLoader", (400, 20), "Dual LoRA (style + structure)", {
            "style_lora": "none", "style_strength_model": 0.85, "style_strength_clip": 0.85,
            "structure_lora": "none", "structure_strength_model": 0.55, "structure_strength_clip": 0.55},
            {"model": (1, 0), "clip": (1, 1)}),
        Node(3, "RezctyEmbeddingBridge", (400, 380), "Positive prompt + rezcty_genius", {
            "text": PROMPT, "embedding": EMBEDDING, "weight": 0.3}, {"clip": (2, 1)}),
        Node(4, "CLIPTextEncode", (400, 640), "Negative prompt", {"text": NEGATIVE}, {"clip": (2, 1)}),
        *stock_chain(LINE2_IDS, 820, 20, (2, 0), (3, 0), (4, 0), (10, 0) if custom_vae else (1, 2)),
        Node(9, "SaveImage", (1540, 20), "Save", {"filename_prefix": "rezcty/gen"}, {"images": (8, 0)}),
    ]
    if custom_vae:
        nodes.append(Node(10, "VAELoader", (20, 480), "VAE of choice", {"vae_name": "vae-ft-mse-840000-ema-pruned.safetensors"}))
        return Workflow("line2_generation_vae", "rezcty line 2: generation (VAE of choice)", nodes)
    return Workflow("line2_generation", "rezcty line 2: generation", nodes)


def line3(with_llm: bool = True) -> Workflow:
    llm_links = {"llm": (4, 0)} if with_llm else {}
    nodes = [
        note(100, (20, 20), NOTE_LINE3),
        Node(1, "LoadImage", (20, 350), "Image to check", {"image": "rezcty_sample.png"}),
        Node(2, "RezctyDINOv2Loader", (400, 20), "DINOv2 (the eye)", {
            "model": "embedded: dinov2-small", "device": "auto", "dtype": "auto"}),
        Node(3, "RezctyDINOv2Embed", (400, 200), "DINOv2 Embed", {"pooling": "cls", "use_cache": True, "resolution": 0},
             {"dino": (2, 0), "image": (1, 0)}),
        Node(5, "RezctyQCJudge", (800, 20), "QC Judge (Adobe Stock)", {"profile": "adobe_stock"},
             {"images": (1, 0), "image_embedding": (3, 0), **llm_links}),
        Node(6, "RezctyMetadataWriter", (1200, 20), "Metadata Writer", {
            "prompt": "sunrise over mountain with layered ridges and low clouds", "filename_prefix": "rezcty",
            "csv_name": "adobe_stock.csv", "category": "auto", "agencies": "adobe_stock"},
            {"images": (1, 0), "image_embedding": (3, 0), "qc_report": (5, 2), **llm_links}),
        Node(7, "PreviewAny", (800, 420), "QC report", links={"source": (5, 2)}),
    ]
    if with_llm:  # the analyst: the embedded Qwen (issue 21); SmolLM2 where memory is short (NOTE_LINE3)
        nodes.insert(2, Node(4, "RezctyLLMLoader", (400, 420), "LLM (judge)", {
            "base_model": "embedded: Qwen2.5-Coder-1.5B-Instruct", "adapter": "none", "quantization": "none",
            "keep_loaded": True}))
        return Workflow("line3_qc_metadata", "rezcty line 3: QC and metadata", nodes)
    return Workflow("line3_qc_metadata_fast", "rezcty line 3: QC and metadata (measurements only)", nodes)


def all_in_one() -> Workflow:
    return Workflow("all_in_one", "rezcty: all in one", [
        note(100, (20, 20), NOTE_ALL),
        Node(1, "RezctyLLMLoader", (20, 350), "LLM", {
            "base_model": "embedded: SmolLM2-135M-Instruct", "adapter": "none", "quantization": "none",
            "keep_loaded": True}),
        Node(2, "RezctyWhispererExpand", (20, 560), "Whisperer Expand", {
            "prompt": "sunrise over mountain", "trigger_words": TRIGGERS, "seed": 42, "temperature": 0.75,
            "top_p": 0.95, "top_k": 50, "max_new_tokens": 96, "keep_within_77": True, "batch_size": 0}, {"llm": (1, 0)}),
        Node(3, "CheckpointLoaderSimple", (480, 20), "SD 1.5 checkpoint", {"ckpt_name": SD15}),
        Node(4, "RezctyDualLoraLoader", (480, 180), "Dual LoRA (style + structure)", {
            "style_lora": "none", "style_strength_model": 0.85, "style_strength_clip": 0.85,
            "structure_lora": "none", "structure_strength_model": 0.55, "structure_strength_clip": 0.55},
            {"model": (3, 0), "clip": (3, 1)}),
        Node(5, "RezctyEmbeddingBridge", (480, 520), "Prompt + rezcty_genius", {
            "text": PROMPT, "embedding": EMBEDDING, "weight": 0.3}, {"clip": (4, 1), "text": (2, 0)}),
        Node(6, "CLIPTextEncode", (480, 760), "Negative prompt", {"text": NEGATIVE}, {"clip": (4, 1)}),
        *stock_chain(ALL_IDS, 900, 20, (4, 0), (5, 0), (6, 0), (3, 2)),
        Node(11, "RezctyDINOv2Loader", (1700, 20), "DINOv2 (the eye)", {
            "model": "embedded: dinov2-small", "device": "auto", "dtype": "auto"}),
        Node(12, "RezctyDINOv2Embed", (1700, 200), "DINOv2 Embed", {"pooling": "cls", "use_cache": True, "resolution": 0},
             {"dino": (11, 0), "image": (10, 0)}),
        Node(13, "RezctyQCJudge", (1700, 400), "QC Judge (Adobe Stock)", {"profile": "adobe_stock"},
             {"images": (10, 0), "llm": (1, 0), "image_embedding": (12, 0)}),
        Node(14, "RezctyMetadataWriter", (2100, 20), "Metadata Writer", {
            "prompt": "", "filename_prefix": "rezcty", "csv_name": "adobe_stock.csv", "category": "auto", "agencies": "adobe_stock"},
            {"images": (10, 0), "prompt": (2, 0), "llm": (1, 0), "image_embedding": (12, 0), "qc_report": (13, 2)}),
        Node(15, "PreviewAny", (2100, 360), "QC report", links={"source": (13, 2)}),
    ])


WORKFLOWS = [line1, line2, lambda: line2(custom_vae=True), line3, lambda: line3(with_llm=False), all_in_one]


# ---------------------------------------------------------------------------------------------
# the two formats

def widget_names(schema: Schema) -> list[str]:
    return [name for name, _typ, _req, widget in schema.inputs if widget]


def _check(wf: Workflow, node: Node, schema: Schema) -> None:
    names = {name for name, *_ in schema.inputs}
    for name in [*node.values, *node.links]:
        if name not in names:
            raise ValueError(f"{wf.name}: node {node.id} ({node.cls}) has no input '{name}' (known: {sorted(names)})")
    for name, _typ, required, widget in schema.inputs:
        if widget and name not in node.values and name not in node.links:
            raise ValueError(f"{wf.name}: node {node.id} ({node.cls}) needs a value for widget '{name}'")
        if not widget and required and name not in node.links:
            raise ValueError(f"{wf.name}: node {node.id} ({node.cls}) needs a link for input '{name}'")


def to_api(wf: Workflow) -> dict:
    graph = {}
    for node in sorted(wf.nodes, key=lambda n: n.id):
        if node.cls == "Note":
            continue
        schema = SCHEMAS[node.cls]
        _check(wf, node, schema)
        inputs: dict = {}
        for name, *_ in schema.inputs:
            if name in node.links:
                src, slot = node.links[name]
                inputs[name] = [str(src), slot]
            elif name in node.values:
                inputs[name] = node.values[name]
        graph[str(node.id)] = {"inputs": inputs, "class_type": node.cls, "_meta": {"title": node.title or node.cls}}
    return graph


def to_ui(wf: Workflow) -> dict:
    by_id = {n.id: n for n in wf.nodes}
    links: list[list] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_link: dict[tuple[int, str], int] = {}
    for node in sorted(wf.nodes, key=lambda n: n.id):
        if node.cls == "Note":
            continue
        schema = SCHEMAS[node.cls]
        for idx, (name, *_) in enumerate(schema.inputs):
            if name not in node.links:
                continue
            src, slot = node.links[name]
            src_type = SCHEMAS[by_id[src].cls].outputs[slot][1]
            link_id = len(links) + 1
            links.append([link_id, src, slot, node.id, idx, src_type])
            out_links.setdefault((src, slot), []).append(link_id)
            in_link[(node.id, name)] = link_id
    ui_nodes = []
    for order, node in enumerate(sorted(wf.nodes, key=lambda n: n.id)):
        size = list(DEFAULT_SIZES.get(node.cls, (340, 180)))
        entry: dict = {"id": node.id, "type": node.cls, "pos": list(node.pos), "size": size, "flags": {},
                       "order": order, "mode": 0}
        if node.cls == "Note":
            entry.update({"title": node.title, "inputs": [], "outputs": [], "properties": {},
                          "widgets_values": [node.text], "color": "#432", "bgcolor": "#653"})
            ui_nodes.append(entry)
            continue
        schema = SCHEMAS[node.cls]
        inputs = []
        for name, typ, required, widget in schema.inputs:
            slot: dict = {"name": name, "type": typ, "link": in_link.get((node.id, name))}
            if widget:
                slot["widget"] = {"name": name}
            elif not required:
                slot["shape"] = 7  # drawn hollow: optional
            inputs.append(slot)
        outputs = [{"name": name, "type": typ, "links": out_links.get((node.id, i), []), "slot_index": i}
                   for i, (name, typ) in enumerate(schema.outputs)]
        values = []
        for name in widget_names(schema):
            values.append(node.values.get(name, ""))  # a linked widget keeps a slot in widgets_values
            if name in schema.seed_control:
                values.append("fixed")
        entry.update({"title": node.title or node.cls, "inputs": inputs, "outputs": outputs,
                      "properties": {"Node name for S&R": node.cls}, "widgets_values": values})
        ui_nodes.append(entry)
    return {"last_node_id": max(n.id for n in wf.nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [0, 0]},
                                                                   "rezcty": {"title": wf.title, "built_by": "workflows/build.py"}},
            "version": 0.4}


def render(obj: dict) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    """Every file this script writes, with its content."""
    files: dict[Path, str] = {}
    for make in WORKFLOWS:
        wf = make()
        ui = render(to_ui(wf))
        files[HERE / "ui" / f"{wf.name}.json"] = ui
        files[HERE / "api" / f"{wf.name}.json"] = render(to_api(wf))
        files[EXAMPLES / f"{wf.name}.json"] = ui
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that the files on disk are up to date")
    args = ap.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(REPO)}")
    if args.check and stale:
        print("out of date (run .venv/bin/python workflows/build.py): " + ", ".join(str(p.relative_to(REPO)) for p in stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
