"""The synthetic driving world: procedural streets, a spinning LiDAR and pinhole cameras with labels.

Quick use::

    from clip2scene_ros.sim import SimConfig, generate_sequence
    for frame in generate_sequence(SimConfig.default(), seed=0, num_frames=10):
        frame.points, frame.labels, frame.cameras[0].image

See ``README.md`` in this folder for the conventions, the writers and the seed splits.
"""

from clip2scene_ros.sim.config import (
    CameraConfig,
    CameraSpec,
    LidarConfig,
    SceneConfig,
    SimConfig,
    SimConfigError,
)
from clip2scene_ros.sim.frame import CameraImage, Frame
from clip2scene_ros.sim.generate import canonical_world, generate_sequence, sequence_start_ns
from clip2scene_ros.sim.taxonomy import CLASS_NAMES, NUM_CLASSES
from clip2scene_ros.sim.world import World, assemble_world, build_world

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "CameraConfig",
    "CameraImage",
    "CameraSpec",
    "Frame",
    "LidarConfig",
    "SceneConfig",
    "SimConfig",
    "SimConfigError",
    "World",
    "assemble_world",
    "build_world",
    "canonical_world",
    "generate_sequence",
    "sequence_start_ns",
]
