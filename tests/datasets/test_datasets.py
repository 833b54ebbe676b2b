"""Dataset adapters: real fixtures (skipped when absent), the synthetic world, a tiny ScanNet scene."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clip2scene_ros.datasets import PairingConfig, create_dataset
from clip2scene_ros.datasets.labels import (
    NUSCENES_CLASSES_16,
    NUSCENES_FINE_CLASSES_32,
    SEMANTICKITTI_CLASSES_19,
    SEMANTICKITTI_LEARNING_MAP,
    map_scannet_nyu40,
    map_semantickitti,
    nuscenes_fine_to_coarse_lut,
)

NO_OCCLUSION = {"occlusion": "none", "one_camera_per_point": False, "margin": 1.0}


@pytest.mark.real_data
def test_nuscenes_lidarseg_fixture_maps_32_to_16(real_data):
    d = real_data / "nuscenes-lidarseg-fixture"
    cls = json.loads((d / "nuscenes-lidarseg-classes.json").read_text())
    assert cls["fine_classes"] == NUSCENES_FINE_CLASSES_32
    assert cls["coarse_classes"][1:] == NUSCENES_CLASSES_16
    lut = nuscenes_fine_to_coarse_lut()
    assert lut[:32].tolist() == cls["fine_index_to_coarse_index"]
    fine = np.fromfile(d / "lidarseg/v1.0-trainval/5f6c1e0a0c3b444b97e78d2aa3fa34d2_lidarseg.bin", np.uint8)
    pts = np.fromfile(next((d / "samples/LIDAR_TOP").glob("*.bin")), np.float32).reshape(-1, 5)
    coarse = lut[fine]
    names = ["ignore"] + NUSCENES_CLASSES_16
    counts = {names[c]: int(n) for c, n in zip(*np.unique(coarse, return_counts=True), strict=True)}
    assert counts == {
        "car": 2,
        "driveable_surface": 15,
        "terrain": 1,
        "manmade": 12,
        "vegetation": 1,
        "ignore": 9,
    }
    # The ego-vehicle points (ignored) are the ones within 1.1 m of the sensor.
    assert (np.hypot(pts[coarse == 0, 0], pts[coarse == 0, 1]) < 1.1).all()


@pytest.mark.real_data
def test_semantickitti_fixture_learning_map(real_data):
    d = real_data / "semantickitti-fixture"
    ref = json.loads((d / "semantic-kitti-learning-map.json").read_text())
    assert {int(k): v for k, v in ref["learning_map"].items()} == SEMANTICKITTI_LEARNING_MAP
    assert ref["class_names_19"] == SEMANTICKITTI_CLASSES_19
    ds = create_dataset("semantickitti", root=d, sequences=["00"])
    s = ds[0]
    assert s.points.shape == (50, 4) and s.cameras == []
    names = ["ignore"] + SEMANTICKITTI_CLASSES_19
    counts = {names[c]: int(n) for c, n in zip(*np.unique(s.labels, return_counts=True), strict=True)}
    assert counts == {"ignore": 3, "building": 25, "vegetation": 17, "trunk": 3, "pole": 2}
    # Moving classes map to their static class; the instance bits are ignored.
    assert map_semantickitti(np.array([252 | (7 << 16), 259, 60, 1000])).tolist() == [1, 5, 9, 0]


@pytest.mark.real_data
def test_kitti_frame_through_semantickitti_adapter(real_data, tmp_path):
    src = real_data / "kitti-frame" / "training"
    seq = tmp_path / "sequences" / "00"
    for sub, name, ext in (("velodyne", "velodyne", "bin"), ("image_2", "image_2", "png")):
        (seq / sub).mkdir(parents=True)
        (seq / sub / f"000001.{ext}").symlink_to(src / name / f"000001.{ext}")
    (seq / "calib.txt").symlink_to(src / "calib" / "000001.txt")
    ds = create_dataset(
        "semantickitti",
        root=tmp_path,
        sequences=["00"],
        pairing={"min_depth": 0.1, "occlusion": "none", "one_camera_per_point": False},
    )
    s = ds[0]
    assert s.labels is None and s.cameras[0].image.shape == (375, 1242, 3)
    assert len(s.pairs) == 18630
    occluded = create_dataset("semantickitti", root=tmp_path, sequences=["00"], pairing={"min_depth": 0.1})[0]
    assert 0.6 * 18630 < len(occluded.pairs) < 18630


@pytest.mark.real_data
def test_nuscenes_adapter_on_real_keyframe(real_data):
    ds = create_dataset(
        "nuscenes",
        root=real_data / "nuscenes-sample",
        version="v1.0-mini",
        num_sweeps=3,
        pairing=NO_OCCLUSION,
    )
    assert len(ds) == 1
    s = ds[0]
    assert s.points.shape == (34688, 4) and 0 <= s.points[:, 3].min() and s.points[:, 3].max() <= 1.0
    assert [c.name for c in s.cameras] == [
        "CAM_FRONT",
        "CAM_FRONT_RIGHT",
        "CAM_BACK_RIGHT",
        "CAM_BACK",
        "CAM_BACK_LEFT",
        "CAM_FRONT_LEFT",
    ]
    assert all(c.image.shape == (900, 1600, 3) and c.image.dtype == np.uint8 for c in s.cameras)
    assert len(s.sweeps) == 1  # this copy has no earlier sweeps
    counts = np.bincount(s.pairs.camera_index, minlength=6).tolist()
    assert counts == [3053, 3076, 3369, 4820, 4089, 3696]  # the devkit's kept points per camera
    with pytest.raises(FileNotFoundError, match="pass version= one of"):
        create_dataset("nuscenes", root=real_data / "nuscenes-sample", version="v1.0-trainval")


def _tiny_sim():
    from clip2scene_ros.sim import SimConfig

    return SimConfig.default().with_overrides(
        **{
            "lidar.points_per_ring": 360,
            "cameras.width": 192,
            "cameras.height": 112,
            "cameras.names": ["cam_front", "cam_back"],
        }
    )


def test_synthetic_pairs_agree_with_rendered_labels():
    ds = create_dataset(
        "synthetic", split="train", num_scenes=1, key_frames_per_scene=1, num_sweeps=3, sim_config=_tiny_sim()
    )
    s = ds[0]
    assert [w.time_lag for w in s.sweeps] == pytest.approx([0.0, 0.1, 0.2])
    assert s.labels.min() >= 0 and s.labels.max() <= len(ds.class_names)
    for w in s.sweeps:  # key frame and both registered sweeps, against the key frame's label images
        p = w.pairs
        assert len(p) > 1000
        col, row = np.floor(p.uv).astype(int).T
        pix = np.array([s.cameras[c].labels[r, u] for c, u, r in zip(p.camera_index, col, row, strict=True)])
        assert (pix == w.labels[p.point_index]).mean() > 0.9
    # Without registration the last sweep would disagree far more often: registration matters.
    raw = s.sweeps[2].points.copy()
    assert not np.allclose(raw[:, :3], ds._frames[0][ds.index[0][1] - 2].points[:, :3])


def _tiny_scannet_scan(root, scene: str = "scene0000_00") -> None:
    """A wall of 100 points 2 m in front of a camera at the origin looking along +z (world = camera)."""
    d = root / "scans" / scene
    d.mkdir(parents=True)
    xs, ys = np.meshgrid(np.linspace(-0.5, 0.5, 10), np.linspace(-0.4, 0.4, 10))
    xyz = np.stack([xs.ravel(), ys.ravel(), np.full(100, 2.0)], 1)
    header = (
        "ply\nformat ascii 1.0\nelement vertex 100\nproperty float x\nproperty float y\nproperty float z\n"
    )
    rows = "\n".join(f"{x} {y} {z} 200 100 50" for x, y, z in xyz)
    (d / f"{scene}_vh_clean_2.ply").write_text(
        header + "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n" + rows + "\n"
    )
    lab = np.where(np.arange(100) < 50, 1, 5)  # NYU40 wall / chair
    (d / f"{scene}_vh_clean_2.labels.ply").write_text(
        header
        + "property ushort label\nend_header\n"
        + "\n".join(f"{x} {y} {z} {c}" for (x, y, z), c in zip(xyz, lab, strict=True))
        + "\n"
    )


def test_scannet_tiny_scene(tmp_path):
    from PIL import Image

    scene = "scene0000_00"
    _tiny_scannet_scan(tmp_path, scene)
    f = tmp_path / "frames" / scene
    for sub in ("color", "depth", "pose", "intrinsic"):
        (f / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(f / "color" / "0.jpg")
    Image.fromarray(np.full((30, 40), 2000, np.uint16)).save(f / "depth" / "0.png")
    np.savetxt(f / "pose" / "0.txt", np.eye(4))
    K = np.eye(4)
    K[:3, :3] = [[40, 0, 40], [0, 40, 30], [0, 0, 1]]
    np.savetxt(f / "intrinsic" / "intrinsic_color.txt", K)
    s = create_dataset("scannet", root=tmp_path)[0]
    assert s.points.shape == (100, 6) and s.points[0, 3] == pytest.approx(200 / 255)
    assert s.labels.tolist() == [1] * 50 + [5] * 50  # wall -> 1, chair -> 5
    assert len(s.pairs) == 100 and s.cameras[0].depth.shape == (60, 80)
    assert map_scannet_nyu40(np.array([39, 13, 0])).tolist() == [20, 0, 0]


def test_bad_inputs_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        create_dataset("kitti360")
    with pytest.raises(FileNotFoundError, match="no scans under"):
        create_dataset("semantickitti", root=tmp_path, sequences=["00"])
    with pytest.raises(ValueError, match="num_sweeps must be"):
        create_dataset("semantickitti", root=tmp_path, sequences=["00"], num_sweeps=0)
    with pytest.raises(TypeError):
        PairingConfig(bogus=1)


def test_scannet_sens_recordings_are_prepared_into_frames(tmp_path):
    """`clip2scene prepare scannet` turns a .sens recording into frames the loader pairs with points."""
    import io
    import zlib

    from PIL import Image

    from clip2scene_ros.cli.main import main
    from clip2scene_ros.datasets.scannet_sens import SensFrame, SensHeader, read_sens, write_sens

    scene = "scene0000_00"
    _tiny_scannet_scan(tmp_path, scene)
    K = np.eye(4)
    K[:3, :3] = [[40, 0, 40], [0, 40, 30], [0, 0, 1]]
    header = SensHeader("StructureSensor", K, np.eye(4), K / 2 + np.diag([0, 0, 0.5, 0.5]), np.eye(4), "jpeg",
                        "zlib_ushort", (80, 60), (40, 30), 1000.0, 3)  # fmt: skip
    frames = []
    for i in range(3):
        jpg = io.BytesIO()
        Image.fromarray(np.full((60, 80, 3), 40 * i, np.uint8)).save(jpg, format="JPEG")
        depth = np.full((30, 40), 2000 + i, "<u2")
        pose = np.eye(4)
        pose[0, 3] = 0.01 * i
        frames.append(SensFrame(pose, i, i, jpg.getvalue(), zlib.compress(depth.tobytes())))
    sens = tmp_path / "scans" / scene / f"{scene}.sens"
    write_sens(sens, header, frames)
    h, it = read_sens(sens)
    assert (h.color_size, h.depth_size, h.num_frames, len(list(it))) == ((80, 60), (40, 30), 3, 3)

    assert main(["prepare", "scannet", str(tmp_path), "--every", "2"]) == 0
    out = tmp_path / "frames" / scene
    assert sorted(p.name for p in (out / "pose").iterdir()) == ["0.txt", "2.txt"]
    np.testing.assert_allclose(np.loadtxt(out / "pose" / "2.txt")[0, 3], 0.02, atol=1e-6)
    assert np.asarray(Image.open(out / "depth" / "2.png")).tolist()[0][:2] == [2002, 2002]
    s = create_dataset("scannet", root=tmp_path, frame_stride=1)[0]
    assert len(s.cameras) == 2 and s.cameras[0].depth.shape == (60, 80)
    assert s.pairs.seen_mask(100).all() and set(s.pairs.camera_index.tolist()) == {0, 1}

    # a truncated recording is reported by name and the command fails without a traceback
    sens.write_bytes(sens.read_bytes()[:-100])
    assert main(["prepare", "scannet", str(tmp_path), "--overwrite"]) == 1
