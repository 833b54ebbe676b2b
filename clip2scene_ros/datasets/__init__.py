"""Dataset adapters producing one :class:`Sample` structure, and a factory from config dicts."""

from __future__ import annotations

from typing import Any

from clip2scene_ros.datasets.base import (
    CameraFrame,
    PairingConfig,
    PointCloudDataset,
    Sample,
    Sweep,
    attach_pairs,
)

__all__ = [
    "CameraFrame",
    "PairingConfig",
    "PointCloudDataset",
    "Sample",
    "Sweep",
    "attach_pairs",
    "create_dataset",
    "DATASETS",
]

DATASETS = ("synthetic", "nuscenes", "semantickitti", "scannet")


def create_dataset(kind: str, pairing: dict[str, Any] | None = None, **options: Any) -> PointCloudDataset:
    """``create_dataset("nuscenes", root=..., version="v1.0-mini", num_sweeps=3)`` etc."""
    pair_cfg = PairingConfig(**(pairing or {}))
    if kind == "synthetic":
        from clip2scene_ros.datasets.synthetic import SyntheticDataset

        sim = options.pop("sim_config", None)
        if isinstance(sim, (str, dict)):
            from clip2scene_ros.sim import SimConfig

            sim = (
                SimConfig.from_yaml(sim)
                if isinstance(sim, str)
                else SimConfig.default().with_overrides(**sim)
            )
        return SyntheticDataset(sim_config=sim, pairing=pair_cfg, **options)
    if kind == "nuscenes":
        from clip2scene_ros.datasets.nuscenes import NuScenesDataset

        return NuScenesDataset(pairing=pair_cfg, **options)
    if kind == "semantickitti":
        from clip2scene_ros.datasets.semantickitti import SemanticKITTIDataset

        return SemanticKITTIDataset(pairing=pair_cfg, **options)
    if kind == "scannet":
        from clip2scene_ros.datasets.scannet import ScanNetDataset

        return ScanNetDataset(pairing=pair_cfg, **options)
    raise ValueError(f"unknown dataset {kind!r}; choose one of {DATASETS}")
