"""Projector-LLM QC Judge: keep or reject each image against a stock-agency profile, with reasons.

The measurements, duplicate memory, LLM verdict and contact sheet live in rezcty_core (qc, dedup,
contact_sheet); this node converts tensors, finds profiles and folders, and splits the batch.
"""
from __future__ import annotations

import json
import os
import time

import torch

from rezcty_core.qc import contact_sheet
from rezcty_core.qc import profiles as _profiles
from rezcty_core.qc.batch import judge_batch
from rezcty_core.qc.profiles import list_profiles, load_profile

from . import host
from .common import CATEGORY, EmbeddingType, LLMType, images_to_uint8
from .host import ExecutionBlocker, io

QC_FOLDER = "rezcty_qc"  # under ComfyUI's output/: history.jsonl and the contact sheets


def user_profile_dirs() -> list[str]:
    """User profiles: `<ComfyUI user dir>/rezcty/qc_profiles/` and any folders in $REZCTY_QC_PROFILES (the lookup
    training.calibrate_qc shares: `profiles.user_profile_dirs`). Read on every /object_info call, so a profile
    added there shows in the combo after a browser refresh, without a restart."""
    return [str(d) for d in _profiles.user_profile_dirs(host.user_directory())]


def _split(images: torch.Tensor, keep: list[int]):
    """The images at `keep`. None at all: a silent ExecutionBlocker, so the nodes fed from this output
    (SaveImage, PreviewImage, an upscaler) are skipped instead of failing on an empty batch."""
    return images[torch.tensor(keep, dtype=torch.long)] if keep else ExecutionBlocker(None)


class RezctyQCJudge(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RezctyQCJudge",
            display_name="Projector-LLM QC Judge",
            category=f"{CATEGORY}/qc",
            description="Technical review against a stock profile (resolution, focus, noise, exposure, contrast, "
                        "colour, JPEG blocking, banding, BRISQUE), duplicates within the batch and against earlier "
                        "accepted images, and optionally the judge LLM's verdict. Writes a contact sheet "
                        f"(HTML + PNG) to output/{QC_FOLDER}/.",
            inputs=[
                io.Image.Input("images", tooltip="The batch to judge (one report entry per image, in order)."),
                io.Combo.Input("profile", options=list_profiles(user_profile_dirs()), default="adobe_stock",
                               tooltip="Thresholds, each with its reason. Copy rezcty_core/data/qc_profiles/"
                                       "adobe_stock.json to <ComfyUI user dir>/rezcty/qc_profiles/NAME.json "
                                       "(or a folder in $REZCTY_QC_PROFILES) to add your own."),
                LLMType.Input("llm", optional=True,
                              tooltip="The judge specialist (LLM Loader). Its verdict can reject an image the "
                                      "measurements pass, never rescue one they reject (profile llm.policy)."),
                EmbeddingType.Input("image_embedding", optional=True,
                                    tooltip="DINOv2 Embed of this same batch: the judge sees it through its "
                                            "projector, and duplicates are also matched by cosine similarity."),
            ],
            outputs=[
                io.Image.Output(display_name="passed", tooltip="Images that passed. When none passed, nodes fed from here are skipped."),
                io.Image.Output(display_name="rejected", tooltip="Images that were rejected. When none was, nodes fed from here are skipped."),
                io.String.Output(display_name="report", tooltip="JSON list, one entry per input image: index, "
                                                                 "verdict, score, reasons, measurements."),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images: torch.Tensor, profile: str, llm=None, image_embedding=None) -> io.NodeOutput:
        prof = load_profile(profile, user_profile_dirs())
        frames = images_to_uint8(images)
        out_dir = os.path.join(host.output_directory(), QC_FOLDER)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        try:
            entries = judge_batch(frames, prof, embeddings=image_embedding, llm=llm,
                                  history_path=os.path.join(out_dir, "history.jsonl"), run_label=stamp)
        finally:
            if llm is not None:
                llm.release()
        stem = f"contact_sheet_{stamp}_{time.time_ns() % 1_000_000:06d}"
        contact_sheet.write_contact_sheet(entries, frames, out_dir, stem, title=f"rezcty QC — {profile}")
        passed = [e["index"] for e in entries if e["verdict"] == "pass"]
        rejected = [e["index"] for e in entries if e["verdict"] != "pass"]
        report = json.dumps(entries, indent=1)
        summary = f"{len(passed)} passed, {len(rejected)} rejected ({profile}); contact sheet {QC_FOLDER}/{stem}.html"
        if any("similar_budget" in e for e in entries):  # the similar-content budget needs DINOv2 embeddings
            summary += "; similar-content budget off: no image embeddings connected"
        not_run = contact_sheet.not_run_summary(entries)
        if not_run:  # said on the node: which checks never looked at the images, and why
            summary += "\nchecks not run: " + "\n".join(not_run)
        ui = {"images": [{"filename": f"{stem}.png", "subfolder": QC_FOLDER, "type": "output"}], "text": [summary]}
        return io.NodeOutput(_split(images, passed), _split(images, rejected), report, ui=ui)


NODES = [RezctyQCJudge]
