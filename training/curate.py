"""Pick a diverse subset of a training set: TF-IDF + K-Means over texts, or K-Means over DINOv2 embeddings.

    python -m training.curate dataset.jsonl --out DIR [--by text|image] [--size N | --fraction F]
           [--k N] [--k-max 12] [--method silhouette|elbow]

INPUT is a `dataset.jsonl` (text: input_text + output_text; image: image_embedding_path) or a
`manifest.jsonl` from `training.precompute_dinov2` (image: embedding). Writes DIR/subset.jsonl (the
chosen lines, unchanged, in input order) and DIR/clusters.json (k, how it was chosen, inertia and
silhouette per k, cluster sizes, top terms, how many were taken from each cluster).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rezcty_core.llm.curate import CHOOSE_METHODS, cluster, normalise_rows, select_diverse, tfidf_matrix, top_terms


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.curate", description=__doc__.splitlines()[0])
    ap.add_argument("input", type=Path, help="dataset.jsonl or precompute_dinov2's manifest.jsonl")
    ap.add_argument("--out", required=True, type=Path, help="folder for subset.jsonl and clusters.json")
    ap.add_argument("--by", choices=["text", "image"], default="text", help="cluster texts (TF-IDF) or DINOv2 embeddings")
    ap.add_argument("--text-field", choices=["input_text", "output_text", "both"], default="both")
    ap.add_argument("--size", type=int, default=0, help="how many lines to keep (default: --fraction of them)")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--k", type=int, default=0, help="number of clusters (0: choose by --method)")
    ap.add_argument("--k-max", type=int, default=12)
    ap.add_argument("--method", choices=CHOOSE_METHODS, default="silhouette", help="how k is chosen")
    ap.add_argument("--strict", action="store_true", help="fail on the first bad line instead of skipping it")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def read_lines(path: Path, by: str, text_field: str) -> tuple[list[tuple[int, str, object]], list[str]]:
    """(line number, raw line, feature) per usable line, and `FILE:LINE: problem` for the others."""
    from rezcty_core.eye.embedding import load_embedding

    items, problems = [], []
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, raw in enumerate(tqdm(lines, desc="curate: read", unit="line", disable=len(lines) < 200), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError("expected a JSON object")
            if by == "text":
                fields = ["input_text", "output_text"] if text_field == "both" else [text_field]
                text = " ".join(str(obj[f]) if isinstance(obj.get(f), str) else json.dumps(obj.get(f, "")) for f in fields)
                if not text.strip() or not any(f in obj for f in fields):
                    raise ValueError(f"no {' / '.join(fields)} to cluster")
                items.append((lineno, raw, text))
            else:
                rel = obj.get("image_embedding_path") or obj.get("embedding")
                if not rel:
                    raise ValueError("no image_embedding_path (or manifest 'embedding') on this line")
                vector = load_embedding(path.parent / rel).vector.float()
                items.append((lineno, raw, (vector.mean(0) if vector.dim() > 1 else vector).numpy()))
        except json.JSONDecodeError as e:
            problems.append(f"{path}:{lineno}: not valid JSON ({e.msg}); line skipped")
        except (ValueError, OSError, KeyError) as e:
            problems.append(f"{path}:{lineno}: {e}; line skipped")
    return items, problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.input.is_file():
        print(f"curate: error: {args.input}: file not found", file=sys.stderr)
        return 2
    items, problems = read_lines(args.input, args.by, args.text_field)
    for p in problems:
        print(p, file=sys.stderr)
    if problems and args.strict:
        return 1
    if len(items) < 2:
        print(f"curate: error: {args.input}: need at least 2 usable lines, found {len(items)}", file=sys.stderr)
        return 2

    # features -> clusters
    vectorizer = None
    if args.by == "text":
        x, vectorizer = tfidf_matrix([f for _, _, f in items])
    else:
        dims = {f.shape[-1] for _, _, f in items}
        if len(dims) > 1:
            print(f"curate: error: embeddings of different sizes {sorted(dims)} in {args.input}", file=sys.stderr)
            return 2
        x = normalise_rows(np.stack([f for _, _, f in items]))
    result = cluster(x, args.k or None, args.k_max, args.method, args.seed)

    # diverse selection -> files
    size = args.size or max(1, round(len(items) * args.fraction))
    chosen = select_diverse(result.labels, result.distances, min(size, len(items)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "subset.jsonl").write_text("".join(items[i][1].rstrip("\n") + "\n" for i in chosen), encoding="utf-8")
    terms = top_terms(vectorizer, x, result.labels) if vectorizer is not None else {}
    report = {
        "input": str(args.input), "by": args.by, "k": result.k, "chosen_by": result.method,
        "scores": {str(k): v for k, v in result.scores.items()}, "lines": len(items), "selected": len(chosen),
        "skipped_lines": len(problems),
        "clusters": [{"cluster": int(c), "size": int((result.labels == c).sum()),
                      "selected": int(sum(result.labels[i] == c for i in chosen)),
                      "lines": [items[i][0] for i in np.flatnonzero(result.labels == c)],
                      **({"top_terms": terms[int(c)]} if terms else {})}
                     for c in np.unique(result.labels)],
    }
    (args.out / "clusters.json").write_text(json.dumps(report, indent=1) + "\n")
    sizes = ", ".join(f"{c['size']}->{c['selected']}" for c in report["clusters"])
    print(f"curate: {len(items)} lines, k={result.k} ({result.method}), clusters (size->taken): {sizes}; "
          f"wrote {len(chosen)} lines to {args.out / 'subset.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
