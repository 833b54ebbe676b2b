"""``generate_sequence``: a seeded procedural drive rendered frame by frame."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator

import numpy as np

from clip2scene_ros.sim.config import SimConfig
from clip2scene_ros.sim.frame import CameraImage, Frame
from clip2scene_ros.sim.render import Renderer
from clip2scene_ros.sim.sensors import lidar_for_seed
from clip2scene_ros.sim.world import World, build_world

# Time stamps: each seed's drive starts at its own epoch, within ROS's int32 seconds.
_EPOCH_S = 1_600_000_000
_SEED_SPACING_S = 1000


_WORLDS: OrderedDict[tuple, World] = OrderedDict()
_WORLD_CACHE_SIZE = 4


def canonical_world(config: SimConfig, seed: int) -> World:
    """The street of ``seed`` as ``generate_sequence`` and the writers build it (a few cached).

    It depends on ``config.scene`` and ``seed`` only; pass it as ``world=`` to render frames out of
    order cheaply. (A world built with another ``duration_s`` is a different street.)
    """
    key = (int(seed), json.dumps(dataclasses.asdict(config.scene), sort_keys=True))
    world = _WORLDS.get(key)
    if world is None:
        world = build_world(config, seed, duration_s=config.scene.duration_s)
        _WORLDS[key] = world
        while len(_WORLDS) > _WORLD_CACHE_SIZE:
            _WORLDS.popitem(last=False)
    else:
        _WORLDS.move_to_end(key)
    return world


def sequence_start_ns(seed: int) -> int:
    return (_EPOCH_S + (int(seed) % 500_000) * _SEED_SPACING_S) * 1_000_000_000


def generate_sequence(
    config: SimConfig | None,
    seed: int,
    num_frames: int,
    *,
    world: World | None = None,
    cameras: bool | Callable[[int], bool] | None = None,
    start_frame: int = 0,
) -> Iterator[Frame]:
    """Yield ``num_frames`` frames of the drive defined by ``seed`` (deterministic).

    ``config``: ``SimConfig`` (None = ``config/sim/default.yaml``). Frames are ``1/frame_rate_hz``
    apart; cameras are rendered on frames whose index is a multiple of ``config.camera_every``
    (``cameras=False``/``True`` forces none/all; a callable ``f(index) -> bool`` chooses).
    ``world`` replaces the procedural street (tests build hand-made worlds with
    ``world.assemble_world``). ``start_frame`` skips ahead without
    rendering the earlier frames (they are independent: the world is a function of time).
    """
    config = SimConfig.default() if config is None else config.validate()
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    dt = 1.0 / config.frame_rate_hz
    if world is None:
        # the street is a function of (config, seed) only, never of num_frames
        needed = (start_frame + num_frames - 1) * dt
        if needed > config.scene.duration_s + 1e-9:
            raise ValueError(
                f"{start_frame + num_frames} frames at {config.frame_rate_hz} Hz need {needed:.1f} s of street, "
                f"more than scene.duration_s={config.scene.duration_s}; raise scene.duration_s "
                "(e.g. --set scene.duration_s=60)"
            )
        world = canonical_world(config, seed)
    renderer = Renderer(config, lidar_for_seed(config, seed), seed)
    t0 = sequence_start_ns(seed)
    for i in range(start_frame, start_frame + num_frames):
        t = i * dt
        stamp = t0 + round(t * 1e9)
        rng = np.random.default_rng([int(seed), i, 0xF4A])
        if cameras is None:
            want_cams = i % config.camera_every == 0
        else:
            want_cams = bool(cameras(i)) if callable(cameras) else bool(cameras)
        ego_pose, lidar, cams = renderer.render(world, t, rng, cameras=want_cams)
        images = [
            CameraImage(cm.name, stamp, r.image, r.labels, r.depth, cm.K.copy(), cm.cam_to_ego.copy(), r.instances)
            for cm, r in zip(renderer.cameras, cams, strict=False)
        ]
        yield Frame(
            index=i,
            timestamp_ns=stamp,
            ego_pose=ego_pose,
            lidar_to_ego=renderer.lidar.lidar_to_ego.copy(),
            points=lidar.points,
            labels=lidar.labels,
            instances=lidar.instances,
            cameras=images,
            rings=lidar.rings,
            objects=world.objects(t),
            seed=int(seed),
        )
