"""Calibrated open-vocabulary relevance: is a phrase the best description of a point?

A raw cosine similarity means nothing on its own: its scale differs per model and per phrase.
Following LERF and OpenScene, a point's relevance to a query is measured against competing
("canonical") phrases: the active vocabulary's classes plus a few generic background phrases.
For each canonical the pairwise softmax ``exp(s_q / T) / (exp(s_q / T) + exp(s_c / T))`` says how
much better the query describes the point than that canonical; the relevance is the minimum over
canonicals, ``sigmoid((s_q - max_c s_c) / T)``. So relevance >= 0.5 means "the query describes this
point at least as well as every alternative", whatever the model.

A canonical that merely rewords the query ("a parked car" vs the class "car") is no alternative:
it is left out when the query is closer to it in text space than any two distinct vocabulary
classes are to each other (the text encoder's own notion of "different classes").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# LERF's canonical background phrases: they absorb points that no specific phrase describes.
GENERIC_PHRASES: tuple[str, ...] = ("object", "things", "stuff", "texture")
DEFAULT_THRESHOLD = 0.5
# Only the spread of the scores depends on it, never the 0.5 decision. CLIP's 0.01 (or 0.05) saturates
# at 1.0 (float32) for most matches, which would leave top_k to break ties arbitrarily.
DEFAULT_TEMPERATURE = 0.1
SYNONYM_MARGIN = 0.02


def answer_threshold(threshold: float, top_k: int) -> float:
    """The relevance threshold of a query request: a request that sets neither a threshold nor a
    top-k gets the calibrated default answer (relevance >= 0.5)."""
    return DEFAULT_THRESHOLD if threshold == 0 and top_k <= 0 else float(threshold)


@dataclass(frozen=True)
class Canonicals:
    """Competing phrases of one vocabulary, encoded once per vocabulary change."""

    embeddings: np.ndarray  # float32 [K, D] unit rows: vocabulary classes, then generic phrases
    names: tuple[str, ...]
    synonym_similarity: float  # text cosine above which a canonical rewords the query

    @classmethod
    def build(
        cls, class_embeddings: np.ndarray, class_names: Sequence[str], generic: np.ndarray, generic_names: Sequence[str]
    ) -> Canonicals:
        classes = np.asarray(class_embeddings, np.float32)
        gram = classes @ classes.T
        np.fill_diagonal(gram, -1.0)
        closest_pair = float(gram.max()) if len(classes) > 1 else 0.0
        emb = np.concatenate([classes, np.asarray(generic, np.float32).reshape(-1, classes.shape[1])])
        return cls(
            np.ascontiguousarray(emb),
            (*class_names, *generic_names),
            min(closest_pair + SYNONYM_MARGIN, 0.999),
        )

    def competitors(self, query: np.ndarray) -> np.ndarray:
        """Indices of the canonicals that compete with ``query`` [D] (not rewordings of it)."""
        return np.flatnonzero(self.embeddings @ query < self.synonym_similarity)


def relevance_from_cosines(query_cos: np.ndarray, competitor_cos: np.ndarray, temperature: float) -> np.ndarray:
    """float32 relevance from cosines [R] of the query and [R, K] of its competitors."""
    if competitor_cos.shape[1] == 0:  # nothing competes: every point is described by the query
        return np.ones(len(query_cos), np.float32)
    margin = query_cos - competitor_cos.max(axis=1)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-margin / temperature))).astype(np.float32)


class QueryRateLimited(ValueError):
    """More new (never encoded) query phrases per second than the node accepts."""


class PhraseRateLimiter:
    """Token buckets over NEW query phrases: repeated phrases are cached and always free, but every new
    one costs a text-encoder pass (85 prompt templates) and a cache entry. Two limits, each refusing
    with a message instead of queueing: a count (``per_second``, ``burst``) and a share of wall time
    the encoder may take (``encode_share``), measured per encoding, so on a loaded CPU, where each
    encoding takes longer, fewer new phrases are accepted and inference keeps its CPU."""

    def __init__(self, per_second: float, burst: int, encode_share: float = 0.25, clock=None) -> None:  # noqa: ANN001
        import time

        if per_second <= 0 or burst < 1:
            raise ValueError(f"phrase rate limit needs per_second > 0 and burst >= 1, got {per_second}, {burst}")
        if not 0 < encode_share <= 1:
            raise ValueError(f"encode_share must be in (0, 1], got {encode_share}")
        self.per_second, self.burst, self.encode_share = float(per_second), int(burst), float(encode_share)
        self._clock = clock or time.monotonic
        self._tokens = float(burst)
        self._budget_s = self._budget_cap = 2.0 * self.encode_share  # seconds of encoding in hand
        self._last = self._clock()
        self._lock = threading.Lock()
        self.refused = 0

    def acquire(self) -> None:
        """Take one token or raise :class:`QueryRateLimited`."""
        with self._lock:
            now = self._clock()
            dt, self._last = now - self._last, now
            self._tokens = min(self.burst, self._tokens + dt * self.per_second)
            self._budget_s = min(self._budget_cap, self._budget_s + dt * self.encode_share)
            if self._tokens < 1:
                self.refused += 1
                raise QueryRateLimited(
                    f"too many new query phrases: at most {self.per_second:g} per second (burst {self.burst}); "
                    "repeated phrases are not limited, retry shortly"
                )
            if self._budget_s <= 0:
                self.refused += 1
                raise QueryRateLimited(
                    f"the text encoder is busy (new phrases may take {self.encode_share:.0%} of the time, and "
                    "this CPU is loaded); repeated phrases are not limited, retry shortly"
                )
            self._tokens -= 1

    def spend(self, seconds: float) -> None:
        """Charge one encoding's wall time to the time budget."""
        with self._lock:
            self._budget_s -= max(0.0, seconds)
