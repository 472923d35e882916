"""Metadata Writer: Adobe-ready JPEGs with title, keywords, category, embedded XMP/IPTC and the upload CSV."""
from __future__ import annotations

import json
import os

from rezcty_core.stock import categories, provenance, writer

from . import host
from .common import CATEGORY, EmbeddingType, LLMType, images_to_uint8, output_dir
from .host import io


def user_agency_dirs() -> list[str]:
    """User agency data files: `<ComfyUI user dir>/rezcty/agencies/` (merged onto the built-ins of the same name)."""
    return [os.path.join(host.user_directory(), "rezcty", "agencies")]


def _model_hashes(models: list[dict]) -> list[dict]:
    """Add the SHA-256 of each model file the graph names (ComfyUI folder + file name -> path)."""
    out = []
    for model in models:
        entry = dict(model)
        try:
            path = host.model_file_path(model["folder"], model["name"])
            entry["sha256"] = provenance.file_sha256(path) if path else None
        except Exception as e:  # an unknown folder or unreadable file never stops the writer
            entry["sha256"] = None
            entry["hash_error"] = str(e)
        out.append(entry)
    return out


class RezctyMetadataWriter(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RezctyMetadataWriter",
            display_name="Metadata Writer",
            category=f"{CATEGORY}/stock",
            description="Saves each image as an Adobe Stock JPEG (sRGB, quality 95) with title, description, keywords "
                        "and category embedded as XMP + IPTC, a JSON sidecar, and a row in each chosen agency's "
                        "upload CSV (Adobe's by default).",
            inputs=[
                io.Image.Input("images", tooltip="The finished (upscaled, >= 4 MP) images."),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="The generation prompt. Triggers, weights, style words, artists, brands, "
                                        "people and characters are removed before anything is written."),
                io.String.Input("filename_prefix", default="stock/",
                                tooltip="Sub-folder and/or file name stem inside output/ ('stock/' = name from the "
                                        "title). Names are ASCII, <= 30 characters, never outside output/."),
                io.String.Input("csv_name", default="adobe_stock.csv",
                                tooltip="Upload CSV inside output/; rows are appended, a new file starts after 5,000 "
                                        "rows. A CSV with another header is never touched."),
                io.Combo.Input("category", options=categories.category_choices(), default=categories.AUTO,
                               tooltip="Adobe category; auto picks one from the content."),
                LLMType.Input("llm", optional=True,
                              tooltip="The judge/analyst LLM (LLM Loader). Without it an offline extractor writes the "
                                      "metadata; the rules run last either way."),
                EmbeddingType.Input("image_embedding", optional=True,
                                    tooltip="DINOv2 embeddings of the images, shown to an LLM that can see."),
                io.String.Input("qc_report", optional=True, force_input=True,
                                tooltip="The QC Judge's report: rejected images go to rejected/ and not into the CSV."),
                io.String.Input("agencies", optional=True, default="adobe_stock",
                                tooltip="Comma list of agencies that take AI images: adobe_stock, freepik, 123rf, "
                                        "dreamstime. One <agency>.csv each beside csv_name (Adobe's is csv_name). "
                                        "'freepik:40' sets that agency's keyword budget. Agencies that refuse AI "
                                        "content (shutterstock, alamy, depositphotos, pond5, getty_istock) are refused."),
            ],
            outputs=[io.String.Output(display_name="metadata_json")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, prompt: str, filename_prefix: str, csv_name: str, category: str, llm=None,
                image_embedding=None, qc_report: str | None = None, agencies: str | None = None) -> io.NodeOutput:
        generation = provenance.generation_params(cls.hidden.prompt)
        generation["models"] = _model_hashes(generation["models"])
        generation["upscaler"] = provenance.upscaler_record(generation["models"])
        workflow = {"prompt": cls.hidden.prompt, **(cls.hidden.extra_pnginfo or {})}
        options = writer.WriteOptions(filename_prefix=filename_prefix, csv_name=csv_name, category=category,
                                      qc_report=qc_report, generation=generation, workflow=workflow,
                                      agencies=agencies or "adobe_stock", agency_dirs=user_agency_dirs())
        embeddings = list(image_embedding) if isinstance(image_embedding, (list, tuple)) else (
            [image_embedding] if image_embedding is not None else None)
        try:
            results = writer.write_batch(images_to_uint8(images), prompt, output_dir(), options, llm=llm,
                                         embeddings=embeddings)
        finally:
            if llm is not None:
                llm.release()  # keep_loaded off: freed when the prompt ends
        saved = [{"filename": r["filename"], "subfolder": r["subfolder"], "type": "output"}
                 for r in results if not r.get("error")]
        text = json.dumps(results, ensure_ascii=False)
        return io.NodeOutput(text, ui={"images": saved, "text": [writer.summary(results)]})


NODES = [RezctyMetadataWriter]
