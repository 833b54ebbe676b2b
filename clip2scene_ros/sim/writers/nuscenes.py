"""Write simulated drives in the official nuScenes layout (devkit-loadable, with lidarseg and sweeps).

::

    DIR/v1.0-trainval/{category,attribute,visibility,instance,sensor,calibrated_sensor,ego_pose,log,
                       scene,sample,sample_data,sample_annotation,map,lidarseg}.json
    DIR/samples/LIDAR_TOP/<scene>__LIDAR_TOP__<us>.pcd.bin     key frames, 5 x float32 (x y z i ring)
    DIR/samples/CAM_FRONT/<scene>__CAM_FRONT__<us>.jpg ...     key frames, six cameras
    DIR/sweeps/LIDAR_TOP/...                                   LiDAR frames between key frames
    DIR/lidarseg/v1.0-trainval/<lidar sample_data token>_lidarseg.bin   uint8 nuScenes 32-class index
    DIR/maps/<token>.png                                        placeholder semantic prior (1 px)

Key frames are frames ``lead_in + k * keyframe_every``; every other frame becomes a LiDAR sweep
linked by ``prev``/``next`` exactly as in nuScenes, so multi-sweep loaders (3 sweeps registered by
ego poses) work from the first key frame on. Tokens are md5 digests of the seed and record name,
so the same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from clip2scene_ros.geometry.transforms import matrix_to_quaternion
from clip2scene_ros.sim import taxonomy as C
from clip2scene_ros.sim.frame import Frame

LIDAR_CHANNEL = "LIDAR_TOP"
# Fine nuScenes-lidarseg classes in index order (nuscenes-devkit color_map / lidarseg category index).
NUSCENES32 = (
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker", "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer", "human.pedestrian.stroller", "human.pedestrian.wheelchair",
    "movable_object.barrier", "movable_object.debris", "movable_object.pushable_pullable",
    "movable_object.trafficcone", "static_object.bicycle_rack", "vehicle.bicycle", "vehicle.bus.bendy",
    "vehicle.bus.rigid", "vehicle.car", "vehicle.construction", "vehicle.emergency.ambulance",
    "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer", "vehicle.truck",
    "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain", "static.manmade",
    "static.other", "static.vegetation", "vehicle.ego",
)  # fmt: skip
# classes that get 3D boxes (sample_annotation), as in nuScenes detection; poles/signs are "manmade"
_ANNOTATED = {C.CAR, C.TRUCK, C.BUS, C.MOTORCYCLE, C.BICYCLE, C.PEDESTRIAN, C.TRAFFIC_CONE, C.BARRIER}
_VISIBILITY = [
    {"description": "visibility of whole object is between 0 and 40%", "token": "1", "level": "v0-40"},
    {"description": "visibility of whole object is between 40 and 60%", "token": "2", "level": "v40-60"},
    {"description": "visibility of whole object is between 60 and 80%", "token": "3", "level": "v60-80"},
    {"description": "visibility of whole object is between 80 and 100%", "token": "4", "level": "v80-100"},
]


def channel_name(camera_name: str) -> str:
    """``cam_front_left`` -> ``CAM_FRONT_LEFT``."""
    return camera_name.upper()


def token(*parts: object) -> str:
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def is_keyframe(index: int, keyframe_every: int, lead_in: int) -> bool:
    return index >= lead_in and (index - lead_in) % keyframe_every == 0


def _pose_record(tok: str, t: np.ndarray, stamp_us: int | None = None) -> dict:
    rec = {"token": tok}
    if stamp_us is not None:
        rec["timestamp"] = stamp_us
    rec["rotation"] = [float(x) for x in matrix_to_quaternion(t[:3, :3])]
    rec["translation"] = [float(x) for x in t[:3, 3]]
    return rec


class NuScenesWriter:
    """Accumulates scenes and writes the tables on ``close()`` (use as a context manager)."""

    def __init__(self, out_dir: str | Path, version: str = "v1.0-trainval", jpeg_quality: int = 95) -> None:
        if not version.startswith("v1.0-"):
            raise ValueError(f"nuScenes version {version!r} must look like 'v1.0-<name>' (e.g. v1.0-trainval)")
        self.root = Path(out_dir)
        self.version = version
        self.jpeg_quality = int(jpeg_quality)
        self.fine_lut = C.load_class_map("synthetic_to_nuscenes32")["lut"].astype(np.uint8)
        self.tables: dict[str, list[dict]] = {
            k: []
            for k in (
                "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose",
                "log", "scene", "sample", "sample_data", "sample_annotation", "map", "lidarseg",
            )
        }  # fmt: skip
        self.tables["category"] = [
            {"token": token("category", n), "name": n, "description": f"nuScenes class {n}", "index": i}
            for i, n in enumerate(NUSCENES32)
        ]
        self.tables["visibility"] = list(_VISIBILITY)
        self._sensors: dict[str, str] = {}
        (self.root / "lidarseg" / version).mkdir(parents=True, exist_ok=True)
        (self.root / version).mkdir(parents=True, exist_ok=True)
        self._map_logs: list[str] = []

    def _sensor(self, channel: str, modality: str) -> str:
        if channel not in self._sensors:
            tok = token("sensor", channel)
            self._sensors[channel] = tok
            self.tables["sensor"].append({"token": tok, "channel": channel, "modality": modality})
        return self._sensors[channel]

    def add_scene(
        self,
        frames: Iterable[Frame],
        seed: int,
        keyframe_every: int = 2,
        lead_in: int = 2,
        name: str | None = None,
        description: str = "",
    ) -> dict:
        """Write one drive; returns its scene record."""
        if keyframe_every < 1 or lead_in < 0:
            raise ValueError("keyframe_every must be >= 1 and lead_in >= 0")
        name = name or f"synth-{seed:06d}"
        scene_tok = token(seed, "scene", name)
        log_tok = token(seed, "log", name)
        self.tables["log"].append(
            {"token": log_tok, "logfile": name, "vehicle": "synthetic", "date_captured": "2020-09-13",
             "location": "synthetic-city"}
        )  # fmt: skip
        self._map_logs.append(log_tok)
        calib: dict[str, str] = {}
        last_sd: dict[str, dict] = {}  # channel -> previous sample_data record (prev/next links)
        samples: list[dict] = []
        pending_sweeps: list[dict] = []  # sweeps waiting for the next key frame's sample token
        inst_last: dict[int, dict] = {}
        inst_rec: dict[int, dict] = {}
        for frame in frames:
            key = is_keyframe(frame.index, keyframe_every, lead_in)
            stamp_us = frame.timestamp_ns // 1000
            sample_tok = ""
            if key:
                if not frame.cameras:
                    raise ValueError(
                        f"frame {frame.index} is a key frame but has no camera images; generate with "
                        "cameras on key frames (see clip2scene_ros.sim.writers.nuscenes.is_keyframe)"
                    )
                sample_tok = token(seed, "sample", frame.index)
                rec = {"token": sample_tok, "timestamp": stamp_us, "prev": samples[-1]["token"] if samples else "",
                       "next": "", "scene_token": scene_tok}  # fmt: skip
                if samples:
                    samples[-1]["next"] = sample_tok
                samples.append(rec)
                for sw in pending_sweeps:
                    sw["sample_token"] = sample_tok
                pending_sweeps.clear()
            folder = "samples" if key else "sweeps"
            # LiDAR
            if LIDAR_CHANNEL not in calib:
                calib[LIDAR_CHANNEL] = token(seed, "calib", LIDAR_CHANNEL)
                self.tables["calibrated_sensor"].append(
                    {**_pose_record(calib[LIDAR_CHANNEL], frame.lidar_to_ego),
                     "sensor_token": self._sensor(LIDAR_CHANNEL, "lidar"), "camera_intrinsic": []}
                )  # fmt: skip
            fname = f"{folder}/{LIDAR_CHANNEL}/{name}__{LIDAR_CHANNEL}__{stamp_us}.pcd.bin"
            pts = np.zeros((len(frame.points), 5), np.float32)
            pts[:, :4] = frame.points
            pts[:, 4] = frame.rings if frame.rings is not None else 0
            self._write_bytes(fname, pts.tobytes())
            sd = self._sample_data(seed, frame, LIDAR_CHANNEL, stamp_us, fname, "pcd", key, sample_tok,
                                   calib[LIDAR_CHANNEL], last_sd, 0, 0)  # fmt: skip
            if not key:
                pending_sweeps.append(sd)
            else:
                seg_name = f"lidarseg/{self.version}/{sd['token']}_lidarseg.bin"
                self._write_bytes(seg_name, self.fine_lut[frame.labels].tobytes())
                self.tables["lidarseg"].append(
                    # as in nuScenes, a lidarseg record's token is its LiDAR sample_data token
                    {"token": sd["token"], "sample_data_token": sd["token"], "filename": seg_name}
                )
                self._annotations(seed, frame, sample_tok, inst_last, inst_rec)
            # cameras
            for cam in frame.cameras:
                ch = channel_name(cam.name)
                if ch not in calib:
                    calib[ch] = token(seed, "calib", ch)
                    self.tables["calibrated_sensor"].append(
                        {**_pose_record(calib[ch], cam.cam_to_ego), "sensor_token": self._sensor(ch, "camera"),
                         "camera_intrinsic": [[float(v) for v in row] for row in cam.K]}
                    )  # fmt: skip
                cstamp = cam.timestamp_ns // 1000
                fname = f"{folder}/{ch}/{name}__{ch}__{cstamp}.jpg"
                ok, buf = cv2.imencode(".jpg", cam.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if not ok:
                    raise RuntimeError(f"JPEG encoding failed for {fname}")
                self._write_bytes(fname, buf.tobytes())
                sd = self._sample_data(seed, frame, ch, cstamp, fname, "jpg", key, sample_tok, calib[ch], last_sd,
                                       cam.width, cam.height)  # fmt: skip
                if not key:
                    pending_sweeps.append(sd)
        if not samples:
            raise ValueError(f"scene {name} has no key frame: use at least lead_in + 1 = {lead_in + 1} frames")
        for sw in pending_sweeps:  # sweeps after the last key frame belong to it
            sw["sample_token"] = samples[-1]["token"]
        self.tables["sample"].extend(samples)
        self.tables["instance"].extend(inst_rec.values())
        scene = {
            "token": scene_tok, "log_token": log_tok, "nbr_samples": len(samples),
            "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
            "name": name, "description": description or f"synthetic drive, seed {seed}",
        }  # fmt: skip
        self.tables["scene"].append(scene)
        return scene

    def _sample_data(self, seed, frame, channel, stamp_us, fname, fmt, key, sample_tok, calib_tok, last_sd, w, h):
        tok = token(seed, "sample_data", channel, frame.index)
        ego = frame.ego_pose
        self.tables["ego_pose"].append(_pose_record(tok, ego, stamp_us))
        prev = last_sd.get(channel)
        rec = {
            "token": tok, "sample_token": sample_tok, "ego_pose_token": tok, "calibrated_sensor_token": calib_tok,
            "timestamp": stamp_us, "fileformat": fmt, "is_key_frame": bool(key), "height": int(h), "width": int(w),
            "filename": fname, "prev": prev["token"] if prev else "", "next": "",
        }  # fmt: skip
        if prev:
            prev["next"] = tok
        last_sd[channel] = rec
        self.tables["sample_data"].append(rec)
        return rec

    def _annotations(self, seed, frame: Frame, sample_tok: str, inst_last: dict, inst_rec: dict) -> None:
        counts = np.bincount(frame.instances[frame.instances > 0]) if len(frame.instances) else np.zeros(1)
        ego_xy = frame.ego_pose[:2, 3]
        for obj in frame.objects:
            if obj.label not in _ANNOTATED or np.linalg.norm(obj.pose[:2, 3] - ego_xy) > 50.0:
                continue
            n_pts = int(counts[obj.instance]) if obj.instance < len(counts) else 0
            fine = NUSCENES32[int(self.fine_lut[obj.label])]
            if obj.instance not in inst_rec:
                inst_rec[obj.instance] = {
                    "token": token(seed, "instance", obj.instance), "category_token": token("category", fine),
                    "nbr_annotations": 0, "first_annotation_token": "", "last_annotation_token": "",
                }  # fmt: skip
            inst = inst_rec[obj.instance]
            tok = token(seed, "ann", obj.instance, frame.index)
            prev = inst_last.get(obj.instance)
            length, width, height = obj.size
            yaw = math.atan2(obj.pose[1, 0], obj.pose[0, 0])
            rot = np.eye(3)
            rot[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
            ann = {
                "token": tok, "sample_token": sample_tok, "instance_token": inst["token"],
                "visibility_token": "4", "attribute_tokens": [],
                "translation": [float(x) for x in obj.pose[:3, 3]], "size": [width, length, height],
                "rotation": [float(x) for x in matrix_to_quaternion(rot)], "prev": prev["token"] if prev else "",
                "next": "", "num_lidar_pts": n_pts, "num_radar_pts": 0,
            }  # fmt: skip
            if prev:
                prev["next"] = tok
            else:
                inst["first_annotation_token"] = tok
            inst["last_annotation_token"] = tok
            inst["nbr_annotations"] += 1
            inst_last[obj.instance] = ann
            self.tables["sample_annotation"].append(ann)

    def _write_bytes(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def close(self) -> None:
        if not self.tables["scene"]:
            raise ValueError("no scene was added; nothing to write")
        map_tok = token("map", self.version)
        map_file = f"maps/{map_tok}.png"
        ok, buf = cv2.imencode(".png", np.zeros((1, 1), np.uint8))
        self._write_bytes(map_file, buf.tobytes())
        self.tables["map"] = [
            {"token": map_tok, "log_tokens": list(self._map_logs), "category": "semantic_prior", "filename": map_file}
        ]
        for name, rows in self.tables.items():
            text = json.dumps(rows, indent=0)
            (self.root / self.version / f"{name}.json").write_text(text)

    def __enter__(self) -> NuScenesWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
