"""training.curate: TF-IDF / DINOv2 K-Means clustering and round-robin diverse selection."""
from __future__ import annotations

import json

import numpy as np
import torch
from fixtures.tiny_llm import write_embedding

from rezcty_core.llm.curate import cluster, elbow_k, select_diverse
from training import curate

VARIANTS = ["at dawn", "in the rain", "near a horse", "under stars", "by a fire", "with a dog"]
TOPICS = {  # each topic shares its core words; the variants are shared across topics, as noise
    "knight": [f"a knight in steel armor with a sword {v}" for v in VARIANTS],
    "ocean": [f"ocean waves with white foam on rocks {v}" for v in VARIANTS],
    "food": [f"a bowl of noodle soup with bread {v}" for v in VARIANTS],
}


def write_topics(path, extra_lines=()):
    lines = [json.dumps({"input_text": t, "output_text": f"{t}, rezcty_style", "topic": topic})
             for topic, texts in TOPICS.items() for t in texts]
    path.write_text("\n".join([*lines, *extra_lines]) + "\n")
    return path


def test_text_curation_finds_the_topics_and_samples_across_them(tmp_path, capsys):
    data = write_topics(tmp_path / "dataset.jsonl", ['{"input_text": "broken', '{"foo": 1}'])
    assert curate.main([str(data), "--out", str(tmp_path / "out"), "--size", "6", "--text-field", "input_text"]) == 0
    err = capsys.readouterr().err
    assert f"{data}:19: not valid JSON" in err and f"{data}:20: no input_text to cluster" in err
    chosen = [json.loads(ln) for ln in (tmp_path / "out" / "subset.jsonl").read_text().splitlines()]
    assert sorted(c["topic"] for c in chosen) == ["food", "food", "knight", "knight", "ocean", "ocean"]
    report = json.loads((tmp_path / "out" / "clusters.json").read_text())
    assert report["k"] == 3 and report["chosen_by"] == "silhouette" and report["skipped_lines"] == 2
    assert {"2", "3"} <= set(report["scores"]) and all("top_terms" in c for c in report["clusters"])
    assert sorted(c["size"] for c in report["clusters"]) == [6, 6, 6]
    assert curate.main([str(data), "--out", str(tmp_path / "strict"), "--strict"]) == 1


def test_image_curation_clusters_dinov2_embeddings(tmp_path):
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(2, 384, generator=gen) * 3
    lines = []
    for i in range(10):
        family = int(i < 3)  # an unbalanced set: 7 of one family, 3 of the other
        rel = f"emb/{i}.safetensors"
        write_embedding(tmp_path / rel, centers[family] + 0.2 * torch.randn(384, generator=gen))
        lines.append(json.dumps({"image": f"img{i}.png", "embedding": rel, "family": family}))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert curate.main([str(manifest), "--out", str(out), "--by", "image", "--size", "4"]) == 0
    chosen = [json.loads(ln)["family"] for ln in (out / "subset.jsonl").read_text().splitlines()]
    assert sorted(chosen) == [0, 0, 1, 1]  # the small family is not drowned by the big one
    assert json.loads((out / "clusters.json").read_text())["k"] == 2


def test_elbow_and_round_robin_selection():
    assert elbow_k([2, 3, 4, 5, 6], [100.0, 40.0, 12.0, 10.0, 9.0]) == 4
    points = np.concatenate([np.random.default_rng(0).normal(c, 0.05, (8, 2)) for c in ((0, 0), (5, 5), (0, 5))])
    result = cluster(points, method="elbow")
    assert result.k == 3
    picked = select_diverse(result.labels, result.distances, 5)
    counts = np.bincount(result.labels[picked], minlength=3)
    assert sorted(counts.tolist()) == [1, 2, 2]
