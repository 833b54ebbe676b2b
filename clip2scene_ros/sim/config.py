"""Typed configuration of the synthetic world (``config/sim/default.yaml``), validated on load."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

# nuScenes-like six-camera rig (mount positions and yaw in the ego frame rounded from the public
# nuScenes calibration; x forward, y left, z up). Horizontal FOV: 1266 px focal at 1600 px width
# for the side/front cameras (~64.6 deg), 809 px for the back camera (~89.3 deg).
NUSCENES_CAMERA_NAMES = (
    "cam_front",
    "cam_front_right",
    "cam_back_right",
    "cam_back",
    "cam_back_left",
    "cam_front_left",
)
_NUSCENES_RIG = {
    "cam_front": ((1.70, 0.016, 1.51), 0.0, 64.6),
    "cam_front_right": ((1.55, -0.49, 1.50), -55.0, 64.6),
    "cam_back_right": ((1.05, -0.48, 1.59), -110.0, 64.6),
    "cam_back": ((0.03, 0.0, 1.58), 180.0, 89.3),
    "cam_back_left": ((1.05, 0.48, 1.56), 110.0, 64.6),
    "cam_front_left": ((1.52, 0.49, 1.51), 55.0, 64.6),
}


class SimConfigError(ValueError):
    """A bad simulator configuration; the message names the offending key and the fix."""


@dataclass
class LidarConfig:
    beams: int = 32
    vertical_fov_deg: tuple[float, float] = (-30.67, 10.67)  # HDL-32E as on the nuScenes car
    points_per_ring: int = 1084  # ~0.33 deg azimuth steps, ~34.7k rays per sweep at 32 beams
    min_range_m: float = 1.0
    max_range_m: float = 70.0
    range_noise_std_m: float = 0.02
    dropout: float = 0.02  # probability a return is lost (higher for dark, far surfaces)
    translation: tuple[float, float, float] = (0.943713, 0.0, 1.84023)  # nuScenes LIDAR_TOP
    yaw_deg: float = -90.0  # nuScenes LIDAR_TOP: sensor x points to the car's right, y forward
    # A real sensor's beam table by name (sim/sensors.py: hdl64e_kitti, hdl32e, vlp16, os1_64,
    # os1_128); empty = `beams` spaced evenly over vertical_fov_deg.
    beam_table: str = ""
    pitch_deg: float = 0.0  # mount tilt about the sensor's y axis (positive: nose down)
    # keep probability of a return on the lowest rows, the middle rows, the highest rows (ray drop
    # beyond the physical misses; sim/sensors.row_keep_probability)
    row_keep: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity: str = "reflectance"  # reflectance (material x incidence) or none (column of zeros)
    # Sensor randomisation: each drive (seed) picks one of these presets (sim/sensors.PRESETS),
    # then jitters the mount height and pitch uniformly by +- these amounts.
    randomize: list[str] = field(default_factory=list)
    mount_height_jitter_m: float = 0.0
    mount_pitch_jitter_deg: float = 0.0
    # Factory calibration residuals, drawn once per drive and beam (standard deviations): each
    # beam fires a little off its nominal elevation and reads a little long or short, while the
    # points are reported at the nominal angles. Real ground shows these as rings a few cm off.
    beam_elevation_error_deg: float = 0.0
    beam_range_bias_m: float = 0.0

    def elevations_deg(self) -> np.ndarray:
        """Beam elevations in degrees, lowest first."""
        if self.beam_table:
            from clip2scene_ros.sim.sensors import beam_elevations

            return beam_elevations(self.beam_table)
        return np.linspace(self.vertical_fov_deg[0], self.vertical_fov_deg[1], self.beams)

    def validate(self) -> None:
        from clip2scene_ros.sim.sensors import BEAM_TABLES, PRESETS

        if self.beam_table and self.beam_table not in BEAM_TABLES:
            raise SimConfigError(f"lidar.beam_table={self.beam_table!r}: use one of {sorted(BEAM_TABLES)} or ''")
        if self.beam_table and len(BEAM_TABLES[self.beam_table]) != self.beams:
            n = len(BEAM_TABLES[self.beam_table])
            raise SimConfigError(f"lidar.beams={self.beams} but beam table {self.beam_table!r} has {n} beams")
        unknown = [p for p in self.randomize if p not in PRESETS]
        if unknown:
            raise SimConfigError(f"lidar.randomize: unknown sensor(s) {unknown}; known: {sorted(PRESETS)}")
        if not all(0.0 <= k <= 1.0 for k in self.row_keep):
            raise SimConfigError(f"lidar.row_keep={self.row_keep}: keep probabilities must be in [0, 1]")
        if self.intensity not in ("reflectance", "none"):
            raise SimConfigError(f"lidar.intensity={self.intensity!r}: use reflectance or none")
        if self.mount_height_jitter_m < 0 or self.mount_pitch_jitter_deg < 0:
            raise SimConfigError("lidar: mount jitters must be >= 0")
        if self.beam_elevation_error_deg < 0 or self.beam_range_bias_m < 0:
            raise SimConfigError("lidar: beam_elevation_error_deg and beam_range_bias_m are standard deviations, >= 0")
        if self.beams < 1 or self.beams > 256:
            raise SimConfigError(f"lidar.beams={self.beams}: use 1..256 (32 or 64 for nuScenes/KITTI-like)")
        lo, hi = self.vertical_fov_deg
        if not -90.0 < lo < hi < 90.0:
            raise SimConfigError(f"lidar.vertical_fov_deg={self.vertical_fov_deg}: need -90 < low < high < 90")
        if self.points_per_ring < 8:
            raise SimConfigError(f"lidar.points_per_ring={self.points_per_ring}: use at least 8")
        if not 0 <= self.min_range_m < self.max_range_m:
            raise SimConfigError("lidar: need 0 <= min_range_m < max_range_m")
        if self.range_noise_std_m < 0 or not 0 <= self.dropout < 1:
            raise SimConfigError("lidar: range_noise_std_m must be >= 0 and dropout in [0, 1)")


@dataclass
class CameraSpec:
    name: str
    translation: tuple[float, float, float]
    yaw_deg: float
    hfov_deg: float
    pitch_deg: float = 0.0  # positive looks down
    # Explicit intrinsics as fractions of the image size (resolution-independent); 0 = derive
    # from hfov_deg (square pixels, principal point at the image centre).
    fx_frac: float = 0.0  # fx / width
    fy_frac: float = 0.0  # fy / width (same scale as fx, so square pixels when equal)
    cx_frac: float = 0.0  # cx / width
    cy_frac: float = 0.0  # cy / height


@dataclass
class CameraConfig:
    width: int = 400
    height: int = 224
    names: tuple[str, ...] = NUSCENES_CAMERA_NAMES  # subset/order of the rig to render
    rig: list[CameraSpec] = field(default_factory=list)  # empty: the nuScenes-like rig
    image_noise_std: float = 2.0  # sensor noise in 8-bit units

    def specs(self) -> list[CameraSpec]:
        rig = (
            {c.name: c for c in self.rig}
            if self.rig
            else {n: CameraSpec(n, t, yaw, fov) for n, (t, yaw, fov) in _NUSCENES_RIG.items()}
        )
        return [rig[n] for n in self.names]

    def validate(self) -> None:
        if not (8 <= self.width <= 8192 and 8 <= self.height <= 8192):
            raise SimConfigError(f"cameras: width/height {self.width}x{self.height} must be within 8..8192")
        known = {c.name for c in self.rig} if self.rig else set(_NUSCENES_RIG)
        unknown = [n for n in self.names if n not in known]
        if unknown:
            raise SimConfigError(f"cameras.names: unknown camera(s) {unknown}; known: {sorted(known)}")
        if len(set(self.names)) != len(self.names):
            raise SimConfigError(f"cameras.names has duplicates: {list(self.names)}")
        for c in self.specs():
            if not 1.0 < c.hfov_deg < 179.0:
                raise SimConfigError(f"camera {c.name}: hfov_deg={c.hfov_deg} must be in (1, 179)")
        if self.image_noise_std < 0:
            raise SimConfigError("cameras.image_noise_std must be >= 0")


@dataclass
class SceneConfig:
    lanes_per_direction: int = 2
    lane_width_m: float = 3.5
    parking_width_m: float = 2.5
    sidewalk_width_m: tuple[float, float] = (3.0, 5.0)
    terrain_width_m: tuple[float, float] = (2.0, 8.0)
    ego_speed_mps: tuple[float, float] = (5.0, 11.0)
    duration_s: float = 20.0  # the street covers this much driving; longer sequences are refused
    margin_m: float = 90.0  # scenery generated this far behind/ahead of the ego's path
    # Densities per 100 m of road (both sides together); actual counts are Poisson-sampled.
    parked_vehicles: float = 14.0
    moving_vehicles: float = 8.0
    pedestrians: float = 16.0
    cycles: float = 6.0
    trees: float = 20.0
    bushes: float = 12.0
    poles: float = 8.0
    signs: float = 6.0
    cones: float = 8.0
    barriers: float = 6.0
    world_yaw: bool = True  # rotate the road randomly in the world frame (ego poses are not trivial)
    # Street variety per seed (off keeps the classic street): 1..lanes_per_direction lanes, open
    # sides without buildings (fields, highway verges) with wide terrain, building setbacks up to
    # 12 m, hedges (vegetation with volume) along the plots, terrain widths up to 3x the range.
    variety: bool = False
    # Side streets crossing the main road at right angles, per 100 m (X and T junctions with corner
    # sidewalks and buildings along them); 0 keeps the street without junctions.
    cross_streets: float = 0.0
    # Surface relief seen by the LiDAR (cameras keep the flat surfaces), amplitude in metres drawn
    # uniformly from (low, high) per drive: terrain gets tussocks and hummocks (a smooth field
    # fixed in the world plus grass tips), paved surfaces (road, sidewalk) a zero-mean wear field.
    # (0, 0) keeps the surfaces flat.
    terrain_roughness_m: tuple[float, float] = (0.0, 0.0)
    paved_roughness_m: tuple[float, float] = (0.0, 0.0)
    # Terrain that rises above the soil over metres (verges level with or above the pavement,
    # embankments and gentle slopes), peak height drawn per drive; (0, 0) keeps the grass strips at
    # their fixed height, below the sidewalks.
    terrain_rise_m: tuple[float, float] = (0.0, 0.0)
    curb_height_m: tuple[float, float] = (0.15, 0.15)  # sidewalk top over the road, drawn per drive

    def validate(self) -> None:
        if self.duration_s <= 0:
            raise SimConfigError("scene.duration_s must be > 0")
        if not 1 <= self.lanes_per_direction <= 4:
            raise SimConfigError("scene.lanes_per_direction must be 1..4")
        ranges = (
            "sidewalk_width_m",
            "terrain_width_m",
            "ego_speed_mps",
            "terrain_roughness_m",
            "paved_roughness_m",
            "terrain_rise_m",
            "curb_height_m",
        )
        for name in ranges:
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise SimConfigError(f"scene.{name}={getattr(self, name)}: need 0 <= low <= high")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and v < 0:
                raise SimConfigError(f"scene.{f.name}={v} must be >= 0")


@dataclass
class SimConfig:
    """Everything that shapes a generated sequence; ``generate_sequence(config, seed, n)``."""

    frame_rate_hz: float = 10.0
    lidar: LidarConfig = field(default_factory=LidarConfig)
    cameras: CameraConfig = field(default_factory=CameraConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    camera_every: int = 1  # render cameras on every k-th frame only (others: LiDAR only)
    threads: int = 0  # ray-casting threads, 0 = all cores

    def validate(self) -> SimConfig:
        if not 0.1 <= self.frame_rate_hz <= 100:
            raise SimConfigError(f"frame_rate_hz={self.frame_rate_hz} must be within 0.1..100")
        if self.camera_every < 1:
            raise SimConfigError("camera_every must be >= 1")
        self.lidar.validate()
        self.cameras.validate()
        self.scene.validate()
        return self

    # --- loading -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SimConfig:
        return _build(cls, data or {}, "sim").validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> SimConfig:
        path = Path(path)
        if not path.is_file():
            raise SimConfigError(f"simulator config {path} not found; pass an existing YAML file")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise SimConfigError(f"{path}: the top level must be a mapping")
        try:
            return cls.from_dict(data)
        except SimConfigError as e:
            raise SimConfigError(f"{path}: {e}") from None

    @classmethod
    def default(cls) -> SimConfig:
        """The shipped ``config/sim/default.yaml`` (or built-in defaults if it is missing)."""
        from clip2scene_ros.resources import config_path

        try:
            path = config_path("sim", "default.yaml")
        except FileNotFoundError:
            return cls().validate()
        return cls.from_yaml(path) if path.is_file() else cls().validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, **kw: Any) -> SimConfig:
        """Copy with dotted overrides, e.g. ``with_overrides(**{"lidar.beams": 64})``."""
        data = self.to_dict()
        for key, value in kw.items():
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                if p not in node or not isinstance(node[p], dict):
                    raise SimConfigError(f"unknown config key {key!r}")
                node = node[p]
            if parts[-1] not in node:
                raise SimConfigError(f"unknown config key {key!r}")
            _merge(node, parts[-1], value, key)
        return SimConfig.from_dict(data)


def _merge(node: dict, name: str, value: Any, key: str) -> None:
    """Set ``node[name]``; a mapping given for a section updates the section key by key (so
    ``{"scene": {"curb_height_m": ...}}`` keeps the other scene settings) instead of replacing it."""
    if isinstance(value, dict) and isinstance(node[name], dict):
        for k, v in value.items():
            if k not in node[name]:
                raise SimConfigError(f"unknown config key {key + '.' + str(k)!r}")
            _merge(node[name], k, v, f"{key}.{k}")
    else:
        node[name] = value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Recursively build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise SimConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SimConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    hints = {
        "lidar": LidarConfig,
        "cameras": CameraConfig,
        "scene": SceneConfig,
    }
    for name, value in data.items():
        if cls is SimConfig and name in hints:
            kwargs[name] = _build(hints[name], value or {}, f"{where}.{name}")
        elif cls is CameraConfig and name == "rig":
            kwargs[name] = [_build(CameraSpec, c, f"{where}.rig[{i}]") for i, c in enumerate(value or [])]
        elif cls is LidarConfig and name == "randomize":
            if not isinstance(value, (list, tuple)):
                raise SimConfigError(f"{where}.randomize: expected a list of sensor names")
            kwargs[name] = [str(v) for v in value]
        elif cls is CameraConfig and name == "names":
            kwargs[name] = tuple(str(v) for v in value)
        else:
            default = fields[name].default
            if isinstance(default, tuple):
                if not isinstance(value, (list, tuple)) or len(value) != len(default):
                    raise SimConfigError(f"{where}.{name}: expected a list of {len(default)} numbers")
                value = tuple(float(v) for v in value)
            elif isinstance(default, bool):
                value = bool(value)
            elif isinstance(default, int):
                if isinstance(value, float) and not value.is_integer():
                    raise SimConfigError(f"{where}.{name}: expected an integer, got {value}")
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
                if not math.isfinite(value):
                    raise SimConfigError(f"{where}.{name}: must be finite")
            kwargs[name] = value
    if cls is CameraSpec:
        missing = [n for n in ("name", "translation", "yaw_deg", "hfov_deg") if n not in data]
        if missing:
            raise SimConfigError(f"{where}: missing key(s) {missing}")
        kwargs["translation"] = tuple(float(v) for v in data["translation"])
        if len(kwargs["translation"]) != 3:
            raise SimConfigError(f"{where}.translation: expected [x, y, z]")
        for key in ("yaw_deg", "hfov_deg", "pitch_deg", "fx_frac", "fy_frac", "cx_frac", "cy_frac"):
            if key in data:
                kwargs[key] = float(data[key])
        kwargs["name"] = str(data["name"])
    return cls(**kwargs)
