"""BLEU and ROUGE-L for held-out evaluation of generated text (no extra dependencies).

Sentence-level BLEU-4 with add-one smoothing (Lin & Och 2004) and ROUGE-L F1 over
lower-cased word tokens; corpus figures are means over the samples.
"""
from __future__ import annotations

import math
import re
from collections import Counter

_TOKEN = re.compile(r"[\w']+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(hypothesis: str, reference: str, max_n: int = 4) -> float:
    hyp, ref = tokenize(hypothesis), tokenize(reference)
    if not hyp or not ref:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        h, r = _ngrams(hyp, n), _ngrams(ref, n)
        overlap = sum(min(c, r[g]) for g, c in h.items())
        total = max(len(hyp) - n + 1, 0)
        # add-one smoothing for n > 1 keeps short sentences from scoring zero
        num, den = (overlap, total) if n == 1 else (overlap + 1, total + 1)
        if num == 0 or den == 0:
            return 0.0
        log_precision += math.log(num / den) / max_n
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return brevity * math.exp(log_precision)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    hyp, ref = tokenize(hypothesis), tokenize(reference)
    if not hyp or not ref:
        return 0.0
    lcs = _lcs(hyp, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """Mean BLEU-4 and ROUGE-L F1 over paired samples."""
    if not hypotheses:
        return {"bleu": 0.0, "rouge_l": 0.0, "n": 0}
    bleu = sum(sentence_bleu(h, r) for h, r in zip(hypotheses, references)) / len(hypotheses)
    rouge = sum(rouge_l(h, r) for h, r in zip(hypotheses, references)) / len(hypotheses)
    return {"bleu": round(bleu, 4), "rouge_l": round(rouge, 4), "n": len(hypotheses)}
