"""Text answers: contained-answer accuracy (scene classification, VQA) and CIDEr-D (captions).

Both follow RSCoVLM's evaluator: an answer is right when the lower-cased reference, stripped of
spaces and full stops at its ends, is contained in the lower-cased answer; captions are lower-
cased and scored by the CIDEr-D of the COCO caption code (n-grams 1-4, tf-idf from the
references of the evaluated set, clipped counts, Gaussian length penalty with sigma 6, times 10
per image), reported times 100 as papers do.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np


def _clean(text: str) -> str:
    return text.lower().strip().strip(".")


def contained_accuracy(answers: Sequence[str], references: Sequence[str]) -> dict:
    """Share of answers that contain their reference; empty references are left out, counted."""
    pairs = [(a or "", r) for a, r in zip(answers, references) if r and _clean(r)]
    correct = sum(_clean(r) in _clean(a) for a, r in pairs)
    return {
        "accuracy": correct / len(pairs) if pairs else None,
        "correct": correct,
        "samples": len(pairs),
        "without_reference": len(references) - len(pairs),
        "rule": "lower-cased reference contained in the lower-cased answer (ends stripped of spaces and '.')",
    }


def _ngrams(text: str, n: int) -> Counter:
    words = text.split()
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], n: int = 4, sigma: float = 6.0) -> tuple[float, list[float]]:
    """(mean, per-sample) CIDEr-D in the COCO code's units (at most 10 per sample); texts are
    split on white space as given."""
    if len(candidates) != len(references):
        raise ValueError("one list of references per candidate")
    if not candidates:
        return 0.0, []
    cooked_refs = [[_ngrams(r, n) for r in refs] for refs in references]
    cooked_test = [_ngrams(c, n) for c in candidates]
    document_frequency: Counter = Counter()
    for refs in cooked_refs:
        document_frequency.update({gram for ref in refs for gram in ref})
    log_documents = math.log(float(len(cooked_refs)))

    def vector(counts: Counter) -> tuple[list[dict], list[float], int]:
        weights: list[dict] = [{} for _ in range(n)]
        norms = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = float(tf) * (log_documents - math.log(max(1.0, document_frequency[gram])))
            weights[k][gram] = weight
            norms[k] += weight**2
            if k == 1:  # the COCO code measures length in bigrams; kept for identical scores
                length += tf
        return weights, [math.sqrt(v) for v in norms], length

    def similarity(hyp, ref) -> np.ndarray:
        (w_hyp, n_hyp, l_hyp), (w_ref, n_ref, l_ref) = hyp, ref
        delta = float(l_hyp - l_ref)
        values = np.zeros(n)
        for k in range(n):
            for gram, weight in w_hyp[k].items():
                values[k] += min(weight, w_ref[k].get(gram, 0.0)) * w_ref[k].get(gram, 0.0)
            if n_hyp[k] != 0 and n_ref[k] != 0:
                values[k] /= n_hyp[k] * n_ref[k]
            values[k] *= math.e ** (-(delta**2) / (2 * sigma**2))
        return values

    scores = []
    for test, refs in zip(cooked_test, cooked_refs):
        hyp = vector(test)
        total = np.zeros(n)
        for ref in refs:
            total += similarity(hyp, vector(ref))
        scores.append(float(np.mean(total) / len(refs) * 10.0))
    return float(np.mean(scores)), scores


def caption_scores(answers: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
    """CIDEr of lower-cased captions, times 100 (RSCoVLM's units)."""
    usable = [(a or "", refs) for a, refs in zip(answers, references) if refs]
    mean, _ = cider_d([a.lower() for a, _ in usable], [[r.lower() for r in refs] for _, refs in usable])
    return {
        "CIDEr": 100.0 * mean if usable else None,
        "samples": len(usable),
        "without_reference": len(answers) - len(usable),
        "rule": "CIDEr-D of the COCO caption code on lower-cased, space-split captions, x100",
    }
