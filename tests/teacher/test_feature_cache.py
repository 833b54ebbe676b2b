"""Dense-feature cache: fp16 chunks reused across runs, wiped when the teacher changes."""

from __future__ import annotations

import numpy as np
import torch

from clip2scene_ros.teacher import DenseFeatureCache, create_teacher


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 96, 3), dtype=np.uint8)


def test_hits_reopen_and_memmap(tmp_path, tiny_teacher):
    images = _images(5)
    keys = [f"img{i}" for i in range(5)]
    cache = DenseFeatureCache(tmp_path / "c", tiny_teacher, chunk_size=2)
    feats = cache.features(keys[:3], images[:3])
    assert feats.shape == (3, 32, 4, 6) and feats.dtype == torch.float32
    assert cache.misses == 3 and cache.hits == 0
    direct = tiny_teacher.dense_features(images[:3])
    torch.testing.assert_close(feats, direct, atol=2e-3, rtol=0)  # fp16 storage
    loaded_calls = []

    def loader(positions):
        loaded_calls.append(positions)
        return images[[1, 2, 3, 4]][positions]

    again = cache.features(keys[1:], loader)  # 2 hits, 2 misses; only misses are loaded
    assert loaded_calls == [[2, 3]] and cache.hits == 2 and cache.misses == 5
    torch.testing.assert_close(again[:2], feats[1:])
    assert len(list((tmp_path / "c").glob("chunk_*.npy"))) == 3  # 5 images in chunks of 2

    reopened = DenseFeatureCache(tmp_path / "c", tiny_teacher, chunk_size=2)
    assert len(reopened) == 5 and not reopened.invalidated
    stored = reopened.get("img4")
    assert stored.dtype == np.float16 and isinstance(stored.base, np.memmap | np.ndarray)
    out = reopened.features(keys, lambda pos: (_ for _ in ()).throw(AssertionError("no recompute")))
    assert reopened.hits == 5 and reopened.misses == 0
    torch.testing.assert_close(out[4], again[3])
    reopened.features(["img5"], _images(1, seed=3))  # appends into the half-full last chunk
    assert len(list((tmp_path / "c").glob("chunk_*.npy"))) == 3 and len(reopened) == 6


def test_invalidated_when_weights_or_options_change(tmp_path, tiny_teacher):
    images = _images(2)
    DenseFeatureCache(tmp_path / "c", tiny_teacher).features(["a", "b"], images)
    tiled = tiny_teacher.with_config(input_size=(64, 192), tile=(64, 96))
    other_opts = DenseFeatureCache(tmp_path / "c", tiled)
    assert other_opts.invalidated and len(other_opts) == 0
    other_opts.features(["a"], images[:1])
    for change in ({"tile_overlap": True}, {"flip_average": True}):  # test-time averaging changes features
        changed = DenseFeatureCache(tmp_path / "c", tiled.with_config(**change))
        assert changed.invalidated and len(changed) == 0
        changed.features(["a"], images[:1])
    DenseFeatureCache(tmp_path / "c", tiny_teacher).features(["a"], images[:1])
    torch.manual_seed(5)
    retrained = create_teacher("c2s-test-vit", random_init=True, input_size=(64, 96))
    cache = DenseFeatureCache(tmp_path / "c", retrained)
    assert cache.invalidated and len(cache) == 0 and not list((tmp_path / "c").glob("chunk_*.npy"))
    with torch.no_grad():  # in-place weight updates need reset_model_id() to be noticed
        retrained.model.visual.proj.mul_(2)
    retrained.clip.reset_model_id()
    assert DenseFeatureCache(tmp_path / "c", retrained).fingerprint != cache.fingerprint
