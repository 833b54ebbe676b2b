"""MaskCLIP dense features: shapes, dtypes, normalisation, and the value-path definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clip2scene_ros.teacher import create_teacher, key_smoothing, prompt_denoising, resize_grid_embedding


def test_vit_b16_random_weights_224x416_gives_14x26_grid_of_512d():
    torch.manual_seed(0)
    teacher = create_teacher("ViT-B/16", random_init=True, input_size=(224, 416))
    images = np.random.default_rng(0).integers(0, 256, (1, 224, 416, 3), dtype=np.uint8)
    feats = teacher.dense_features(images)
    assert feats.shape == (1, 512, 14, 26) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(1, 14, 26), atol=1e-4, rtol=0)


def test_preprocess_applies_clip_mean_std(tiny_teacher):
    mean = np.array(tiny_teacher.clip.mean)
    img = np.broadcast_to(np.round(mean * 255).astype(np.uint8), (1, 64, 96, 3))
    pixels = tiny_teacher.preprocess(img)
    assert pixels.shape == (1, 3, 64, 96)
    assert pixels.abs().max() < 0.01  # the mean colour maps to ~0
    white = tiny_teacher.preprocess(np.full((64, 96, 3), 255, np.uint8))
    expected = (1 - torch.tensor(tiny_teacher.clip.mean)) / torch.tensor(tiny_teacher.clip.std)
    torch.testing.assert_close(white[0, :, 0, 0], expected.float())
    # a read-only view (as zero-copy ROS message readers give) is accepted without a warning
    view = np.frombuffer(bytes(64 * 96 * 3), np.uint8).reshape(64, 96, 3)
    assert not view.flags.writeable
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tiny_teacher.preprocess(view).shape == (1, 3, 64, 96)


def test_preprocess_rejects_float_images(tiny_teacher):
    with pytest.raises(ValueError, match="uint8"):
        tiny_teacher.preprocess(np.zeros((1, 64, 96, 3), np.float32))


def test_value_path_equals_last_block_with_self_only_attention(tiny_teacher):
    """MaskCLIP's last block == the ordinary block whose attention is forced onto the token itself."""
    visual = tiny_teacher.model.visual
    pixels = torch.randn(2, 3, 64, 96)
    ours = tiny_teacher.dense_from_pixels(pixels, normalize=False)
    n = 1 + 4 * 6
    self_only = torch.full((n, n), float("-inf")).fill_diagonal_(0.0)
    last = visual.transformer.resblocks[-1]
    original = last.forward
    last.forward = lambda x, attn_mask=None: original(x, attn_mask=self_only)
    visual.output_tokens = True
    try:
        _, tokens = visual(pixels)
    finally:
        last.forward = original
        visual.output_tokens = False
    ref = (tokens @ visual.proj).transpose(1, 2).reshape(2, -1, 4, 6)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


def test_non_square_input_interpolates_positions(tiny_teacher):
    feats = tiny_teacher.dense_features(np.zeros((2, 128, 224, 3), np.uint8), size=(128, 224))
    assert feats.shape == (2, 32, 8, 14)
    pos = torch.randn(1 + 4 * 6, 8)
    assert resize_grid_embedding(pos, (4, 6), (4, 6)) is pos
    big = resize_grid_embedding(pos, (4, 6), (8, 12))
    assert big.shape == (1 + 96, 8) and torch.equal(big[0], pos[0])


def test_tiling_matches_running_each_tile(tiny_teacher):
    tiled = tiny_teacher.with_config(input_size=(128, 192), tile=(64, 96))
    images = np.random.default_rng(1).integers(0, 256, (1, 128, 192, 3), dtype=np.uint8)
    feats = tiled.dense_features(images)
    assert feats.shape == (1, 32, 8, 12)
    top_right = tiny_teacher.dense_features(images[:, :64, 96:])
    torch.testing.assert_close(feats[:, :, :4, 6:], top_right, atol=1e-5, rtol=1e-4)


def test_tile_overlap_averages_a_half_tile_shifted_grid(tiny_teacher):
    overlap = tiny_teacher.with_config(input_size=(128, 192), tile=(64, 96), tile_overlap=True)
    plain = overlap.with_config(tile_overlap=False)
    images = np.random.default_rng(2).integers(0, 256, (1, 128, 192, 3), dtype=np.uint8)
    feats, base = overlap.dense_features(images), plain.dense_features(images)
    assert feats.shape == base.shape == (1, 32, 8, 12)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(1, 8, 12), atol=1e-4, rtol=0)
    # Patch 16: the second grid starts 40 px down and 56 px right (half a tile in whole tokens
    # plus half a token), so one of its tiles is the original pixels [24:88, 40:136], read
    # back at tokens [2:6, 3:9].
    inner = tiny_teacher.dense_features(images[:, 24:88, 40:136])
    expected = torch.nn.functional.normalize(base[:, :, 2:6, 3:9] + inner, dim=1)
    torch.testing.assert_close(feats[:, :, 2:6, 3:9], expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(feats, base, atol=1e-3)
    with pytest.raises(ValueError, match="tile_overlap needs a tile"):
        tiny_teacher.with_config(tile_overlap=True)


def test_flip_average_is_mirror_symmetric(tiny_teacher):
    flipped = tiny_teacher.with_config(flip_average=True)
    images = np.random.default_rng(3).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
    feats = flipped.dense_features(images)
    mirrored = flipped.dense_features(np.ascontiguousarray(images[:, :, ::-1]))
    torch.testing.assert_close(mirrored, feats.flip(3), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(feats, tiny_teacher.dense_features(images), atol=1e-3)


def test_resnet_attention_pool_value_path(tmp_path):
    import json

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "rn.json").write_text(json.dumps(cfg))
    teacher = create_teacher(tmp_path / "rn.json", random_init=True, input_size=(64, 128))
    feats = teacher.dense_features(np.zeros((1, 64, 128, 3), np.uint8))
    assert feats.shape == (1, 32, 2, 4)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(1, 2, 4), atol=1e-4, rtol=0)


def test_key_smoothing_averages_similar_cells():
    feats = torch.nn.functional.normalize(torch.randn(1, 8, 2, 2), dim=1)
    keys = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    keys[:, 1] = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(2, 2)
    out = key_smoothing(feats, keys, threshold=0.99)
    first_pair = torch.nn.functional.normalize(feats[0, :, 0, 0] + feats[0, :, 0, 1], dim=0)
    torch.testing.assert_close(out[0, :, 0, 0], first_pair)
    torch.testing.assert_close(out[0, :, 0, 1], first_pair)
    assert not torch.allclose(out[0, :, 1, 0], first_pair)


def test_prompt_denoising_drops_unconfident_classes():
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 0.3  # class 0 wins everywhere
    logits[:, 1, 0, 0] = 0.31  # class 1 wins one cell, barely
    out = prompt_denoising(logits, threshold=0.9)
    assert torch.isinf(out[0, 2]).all()  # class 2 never confident: removed
    assert torch.isfinite(out[0, 0]).all()
