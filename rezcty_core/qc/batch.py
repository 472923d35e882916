"""A whole batch through QC: measure -> verdict -> duplicates -> LLM judge -> similar-content budget -> one report
entry per image.

`judge_batch(images, profile)` is the one orchestrator; report entries as docs/CONTRACT.md and docs/qc.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rezcty_core.qc.judge import llm_verdict
from rezcty_core.qc.measure import measure_with_profile
from rezcty_core.qc.verdict import combine_verdicts, failed_checks, technical_score, unique_codes


def judge_batch(images: list[np.ndarray], profile: dict, *, embeddings: list | None = None,
                history_path: str | Path | None = None, llm: Any = None, seed: int = 0,
                run_label: str = "") -> list[dict]:
    """Judge a batch in order; report entries as docs/CONTRACT.md. Passed images join the duplicate memory
    (this batch at once, the history file at the end) so a later copy of an accepted image is a duplicate. Then the
    similar-content budget (`dedup.apply_similar_budget`) keeps the best-scored few of each cluster of similar ones."""
    import dataclasses

    from rezcty_core.qc import people as _people
    from rezcty_core.qc import text as _text
    from rezcty_core.qc.dedup import DuplicateIndex, History, apply_similar_budget, fingerprint

    dup_opts = profile.get("duplicate", {})
    index = DuplicateIndex(int(dup_opts.get("phash_max_distance", 8)), float(dup_opts.get("embedding_min_cosine", 0.97)))
    history = History(history_path) if history_path and dup_opts.get("history", True) else None
    remembered = [dataclasses.replace(fp, label=f"history {fp.label}") for fp in history.load()] if history else []
    for fp in remembered:
        index.add(fp)
    if embeddings is not None and len(embeddings) != len(images):
        raise ValueError(f"got {len(embeddings)} image embeddings for {len(images)} images: connect the DINOv2 Embed "
                         "output of this same batch")
    entries: list[dict] = []
    fingerprints: list = []
    for i, rgb in enumerate(images):
        emb = embeddings[i] if embeddings is not None else None
        try:
            m = measure_with_profile(rgb, profile)
        except Exception as e:  # one unreadable image never stops the batch
            entries.append({"index": i, "verdict": "reject", "score": 0.0, "reasons": ["qc_error"],
                            "measurements": {"error": f"{type(e).__name__}: {e}"}})
            fingerprints.append(None)
            continue
        failed = failed_checks(m, profile)
        reasons = unique_codes(failed)
        fp = fingerprint(rgb, emb, label=f"batch #{i}")
        dup = index.match(fp)
        if dup is not None:
            reasons.append("duplicate")
            m["duplicate_of"] = dup
        tscore = technical_score(m, failed, profile)
        llm_entry = llm_verdict(llm, m, failed, emb, profile, seed + i) if llm is not None else None
        extras = _text.entry_extras(m)
        extras.update(_people.entry_flags(m, profile))  # flags: people, hands
        entry = {"index": i, **combine_verdicts(reasons, tscore, llm_entry, profile), "measurements": m,
                 "technical_score": tscore, "failed_checks": failed, **extras}
        if m.get("checks_not_run"):
            entry["checks_not_run"] = m["checks_not_run"]
        if llm_entry is not None:
            entry["llm"] = llm_entry
        if entry["verdict"] == "pass":
            index.add(fp)
        entries.append(entry)
        fingerprints.append(fp)
    apply_similar_budget(entries, fingerprints, remembered, profile)
    if history is not None:
        history.append([dataclasses.replace(fp, label=f"{run_label} #{i}".strip())
                        for i, (e, fp) in enumerate(zip(entries, fingerprints)) if e["verdict"] == "pass"])
    return entries
