"""Diverse subset selection: cluster texts (TF-IDF) or images (DINOv2 embeddings) with K-Means and
sample across the clusters, so a model learns from varied examples rather than many near-copies.

k is chosen by silhouette (default) or by the elbow of the inertia curve. Selection is round-robin
over clusters, each cluster's members taken nearest-to-centroid first (its most typical example),
so small clusters are never drowned by big ones.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CHOOSE_METHODS = ("silhouette", "elbow")


@dataclass
class Clustering:
    k: int
    labels: np.ndarray
    distances: np.ndarray  # each item's distance to its own centroid
    method: str
    scores: dict = field(default_factory=dict)  # k -> {"inertia", "silhouette"}


def tfidf_matrix(texts: list[str], max_features: int = 5000):
    """Sparse, L2-normalised TF-IDF rows (unigrams + bigrams, English stop words removed) and the vectorizer."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(max_features=max_features, ngram_range=(1, 2), stop_words="english", sublinear_tf=True)
    return vectorizer.fit_transform(texts), vectorizer


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Unit-length rows, so K-Means on embeddings follows cosine similarity."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def elbow_k(ks: list[int], inertias: list[float]) -> int:
    """The point of the inertia curve farthest from the straight line joining its ends."""
    if len(ks) <= 2:
        return ks[0]
    x = (np.array(ks, float) - ks[0]) / (ks[-1] - ks[0])
    span = inertias[0] - inertias[-1]
    y = (np.array(inertias, float) - inertias[-1]) / (span if span else 1.0)
    gap = (1 - x) - y  # distance below the chord from (0, 1) to (1, 0)
    return ks[int(np.argmax(gap))]


def cluster(x, k: int | None = None, k_max: int = 12, method: str = "silhouette", seed: int = 0) -> Clustering:
    """K-Means with a fixed k, or the best k in 2..k_max by silhouette or elbow."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = x.shape[0]
    if method not in CHOOSE_METHODS:
        raise ValueError(f"method '{method}': expected one of {', '.join(CHOOSE_METHODS)}")
    if n < 2:
        return Clustering(1, np.zeros(n, int), np.zeros(n), "single")

    def fit(kk: int):
        return KMeans(n_clusters=kk, n_init=4, random_state=seed).fit(x)

    if k is not None:
        model = fit(max(1, min(k, n)))
        chosen, scores = model.n_clusters, {}
    else:
        ks = list(range(2, max(2, min(k_max, n - 1)) + 1))
        models, scores = {}, {}
        for kk in ks:
            models[kk] = fit(kk)
            sil = float(silhouette_score(x, models[kk].labels_, random_state=seed)) if 1 < kk < n else None
            scores[kk] = {"inertia": round(float(models[kk].inertia_), 4), "silhouette": None if sil is None else round(sil, 4)}
        if method == "elbow":
            chosen = elbow_k(ks, [scores[kk]["inertia"] for kk in ks])
        else:
            chosen = max(ks, key=lambda kk: scores[kk]["silhouette"] if scores[kk]["silhouette"] is not None else -2)
        model = models[chosen]
    centers = model.cluster_centers_
    dense = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    distances = np.linalg.norm(dense - centers[model.labels_], axis=1)
    return Clustering(int(chosen), model.labels_.astype(int), distances, method if k is None else "fixed", scores)


def select_diverse(labels: np.ndarray, distances: np.ndarray, size: int) -> list[int]:
    """`size` indices taken round-robin over clusters, nearest-to-centroid first within each cluster."""
    queues = {c: sorted(np.flatnonzero(labels == c).tolist(), key=lambda i: (distances[i], i)) for c in np.unique(labels)}
    order = sorted(queues, key=lambda c: -len(queues[c]))
    chosen: list[int] = []
    while len(chosen) < size and any(queues.values()):
        for c in order:
            if queues[c] and len(chosen) < size:
                chosen.append(queues[c].pop(0))
    return sorted(chosen)


def top_terms(vectorizer, x, labels: np.ndarray, n: int = 6) -> dict[int, list[str]]:
    """The highest mean TF-IDF terms of each cluster, to name it in the report."""
    vocab = np.array(vectorizer.get_feature_names_out())
    out = {}
    for c in np.unique(labels):
        mean = np.asarray(x[labels == c].mean(axis=0)).ravel()
        out[int(c)] = vocab[np.argsort(-mean)[:n]].tolist()
    return out
