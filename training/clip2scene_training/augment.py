"""Point-cloud augmentation for the student, configured by ``augmentation:`` in a training YAML.

Every transform keeps the point order and count (pairs are point indices computed once per
sample): dropped points become NaN, which the model skips (zero features, no gradient). Applied
per sweep with a generator seeded by (seed, epoch, sample, sweep), so runs are reproducible.

Defaults reproduce the old behaviour (random rotation about z and x/y flips). The sim-to-real
recipe adds scaling, jitter, a small mount-height and tilt error (the base frame puts the ground
near z = 0, which a real mount only approximates) and point/beam dropout (density seen by sparser
sensors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np


@dataclass
class AugmentConfig:
    rotate: bool = True  # uniform rotation about z
    flip: bool = True  # x and y mirror, each with probability 1/2
    scale: tuple[float, float] = (1.0, 1.0)  # uniform isotropic scale range
    jitter_std_m: float = 0.0  # Gaussian noise per coordinate
    height_shift_m: float = 0.0  # uniform +- shift of z (mount height error)
    tilt_deg: float = 0.0  # uniform +- roll and pitch (mount tilt / road slope)
    point_dropout: float = 0.0  # drop each point with this probability (upper bound, drawn per sweep)
    beam_dropout: float = 0.0  # drop this fraction of elevation bands at most (sparser sensors)

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"augmentation: unknown key(s) {unknown}; valid keys: {sorted(names)}")
        if "scale" in d:
            lo, hi = (float(v) for v in d["scale"])
            d["scale"] = (lo, hi)
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"augmentation.scale={self.scale}: need 0 < low <= high")
        for name in ("jitter_std_m", "height_shift_m", "tilt_deg"):
            if getattr(self, name) < 0:
                raise ValueError(f"augmentation.{name} must be >= 0")
        for name in ("point_dropout", "beam_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"augmentation.{name} must be in [0, 1)")


def _rot(axis: int, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def augment(points: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> np.ndarray:
    """A transformed copy of ``points`` [P, 3+F] (same order and count; dropped points are NaN)."""
    cfg = cfg or AugmentConfig()
    out = points.copy()
    xyz = out[:, :3].astype(np.float64)
    R = np.eye(3)
    if cfg.rotate:
        R = _rot(2, rng.uniform(0, 2 * np.pi))
    if cfg.tilt_deg:
        t = math.radians(cfg.tilt_deg)
        R = _rot(0, rng.uniform(-t, t)) @ _rot(1, rng.uniform(-t, t)) @ R
    xyz = xyz @ R.T
    if cfg.flip:
        if rng.random() < 0.5:
            xyz[:, 0] = -xyz[:, 0]
        if rng.random() < 0.5:
            xyz[:, 1] = -xyz[:, 1]
    lo, hi = cfg.scale
    if hi > lo or lo != 1.0:
        xyz *= rng.uniform(lo, hi)
    if cfg.height_shift_m:
        xyz[:, 2] += rng.uniform(-cfg.height_shift_m, cfg.height_shift_m)
    if cfg.jitter_std_m:
        xyz += rng.normal(0.0, cfg.jitter_std_m, xyz.shape)
    drop = np.zeros(len(out), dtype=bool)
    if cfg.point_dropout:
        drop |= rng.random(len(out)) < rng.uniform(0, cfg.point_dropout)
    if cfg.beam_dropout:
        # elevation bands as seen from the points' own origin-centred angles (0.5 deg bands):
        # whole rings vanish as they do on a sensor with fewer beams
        r = np.linalg.norm(points[:, :2], axis=1)
        band = np.floor(np.degrees(np.arctan2(points[:, 2], np.maximum(r, 1e-6))) / 0.5).astype(np.int64)
        bands = np.unique(band)
        lost = bands[rng.random(len(bands)) < rng.uniform(0, cfg.beam_dropout)]
        drop |= np.isin(band, lost)
    out[:, :3] = xyz.astype(out.dtype)
    out[drop, :3] = np.nan
    return out
