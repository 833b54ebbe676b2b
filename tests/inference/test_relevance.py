"""Calibrated query relevance (``inference.relevance``) on real (tiny, random-weight) models."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support.clouds import random_cloud

from clip2scene_ros.inference.relevance import (
    DEFAULT_TEMPERATURE,
    DEFAULT_THRESHOLD,
    Canonicals,
    relevance_from_cosines,
)
from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig

CLASSES = ["road", "building", "vegetation", "car", "pedestrian", "pole"]


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> Segmenter:
    from support.node_harness import make_test_models

    models = make_test_models(tmp_path_factory.mktemp("relevance_models"))
    cfg = SegmenterConfig(checkpoint=models["checkpoint"], teacher=models["teacher"] or None, vocabulary=CLASSES)
    return Segmenter.from_config(cfg)


def test_relevance_is_half_where_the_query_ties_its_best_competitor():
    q = np.array([0.5, 0.2, 0.1], np.float32)
    comp = np.array([[0.5, 0.1], [0.1, 0.3], [0.0, 0.0]], np.float32)
    rel = relevance_from_cosines(q, comp, 0.01)
    assert rel[0] == pytest.approx(0.5)
    assert rel[1] < 0.5 < rel[2]
    # the 0.5 decision does not depend on the temperature, only the spread of the scores does
    assert ((relevance_from_cosines(q, comp, 0.1) >= 0.5) == (rel >= 0.5)).all()
    assert (relevance_from_cosines(q, comp[:, :0], 0.01) == 1).all()  # nothing competes
    # the default temperature keeps large margins apart (top_k orders them) instead of all at 1.0
    big = relevance_from_cosines(np.array([0.95, 0.9], np.float32), np.array([[-0.5], [-0.5]], np.float32),
                                 DEFAULT_TEMPERATURE)  # fmt: skip
    assert big[0] > big[1] and big[0] < 1.0


def test_a_class_phrase_answers_the_points_labelled_with_it(segmenter):
    """With one name per class the phrase's embedding is its class's, so the class is no competitor:
    the default answer is the points of that label that no generic background phrase describes better."""
    pts = random_cloud()
    pts[:5, 0] = np.nan
    r = segmenter.segment(pts)
    canon = segmenter.canonicals
    unit = r.unit_features()
    generic = canon.embeddings[len(CLASSES) :]
    for ci, name in enumerate(CLASSES):
        rel = segmenter.relevance(name, r)
        assert rel.dtype == np.float32 and rel.shape == (len(pts),)
        assert (rel[:5] == 0).all() and rel.min() >= 0 and rel.max() <= 1
        cos_q = unit @ segmenter.text_embeddings[ci]
        beats_generic = cos_q >= (unit @ generic.T).max(axis=1)
        expected = np.zeros(len(pts), bool)
        expected[r.indices] = (r.labels[r.indices] == segmenter.label_ids[ci]) & beats_generic
        answer = rel >= DEFAULT_THRESHOLD
        # ties at exactly 0.5 may differ by rounding; there are none with continuous features
        assert (answer == expected).mean() > 0.999, name


def test_rewordings_of_the_query_are_not_competitors(segmenter):
    canon = segmenter.canonicals
    classes = segmenter.text_embeddings
    gram = classes @ classes.T
    np.fill_diagonal(gram, -1)
    assert canon.synonym_similarity == pytest.approx(min(gram.max() + 0.02, 0.999), abs=1e-6)
    for ci in range(len(CLASSES)):
        comp = canon.competitors(classes[ci])
        assert ci not in comp  # the class itself
        assert set(range(len(CLASSES))) - {ci} <= set(comp.tolist())  # every other class competes
    # a phrase far from everything competes with every canonical
    far = -classes.mean(axis=0)
    far /= np.linalg.norm(far)
    built = Canonicals.build(classes, CLASSES, np.zeros((0, classes.shape[1])), ())
    assert len(built.competitors(far)) == len(CLASSES)


def test_paraphrases_use_the_same_path_and_scores_are_relevances(segmenter):
    r = segmenter.segment(random_cloud(seed=3))
    for phrase in ("a person walking", "a lamp post", "a parked vehicle"):
        rel = segmenter.relevance(phrase, r)
        assert np.isfinite(rel).all() and rel.min() >= 0 and rel.max() <= 1
        # ranking by relevance is ranking by the margin over the best competitor
        assert rel.shape == (r.num_points,)


def test_vocabulary_changes_racing_with_inference_are_never_lost(segmenter):
    """Vocabulary switches from other threads while frames are segmented: every frame uses one whole
    vocabulary, and after the last call the last vocabulary is active."""
    vocabs = [CLASSES, CLASSES[:4], CLASSES[2:], ["road", "car"], CLASSES]
    pts = random_cloud(2000, seed=4)
    errors: list[BaseException] = []
    stop = threading.Event()

    def infer() -> None:
        try:
            while not stop.is_set():
                r = segmenter.segment(pts)
                assert r.labels.max() <= len(CLASSES)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    worker = threading.Thread(target=infer)
    worker.start()
    try:
        for _ in range(3):
            threads = [threading.Thread(target=segmenter.set_vocabulary, args=(v,)) for v in vocabs[:-1]]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            segmenter.set_vocabulary(["road", "pole"])
            assert segmenter.vocabulary.class_names == ["road", "pole"]
            assert segmenter.text_embeddings.shape[0] == 2 and len(segmenter.label_ids) == 2
            assert segmenter.canonicals.names[:2] == ("road", "pole")
    finally:
        stop.set()
        worker.join()
        segmenter.set_vocabulary(CLASSES)
    assert not errors, errors
