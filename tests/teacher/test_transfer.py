"""Weight transfer between teacher architectures (``clip2scene train teacher --transfer-from``)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from clip2scene_ros.teacher.dense import vit_dense
from clip2scene_ros.teacher.loading import CONFIG_DIR, _build, resolve_model


def _model(name_or_path) -> torch.nn.Module:
    """Random-init open_clip model of a registry config or JSON path (no tokenizer: fast)."""
    return _build(resolve_model(name_or_path)[1]).eval()


def _randomised(name_or_path) -> torch.nn.Module:
    model = _model(name_or_path)
    with torch.no_grad():  # open_clip zero-inits some biases/embeddings: make every weight matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_patch4_transfer_equals_patch8_on_a_2x_upsampled_image():
    from clip2scene_training.teacher.train import transfer_weights

    torch.manual_seed(0)
    src = _randomised("c2s-test-vit-p8")  # 112x200 input, 8-pixel patches: 14x25 grid
    dst = _model("c2s-test-vit-p4")  # 56x100, 4-pixel patches: 14x25
    transfer_weights(src, dst)
    x = torch.randn(2, 3, 56, 100)
    up = F.interpolate(x, scale_factor=2, mode="nearest")
    want, _ = vit_dense(src.visual, up)
    got, _ = vit_dense(dst.visual, x)
    assert got.shape == want.shape == (2, 32, 14, 25)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    tokens = torch.randint(1, 400, (3, 24))
    torch.testing.assert_close(dst.encode_text(tokens), src.encode_text(tokens))


def test_transfer_to_a_shallower_tower_keeps_the_last_block_and_resizes_positions(tmp_path):
    from clip2scene_training.teacher.train import transfer_weights

    cfg = json.loads((CONFIG_DIR / "c2s-test-vit-p8.json").read_text())
    cfg["vision_cfg"]["layers"] = 3
    deep = tmp_path / "deep.json"
    deep.write_text(json.dumps(cfg))
    cfg["vision_cfg"].update(layers=2, image_size=[48, 96], patch_size=4)  # 12x24 grid
    shallow = tmp_path / "shallow.json"
    shallow.write_text(json.dumps(cfg))
    torch.manual_seed(0)
    src, dst = _randomised(str(deep)), _model(str(shallow))
    transfer_weights(src, dst)
    s_blocks, d_blocks = src.visual.transformer.resblocks, dst.visual.transformer.resblocks
    for d, s in ((0, 0), (1, 2)):  # first block, then the source's last (MaskCLIP value-path) block
        for (name, a), b in zip(d_blocks[d].state_dict().items(), s_blocks[s].state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    assert not torch.equal(d_blocks[1].mlp.c_fc.weight, s_blocks[1].mlp.c_fc.weight)
    assert dst.visual.positional_embedding.shape == (1 + 12 * 24, 32)
    torch.testing.assert_close(dst.visual.positional_embedding[0], src.visual.positional_embedding[0])


def test_transfer_refuses_incompatible_towers(tmp_path):
    from clip2scene_training.teacher.train import transfer_weights

    cfg = json.loads((CONFIG_DIR / "c2s-test-vit-p4.json").read_text())
    cfg["vision_cfg"]["patch_size"] = 3  # 8 is not a multiple of 3
    cfg["vision_cfg"]["image_size"] = [54, 99]
    path = tmp_path / "p3.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="block-summed"):
        transfer_weights(_model("c2s-test-vit-p8"), _model(str(path)))
    cfg["vision_cfg"].update(patch_size=4, image_size=[56, 100], layers=2)  # deeper than the 1-layer source
    path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="deeper"):
        transfer_weights(_model("c2s-test-vit-p8"), _model(str(path)))


def test_bundled_patch4_config_tiles_the_camera_image():
    cfg = json.loads((CONFIG_DIR / "c2s-tiny-vit-p4.json").read_text())["vision_cfg"]
    h, w = cfg["image_size"]
    assert (224 % h, 400 % w) == (0, 0) and (h // cfg["patch_size"], w // cfg["patch_size"]) == (14, 25)
