"""Label ids of the synthetic world (``config/vocab/synthetic.yaml``) and class-mapping tables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

# Fixed ids (0 = unlabelled: sky / no return). Must equal the order in config/vocab/synthetic.yaml;
# `load_class_names()` checks that at import of the writers.
UNLABELLED = 0
ROAD = 1
SIDEWALK = 2
TERRAIN = 3
BUILDING = 4
VEGETATION = 5
CAR = 6
TRUCK = 7
BUS = 8
MOTORCYCLE = 9
BICYCLE = 10
PEDESTRIAN = 11
POLE = 12
TRAFFIC_SIGN = 13
TRAFFIC_CONE = 14
BARRIER = 15

CLASS_NAMES = (
    "unlabelled",
    "road",
    "sidewalk",
    "terrain",
    "building",
    "vegetation",
    "car",
    "truck",
    "bus",
    "motorcycle",
    "bicycle",
    "pedestrian",
    "pole",
    "traffic_sign",
    "traffic_cone",
    "barrier",
)
NUM_CLASSES = len(CLASS_NAMES)  # including 0
THING_CLASSES = frozenset({CAR, TRUCK, BUS, MOTORCYCLE, BICYCLE, PEDESTRIAN, POLE, TRAFFIC_SIGN, TRAFFIC_CONE, BARRIER})


def _config_dir() -> Path:
    from clip2scene_ros.resources import share_dir

    return share_dir() / "config"


@lru_cache(maxsize=1)
def load_class_names() -> tuple[str, ...]:
    """Class names from ``config/vocab/synthetic.yaml`` (index = id), checked against the constants."""
    path = _config_dir() / "vocab" / "synthetic.yaml"
    with open(path) as f:
        data = yaml.safe_load(f)
    names = ("unlabelled",) + tuple(c["name"] for c in data["classes"])
    if names != CLASS_NAMES:
        raise RuntimeError(f"{path} no longer matches clip2scene_ros.sim.taxonomy.CLASS_NAMES: {names}")
    return names


@lru_cache(maxsize=8)
def load_class_map(name: str) -> dict:
    """A mapping table from ``config/class_maps/<name>.yaml`` (e.g. ``synthetic_to_nuscenes16``).

    Returns the parsed YAML with an extra ``lut`` entry: a numpy array mapping source id -> target id.
    """
    path = _config_dir() / "class_maps" / f"{name}.yaml"
    if not path.is_file():
        avail = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"class map {name!r} not found in {path.parent}; available: {avail}")
    with open(path) as f:
        data = yaml.safe_load(f)
    mapping = {int(k): int(v) for k, v in data["map"].items()}
    lut = np.full(max(mapping) + 1, int(data.get("ignore_index", 0)), dtype=np.int64)
    for k, v in mapping.items():
        lut[k] = v
    return {**data, "lut": lut}


def map_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Map an array of source ids through the class map ``name`` (unknown ids -> its ignore index)."""
    table = load_class_map(name)
    lut = table["lut"]
    labels = np.asarray(labels)
    out = np.full(labels.shape, lut[0] if len(lut) else 0, dtype=lut.dtype)
    ok = (labels >= 0) & (labels < len(lut))
    out[ok] = lut[labels[ok]]
    out[~ok] = int(table.get("ignore_index", 0))
    return out
