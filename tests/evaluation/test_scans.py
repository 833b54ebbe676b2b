"""`clip2scene evaluate scans`: both layouts, the learning map, frames and the CLI's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clip2scene_ros.evaluation import scans as S
from clip2scene_ros.sim.taxonomy import load_class_map, map_labels


def _write_native(root, seq: str, frame: str, points: np.ndarray, raw: np.ndarray, instance: int = 0) -> None:
    d = root / "sequences" / seq
    (d / "velodyne").mkdir(parents=True, exist_ok=True)
    (d / "labels").mkdir(parents=True, exist_ok=True)
    points.astype(np.float32).tofile(d / "velodyne" / f"{frame}.bin")
    ((raw.astype(np.uint32) & 0xFFFF) | np.uint32(instance << 16)).tofile(d / "labels" / f"{frame}.label")


def _street(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A KITTI-frame toy street: road plane 1.73 m below the sensor, a wall at y = 6 m."""
    rng = np.random.default_rng(seed)
    road = np.c_[rng.uniform(-20, 20, n), rng.uniform(-4, 4, n), np.full(n, -1.73)]
    wall = np.c_[rng.uniform(-20, 20, n // 2), np.full(n // 2, 6.0), rng.uniform(-1.7, 3.0, n // 2)]
    pts = np.r_[road, wall]
    pts = np.c_[pts, rng.uniform(0, 1, len(pts))].astype(np.float32)
    raw = np.r_[np.full(n, 40), np.full(n // 2, 50)]  # road, building
    raw[:5] = 252  # moving-car -> car
    raw[5:10] = 1  # outlier -> ignore
    return pts, raw


def test_learning_map_matches_the_public_definition(real_data):
    official = json.loads((real_data / "semantickitti-fixture" / "semantic-kitti-learning-map.json").read_text())
    table = load_class_map("semantickitti_raw_to_semantickitti19")
    assert {int(k): int(v) for k, v in official["learning_map"].items()} == {
        int(k): int(v) for k, v in table["map"].items()
    }
    # the fixture's 50 real points: raw labels through our map equal the fixture's train ids
    seq = real_data / "semantickitti-fixture" / "sequences" / "00"
    scan = next(S.iter_scans(seq))
    raw = np.fromfile(seq / "labels" / "000000.label", dtype=np.uint32) & 0xFFFF
    np.testing.assert_array_equal(scan.labels, map_labels(raw.astype(np.int64), "semantickitti_raw_to_semantickitti19"))
    assert len(scan.points) == len(raw)


def test_native_layout_reader(tmp_path):
    pts, raw = _street()
    _write_native(tmp_path, "08", "000000", pts, raw, instance=7)
    _write_native(tmp_path, "08", "000005", pts[:100], raw[:100])
    _write_native(tmp_path, "09", "000000", pts[:50], raw[:50])
    (tmp_path / "sequences" / "09" / "labels" / "000000.label").unlink()  # unlabelled scan: skipped
    got = list(S.iter_scans(tmp_path))
    assert [s.name for s in got] == ["08/000000", "08/000005"]
    s = got[0]
    assert s.points.shape == (len(pts), 4) and s.labels.dtype == np.int64
    assert (s.labels[:5] == 1).all() and (s.labels[5:10] == 0).all()  # moving-car -> car, outlier -> ignore
    assert (s.labels[10:3000] == 9).all() and (s.labels[3000:] == 13).all()
    # the same folder by sequence, every 2nd, limit
    assert [x.name for x in S.iter_scans(tmp_path / "sequences" / "08", every=2)] == ["08/000000"]
    assert [x.name for x in S.iter_scans(tmp_path, sequences=["08"], limit=1)] == ["08/000000"]
    with pytest.raises(S.ScanLayoutError, match="no scans found"):
        list(S.iter_scans(tmp_path / "sequences" / "08" / "labels"))
    (tmp_path / "sequences" / "08" / "velodyne" / "000005.bin").write_bytes(b"\0" * 10)
    with pytest.raises(S.ScanLayoutError, match="multiple of 16"):
        list(S.iter_scans(tmp_path))


def test_frames():
    p = np.array([[10.0, 2.0, -1.73, 0.5]], np.float32)
    base = S.kitti_to_model_frame(p, {"name": "base_link"})
    np.testing.assert_allclose(base, [[10.0, 2.0, 0.0, 0.5]], atol=1e-6)
    top = S.kitti_to_model_frame(p, S.LEGACY_FRAME)  # x right, y forward, 0.94 m ahead, mounted at 1.84 m
    np.testing.assert_allclose(top, [[-2.0, 10.0 - 0.943713, -1.84023, 0.5]], atol=1e-5)
    assert (
        S.model_frame({})["name"] == "lidar_top"
        and S.model_frame({"frame": {"name": "base_link"}})["name"] == "base_link"
    )


def test_cli_on_a_fake_native_dataset(tmp_path, capsys):
    from clip2scene_ros.cli.main import main

    pts, raw = _street(1500)
    _write_native(tmp_path / "kitti", "00", "000000", pts, raw)
    rc = main(["evaluate", "scans", str(tmp_path / "kitti"), "--out", str(tmp_path / "out"), "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["scans"] == 1 and summary["points"] == len(pts)
    assert set(summary["per_class_iou"]) == {"car", "road", "building"}  # present and mapped
    assert 0 <= summary["miou"] <= 100
    # per range: every labelled point in exactly one bin; each bin scores only its own classes
    by_range = summary["by_range"]
    assert list(by_range) == ["0-10 m", "10-20 m", "20-40 m", ">= 40 m"]
    assert sum(r["points"] for r in by_range.values()) == len(pts) - 5  # 5 outliers are ignored
    near = np.linalg.norm(pts[:, :2], axis=1) < 10
    assert by_range["0-10 m"]["points"] == int((near & (raw != 1)).sum())
    assert by_range[">= 40 m"] == {"points": 0, "miou": None, "per_class_iou": {}}
    assert set(by_range["0-10 m"]["per_class_iou"]) <= set(summary["per_class_iou"])
    assert "| range from the sensor |" in out
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["miou"] == summary["miou"]
    # where each class's points went: shares of that class, never itself, and a picture of it
    for gt, went in summary["confused_with"].items():
        assert gt not in went and all(0 < v <= 100 for v in went.values())
        if gt in summary["per_class_iou"] and summary["per_class_iou"][gt] == 100:
            assert went == {}
    assert set(summary["confused_with"]) == {"car", "road", "building"}
    assert "| mostly predicted instead |" in out
    png = tmp_path / "out" / "confusion.png"
    assert summary["confusion_png"] == str(png) and png.stat().st_size > 1000


def test_cli_on_the_real_scans(real_data, tmp_path, capsys):
    from clip2scene_ros.cli.main import main

    path = real_data / "semantickitti-scans"
    rc = main(["evaluate", "scans", str(path), "--out", str(tmp_path), "--bev-scans", "1", "--threads", "1"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["scans"] == 2 and summary["points"] == 85962 + 86139
    # classes present in the two scans that the synthetic vocabulary maps; trunk is present, unmapped
    assert {"road", "sidewalk", "building", "vegetation", "terrain", "car", "fence", "pole"} <= set(
        summary["per_class_iou"]
    )
    assert "trunk" not in summary["per_class_iou"] and summary["unmapped_classes_present"]["trunk"] > 0
    assert len(list(tmp_path.glob("bev_*.png"))) == 1


def test_height_model_needs_no_intensity(tmp_path, capsys, caplog):
    """A base-frame student reading height (no intensity) scores clouds without an intensity field
    without any filled-in column (and without the warning that filling causes)."""
    import torch

    from clip2scene_ros.cli.main import main
    from clip2scene_ros.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("minkunet18_tiny", embed_dim=64, in_features=["z"], voxel_size=0.2)
    extra = {"vocabulary": "synthetic", "frame": {"name": "base_link"}}
    save_checkpoint(tmp_path / "student", model, extra)
    pts, raw = _street(800)
    scans = tmp_path / "scans"
    (scans / "points").mkdir(parents=True)
    (scans / "labels").mkdir()
    np.save(scans / "points" / "a.npy", pts[:, :3])  # x y z only
    np.save(scans / "labels" / "a.npy", map_labels(raw, "semantickitti_raw_to_semantickitti19"))
    with caplog.at_level("WARNING"):
        rc = main(["evaluate", "scans", str(scans), "--checkpoint", str(tmp_path / "student"),
                   "--out", str(tmp_path / "out"), "--threads", "1"])  # fmt: skip
    assert rc == 0
    assert "filled with 0" not in caplog.text
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frame"] == "base_link" and summary["points"] == len(pts)
