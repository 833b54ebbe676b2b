"""Dataset layouts -> rosbag2 (mcap) with the node's topic contract, for replay evaluation.

- nuScenes (official devkit layout): one message set per key frame (lidarseg exists on key frames
  only): ``/lidar/points`` (x, y, z, intensity as recorded), ``/lidar/gt_labels`` (the 16-class
  benchmark ids, 0 = ignore), the six cameras, ``/tf_static`` from the calibration and ``/tf`` from
  the ego poses.
- SemanticKITTI (``sequences/<seq>/velodyne``, ``labels``, ``calib.txt``, ``image_2``): one
  message set per scan; labels as the 19 train ids; LiDAR frame = the velodyne frame; poses are
  not converted (``/tf`` is identity).

Reading uses the dataset adapters of ``clip2scene_ros.datasets``, so the label tables and
calibration maths are the ones training and offline evaluation use. The bag records the
label taxonomy in its ``custom_data`` (``clip2scene.gt_taxonomy``), which replay reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clip2scene_ros.replay.bag import GT_TAXONOMY_KEY

FORMATS = ("nuscenes", "semantickitti")
TAXONOMY = {"nuscenes": "nuscenes16", "semantickitti": "semantickitti19"}


def _dataset_class(fmt: str):
    if fmt == "nuscenes":
        from clip2scene_ros.datasets.nuscenes import NuScenesDataset

        return NuScenesDataset
    from clip2scene_ros.datasets.semantickitti import SemanticKITTIDataset

    return SemanticKITTIDataset


def _frame(index: int, stamp_ns: int, sample, lidar_to_ego: np.ndarray, ego_pose: np.ndarray):
    from clip2scene_ros.sim.frame import CameraImage, Frame

    cams = []
    for c in sample.cameras:
        h, w = c.image.shape[:2]
        cam_to_ego = lidar_to_ego @ np.linalg.inv(np.asarray(c.T_cam_from_lidar, dtype=np.float64))
        name = c.name.lower()
        cams.append(CameraImage(name, stamp_ns, np.ascontiguousarray(c.image), np.zeros((h, w), np.uint8),
                                np.zeros((h, w), np.float32), np.asarray(c.K, np.float64), cam_to_ego))  # fmt: skip
    pts = np.ascontiguousarray(sample.points[:, :4], dtype=np.float32)
    labels = np.zeros(len(pts), np.uint16) if sample.labels is None else sample.labels.astype(np.uint16)
    return Frame(index, stamp_ns, ego_pose, lidar_to_ego, pts, labels, np.zeros(len(pts), np.int32), cams)


def _progress(it, total: int, enabled: bool, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="frame", leave=False)


def _set_taxonomy(bag: Path, taxonomy: str) -> None:
    """Record the label taxonomy in metadata.yaml's custom_data (read by replay)."""
    import yaml

    meta_path = bag / "metadata.yaml"
    data = yaml.safe_load(meta_path.read_text())
    info = data["rosbag2_bagfile_information"]
    info["custom_data"] = {**(info.get("custom_data") or {}), GT_TAXONOMY_KEY: taxonomy}
    meta_path.write_text(yaml.safe_dump(data, sort_keys=False))


def convert_nuscenes(
    root: str | Path,
    out_bag: str | Path,
    *,
    version: str = "v1.0-trainval",
    scenes: list[str] | None = None,
    max_frames: int = 0,
    cameras: bool = True,
    progress: bool = True,
) -> Path:
    """nuScenes key frames (optionally of some scenes) -> a rosbag2 folder ``out_bag``."""
    from clip2scene_ros.geometry.calibration import nuscenes_record_transform
    from clip2scene_ros.sim.writers.rosbag import write_rosbag

    ds = _dataset_class("nuscenes")(root, version=version, scenes=scenes, num_sweeps=1, load_images=cameras,
                                     intensity_scale=1.0)  # fmt: skip
    if not cameras:
        ds.cameras = ()
    n = len(ds) if not max_frames else min(len(ds), max_frames)
    if n == 0:
        raise ValueError(f"no nuScenes key frames with LIDAR_TOP under {root} ({version}, scenes={scenes})")
    with_labels = bool(ds.lidarseg)

    def frames():
        for i in range(n):
            s = ds.load(i)
            lidar = ds.tables["sample_data"][s.meta["lidar_token"]]
            cs = ds.tables["calibrated_sensor"][lidar["calibrated_sensor_token"]]
            pose = ds.tables["ego_pose"][lidar["ego_pose_token"]]
            yield _frame(i, int(lidar["timestamp"]) * 1000, s, nuscenes_record_transform(cs),
                         nuscenes_record_transform(pose))  # fmt: skip

    bag = write_rosbag(_progress(frames(), n, progress, "nuscenes -> rosbag2"), out_bag, with_labels=with_labels)
    if with_labels:
        _set_taxonomy(bag, TAXONOMY["nuscenes"])
    return bag


def convert_semantickitti(
    root: str | Path,
    out_bag: str | Path,
    *,
    sequence: str = "08",
    max_frames: int = 0,
    cameras: bool = True,
    period_s: float = 0.1,
    progress: bool = True,
) -> Path:
    """One SemanticKITTI sequence -> a rosbag2 folder ``out_bag`` (stamps from times.txt when present)."""
    from clip2scene_ros.sim.writers.rosbag import write_rosbag

    ds = _dataset_class("semantickitti")(root, sequences=[sequence], num_sweeps=1, load_images=cameras)
    n = len(ds) if not max_frames else min(len(ds), max_frames)
    seq_dir = ds.frames[0][0]
    times = None
    if (seq_dir / "times.txt").is_file():
        times = np.loadtxt(seq_dir / "times.txt", ndmin=1)
    t0 = 1_600_000_000 * 10**9  # an arbitrary epoch: KITTI times are relative to the sequence start
    has_labels = (seq_dir / "labels").is_dir()

    def frames():
        for i in range(n):
            s = ds.load(i)
            if not cameras:
                s.cameras = []
            rel = float(times[i]) if times is not None and i < len(times) else i * period_s
            yield _frame(i, t0 + int(round(rel * 1e9)), s, np.eye(4), np.eye(4))

    bag = write_rosbag(_progress(frames(), n, progress, "semantickitti -> rosbag2"), out_bag, with_labels=has_labels)
    if has_labels:
        _set_taxonomy(bag, TAXONOMY["semantickitti"])
    return bag


def convert(fmt: str, source: str | Path, out_bag: str | Path, **kwargs) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format '{fmt}'; choose one of {', '.join(FORMATS)}")
    fn = convert_nuscenes if fmt == "nuscenes" else convert_semantickitti
    return fn(source, out_bag, **kwargs)
