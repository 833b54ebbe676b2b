"""Bounded text-embedding caches and the new-phrase rate limit: a peer sending endless distinct
query phrases can neither grow memory or disk without bound nor starve inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip2scene_ros.inference.relevance import PhraseRateLimiter, QueryRateLimited
from clip2scene_ros.inference.segmenter import Segmenter, SegmenterConfig
from clip2scene_ros.teacher import create_teacher
from clip2scene_ros.teacher.text_cache import TextEmbeddingCache


def test_memory_is_an_lru_and_disk_keeps_its_quota(tmp_path):
    cache = TextEmbeddingCache(tmp_path / "text", max_entries=8, max_disk_bytes=8 * 1024)
    for i in range(200):
        cache.put(f"k{i}", torch.full((64,), float(i)))
        if i == 3:
            assert cache.get("k0") is not None  # k0 becomes the most recently used
    assert len(cache) == 8
    assert cache.disk_usage() <= 8 * 1024 and cache.evicted_files > 0
    assert cache.get("k199") is not None and float(cache.get("k199")[0]) == 199
    # the oldest files went first; recent ones are still readable from disk by a new process
    fresh = TextEmbeddingCache(tmp_path / "text", max_entries=8, max_disk_bytes=8 * 1024)
    assert fresh.get("k198") is not None and fresh.get("k1") is None
    # no quota: memory only, nothing written
    mem = TextEmbeddingCache(tmp_path / "mem", max_disk_bytes=0)
    mem.put("a", torch.zeros(4))
    assert not (tmp_path / "mem").exists() and mem.get("a") is not None
    with pytest.raises(ValueError, match="max_entries"):
        TextEmbeddingCache(tmp_path, max_entries=0)


def test_teacher_batches_larger_than_the_cache_are_encoded_correctly(tmp_path):
    torch.manual_seed(0)
    small = create_teacher("c2s-test-vit", random_init=True, text_cache=TextEmbeddingCache(tmp_path, max_entries=2))
    words = ["car", "road", "tree", "pole", "bus"]
    emb = small.encode_text(words, templates="street")
    ref = small.with_config()
    ref.text_cache = TextEmbeddingCache(tmp_path / "ref", persist=False)
    torch.testing.assert_close(emb, ref.encode_text(words, templates="street"))


def test_rate_limit_counts_only_new_phrases():
    now = [0.0]
    lim = PhraseRateLimiter(per_second=2, burst=3, clock=lambda: now[0])
    for _ in range(3):
        lim.acquire()
    with pytest.raises(QueryRateLimited, match="at most 2 per second"):
        lim.acquire()
    now[0] += 0.5  # one token back
    lim.acquire()
    assert lim.refused == 1


def test_segmenter_cache_location_quota_and_limit(tmp_path):
    from support.node_harness import make_test_models

    models = make_test_models(tmp_path / "models")
    cfg = SegmenterConfig(
        checkpoint=models["checkpoint"],
        teacher=models["teacher"] or None,
        vocabulary=["road", "car"],
        text_cache_dir=str(tmp_path / "cache"),
        text_cache_entries=16,
        text_cache_disk_mb=0.01,
        new_phrases_per_s=0.001,
        new_phrases_burst=5,
        text_encode_share=1.0,  # the count limit alone (encodings are slow on a loaded test machine)
    )
    seg = Segmenter.from_config(cfg)
    pts = np.random.default_rng(0).uniform(-10, 10, (500, 4)).astype(np.float32)
    r = seg.segment(pts)
    for i in range(5):
        seg.relevance(f"phrase number {i}", r)
    with pytest.raises(QueryRateLimited):
        seg.relevance("one phrase too many", r)
    seg.relevance("phrase number 0", r)  # cached phrases are always answered
    assert any((tmp_path / "cache").glob("*.safetensors"))  # the configured location
    with pytest.raises(ValueError, match="text_cache_entries"):
        SegmenterConfig(checkpoint=models["checkpoint"], text_cache_entries=0).validate()


def test_encoder_time_budget_refuses_when_encodings_are_slow():
    now = [0.0]
    lim = PhraseRateLimiter(per_second=100, burst=100, encode_share=0.25, clock=lambda: now[0])
    lim.acquire()
    lim.spend(2.0)  # one slow encoding (a loaded CPU) uses up more than the budget in hand
    with pytest.raises(QueryRateLimited, match="text encoder is busy"):
        lim.acquire()
    now[0] += 7.0  # 0.25 s of encoding per second of wall time comes back
    lim.acquire()


def test_tokenizer_word_cache_is_bounded_and_keeps_its_special_tokens(monkeypatch):
    from clip2scene_ros.teacher import teacher as teacher_module

    torch.manual_seed(0)
    teacher = create_teacher("c2s-test-vit", random_init=True)
    tok = teacher.clip.tokenizer
    if not isinstance(getattr(tok, "cache", None), dict):
        pytest.skip(f"{type(tok).__name__} keeps no word cache")
    special = {k for k, v in tok.cache.items() if k == v}
    assert special, "open_clip's tokenizer seeds its cache with the special tokens"
    reference = teacher.encode_prompts(["a photo of a parked car"])
    monkeypatch.setattr(teacher_module, "TOKENIZER_CACHE_ENTRIES", 30)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(40):  # 120 new words (letters only: digits are tokenized one by one)
        words = [letters[(3 * i + j) % 26] + letters[(3 * i + j) // 26] + "zq" for j in range(3)]
        teacher.encode_prompts([" ".join(words)])
        assert len(tok.cache) <= 30
    assert special <= set(tok.cache)
    torch.testing.assert_close(teacher.encode_prompts(["a photo of a parked car"]), reference)
