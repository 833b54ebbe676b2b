"""Label tables: nuScenes-lidarseg 32 -> 16 and SemanticKITTI raw -> 19 (0 = ignore in both).

Transcribed from the official nuscenes-devkit (``LidarsegClassMapper``) and semantic-kitti-api
(``config/semantic-kitti.yaml``); the tests check them against the shared real fixtures.
"""

from __future__ import annotations

import numpy as np

NUSCENES_CLASSES_16 = [
    "barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
    "traffic_cone", "trailer", "truck", "driveable_surface", "other_flat", "sidewalk", "terrain",
    "manmade", "vegetation",
]  # fmt: skip

NUSCENES_FINE_TO_COARSE = {
    "noise": "ignore", "animal": "ignore",
    "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.wheelchair": "ignore", "human.pedestrian.stroller": "ignore",
    "human.pedestrian.personal_mobility": "ignore", "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "movable_object.barrier": "barrier", "movable_object.debris": "ignore",
    "movable_object.pushable_pullable": "ignore", "movable_object.trafficcone": "traffic_cone",
    "static_object.bicycle_rack": "ignore",
    "vehicle.bicycle": "bicycle", "vehicle.bus.bendy": "bus", "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle", "vehicle.emergency.ambulance": "ignore",
    "vehicle.emergency.police": "ignore", "vehicle.motorcycle": "motorcycle", "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
    "flat.driveable_surface": "driveable_surface", "flat.other": "other_flat", "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain", "static.manmade": "manmade", "static.other": "ignore",
    "static.vegetation": "vegetation", "vehicle.ego": "ignore",
}  # fmt: skip

# nuScenes-lidarseg fine index order (devkit color map order).
NUSCENES_FINE_CLASSES_32 = [
    "noise", "animal", "human.pedestrian.adult", "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility", "human.pedestrian.police_officer", "human.pedestrian.stroller",
    "human.pedestrian.wheelchair", "movable_object.barrier", "movable_object.debris",
    "movable_object.pushable_pullable", "movable_object.trafficcone", "static_object.bicycle_rack",
    "vehicle.bicycle", "vehicle.bus.bendy", "vehicle.bus.rigid", "vehicle.car", "vehicle.construction",
    "vehicle.emergency.ambulance", "vehicle.emergency.police", "vehicle.motorcycle", "vehicle.trailer",
    "vehicle.truck", "flat.driveable_surface", "flat.other", "flat.sidewalk", "flat.terrain",
    "static.manmade", "static.other", "static.vegetation", "vehicle.ego",
]  # fmt: skip


def nuscenes_fine_to_coarse_lut(fine_names: list[str] | None = None) -> np.ndarray:
    """Lookup table fine index -> benchmark id (0 ignore, 1..16). ``fine_names`` is the dataset's
    ``category.json`` order by ``index`` (defaults to the standard 32-class order)."""
    names = fine_names or NUSCENES_FINE_CLASSES_32
    lut = np.zeros(max(len(names), 256), dtype=np.int64)
    for i, name in enumerate(names):
        coarse = NUSCENES_FINE_TO_COARSE.get(name)
        if coarse is None:
            raise KeyError(f"unknown nuScenes-lidarseg category {name!r}")
        lut[i] = 0 if coarse == "ignore" else NUSCENES_CLASSES_16.index(coarse) + 1
    return lut


SEMANTICKITTI_CLASSES_19 = [
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist", "road",
    "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
    "traffic-sign",
]  # fmt: skip

SEMANTICKITTI_LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11,
    49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7,
    254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}  # fmt: skip


def semantickitti_lut() -> np.ndarray:
    lut = np.zeros(260, dtype=np.int64)
    for raw, train in SEMANTICKITTI_LEARNING_MAP.items():
        lut[raw] = train
    return lut


def map_semantickitti(raw_labels: np.ndarray) -> np.ndarray:
    """uint32 .label values -> train ids 0..19 (semantic = low 16 bits; unknown raw ids -> 0)."""
    sem = (np.asarray(raw_labels).astype(np.uint32) & 0xFFFF).astype(np.int64)
    lut = semantickitti_lut()
    out = np.zeros_like(sem)
    known = sem < len(lut)
    out[known] = lut[sem[known]]
    return out


SCANNET_CLASSES_20 = [
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
    "other furniture",
]  # fmt: skip
# NYU40 ids used by the ScanNet 20-class benchmark, in class order.
SCANNET_VALID_NYU40 = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39]


def map_scannet_nyu40(nyu40: np.ndarray) -> np.ndarray:
    lut = np.zeros(256, dtype=np.int64)
    for i, raw in enumerate(SCANNET_VALID_NYU40):
        lut[raw] = i + 1
    ids = np.asarray(nyu40).astype(np.int64)
    return np.where((ids >= 0) & (ids < 256), lut[np.clip(ids, 0, 255)], 0)
