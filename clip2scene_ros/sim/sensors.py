"""Real LiDAR models for the simulator: beam elevation tables, mounts, ray drop.

Elevations (degrees, lowest beam first) come from the public driver calibrations and, for the
KITTI car, from data (see ``docs``: the per-row mean of KITTI raw scans; units of one model differ
by up to 3 degrees at the top, so the KITTI unit is fitted rather than taken from a generic yaml):

- ``hdl64e_kitti``: the KITTI HDL-64E, fitted; two blocks (upper ~0.34 deg, lower ~0.5 deg steps)
- ``hdl32e``: Velodyne HDL-32E (nuScenes LIDAR_TOP), 4/3 (k - 23): -30.67 ... +10.67
- ``vlp16``: Velodyne VLP-16, -15 + 2 k
- ``os1_64``: Ouster OS1-64 gen1 design values, 16.611 - 0.527 k (stored lowest first)
- ``os1_128``: Ouster OS1-128 gen1, uniform over its 45 deg field of view

A preset also fixes the azimuth columns, the mount (translation, yaw in the ego frame), the
range limits and the per-row keep probabilities of its ray-drop map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# fmt: off
_KITTI_HDL64E_TOP_DOWN = (
    2.92, 2.56, 2.31, 1.86, 1.58, 1.19, 0.91, 0.55, 0.20, -0.20, -0.50, -0.83, -1.20, -1.53, -1.85, -2.21,
    -2.51, -2.89, -3.17, -3.52, -3.83, -4.16, -4.49, -4.81, -5.19, -5.50, -5.81, -6.09, -6.47, -6.82, -7.05, -7.43,
    -8.15, -8.68, -9.14, -9.55, -10.03, -10.63, -11.13, -11.57, -12.02, -12.46, -12.99, -13.50, -14.09, -14.53,
    -15.02, -15.40, -16.02, -16.54, -17.11, -17.57, -18.06, -18.47, -18.92, -19.46, -19.98, -20.57, -21.04,
    -21.46, -21.90, -22.52, -23.01, -23.53,
)
# fmt: on

BEAM_TABLES: dict[str, np.ndarray] = {
    "hdl64e_kitti": np.array(_KITTI_HDL64E_TOP_DOWN[::-1]),
    "hdl32e": (np.arange(32) - 23) * 4.0 / 3.0,  # -30.67 ... +10.67 in 4/3 deg steps
    "vlp16": -15.0 + 2.0 * np.arange(16),
    "os1_64": (16.611 - 0.527 * np.arange(64))[::-1],
    "os1_128": np.linspace(-22.5, 22.5, 128),
}


@dataclass(frozen=True)
class LidarPreset:
    """A real sensor as mounted on a real car (ego frame: x forward, y left, z up, ground at 0)."""

    beam_table: str
    points_per_ring: int
    translation: tuple[float, float, float]
    yaw_deg: float
    min_range_m: float
    max_range_m: float
    # keep probability of a return by beam position (lowest rows, middle, highest rows): besides
    # the physical misses (sky, range, dark/grazing surfaces) real scans lose ~10-15 % of mid-row
    # returns and more at the bottom (ego shadow, near field) and top of the table
    row_keep: tuple[float, float, float]


PRESETS: dict[str, LidarPreset] = {
    # KITTI: 2048 columns of the 64x2048 range image, 80 m cap in the published scans
    "hdl64e_kitti": LidarPreset("hdl64e_kitti", 2048, (0.76, 0.0, 1.73), 0.0, 2.5, 80.0, (0.75, 0.88, 0.8)),
    "hdl32e": LidarPreset("hdl32e", 1084, (0.943713, 0.0, 1.84023), -90.0, 1.0, 100.0, (0.85, 0.95, 0.9)),
    "vlp16": LidarPreset("vlp16", 1800, (0.5, 0.0, 1.8), 0.0, 1.0, 100.0, (0.9, 0.95, 0.9)),
    "os1_64": LidarPreset("os1_64", 1024, (0.5, 0.0, 1.8), 0.0, 0.8, 120.0, (0.85, 0.92, 0.85)),
    "os1_128": LidarPreset("os1_128", 1024, (0.5, 0.0, 1.8), 0.0, 0.8, 120.0, (0.85, 0.92, 0.85)),
}


def beam_elevations(name: str) -> np.ndarray:
    """Elevation angles (degrees) of a named table, lowest beam first."""
    if name not in BEAM_TABLES:
        raise KeyError(f"unknown beam table {name!r}; known: {sorted(BEAM_TABLES)}")
    return BEAM_TABLES[name].astype(np.float64).copy()


def row_keep_probability(beams: int, row_keep: tuple[float, float, float]) -> np.ndarray:
    """Per-beam keep probability: ``bottom`` over the lowest eighth of the rows, ``top`` over the
    highest eighth, ``middle`` between, blended linearly over the next eighth."""
    bottom, middle, top = row_keep
    u = (np.arange(beams) + 0.5) / beams
    low = np.clip((u - 0.125) / 0.125, 0.0, 1.0)
    high = np.clip((0.875 - u) / 0.125, 0.0, 1.0)
    keep = middle + (bottom - middle) * (1.0 - low) + (top - middle) * (1.0 - high)
    return keep.astype(np.float32)


def preset_overrides(name: str) -> dict[str, object]:
    """Dotted ``SimConfig.with_overrides`` keys that turn the LiDAR into preset ``name``."""
    if name not in PRESETS:
        raise KeyError(f"unknown LiDAR preset {name!r}; known: {sorted(PRESETS)}")
    p = PRESETS[name]
    return {
        "lidar.beam_table": p.beam_table,
        "lidar.beams": len(BEAM_TABLES[p.beam_table]),
        "lidar.points_per_ring": p.points_per_ring,
        "lidar.translation": list(p.translation),
        "lidar.yaw_deg": p.yaw_deg,
        "lidar.min_range_m": p.min_range_m,
        "lidar.max_range_m": p.max_range_m,
        "lidar.row_keep": list(p.row_keep),
    }


def lidar_for_seed(config, seed: int):
    """The LiDAR configuration a drive uses: ``config.lidar``, or with ``lidar.randomize`` set, one of
    those presets chosen by the seed with the mount height and pitch jittered (deterministic)."""
    import dataclasses

    lc = config.lidar
    if not lc.randomize and lc.mount_height_jitter_m == 0 and lc.mount_pitch_jitter_deg == 0:
        return lc
    rng = np.random.default_rng([int(seed), 0x5E45])
    if lc.randomize:
        name = lc.randomize[int(rng.integers(len(lc.randomize)))]
        p = PRESETS[name]
        lc = dataclasses.replace(
            lc,
            beam_table=p.beam_table,
            beams=len(BEAM_TABLES[p.beam_table]),
            points_per_ring=p.points_per_ring,
            translation=p.translation,
            yaw_deg=p.yaw_deg,
            min_range_m=p.min_range_m,
            max_range_m=p.max_range_m,
            row_keep=p.row_keep,
            randomize=[],
        )
    dz = rng.uniform(-1, 1) * lc.mount_height_jitter_m
    dp = rng.uniform(-1, 1) * lc.mount_pitch_jitter_deg
    x, y, z = lc.translation
    return dataclasses.replace(lc, translation=(x, y, z + dz), pitch_deg=lc.pitch_deg + dp)
