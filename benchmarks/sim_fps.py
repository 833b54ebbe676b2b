"""How many frames per second does the simulator make? 32-beam LiDAR + six 800x450 cameras.

Measures the full ``generate_sequence`` pipeline (scene assembly, LiDAR ray casting, camera
rasterising, shading, labels, depth), its CPU seconds per frame (``time.process_time``: neighbours on
shared cores inflate it far less than wall time) and per-stage CPU time, and, as the in-process
reference, bare Open3D ray casting of the same rays against the same scene. Target: >= 5 frames/s on
2 cores; ``fps_bound_2_idle_cores`` = 2 / CPU-s per frame. The last line is one JSON object.

Measured 2026-11-22, ``--frames 10 --threads 2``, load average ~4.5 (three other jobs on the 2 cores):
0.253 CPU-s/frame (bound 7.9 frames/s on 2 idle cores), 3.2 frames/s wall under that load; before
the rasteriser (Open3D casting the cameras) 1.83 CPU-s/frame, bound ~1.1 frames/s.

    .venv/bin/python benchmarks/sim_fps.py [--frames 10] [--width 800 --height 450] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--width", type=int, default=800)
    ap.add_argument("--height", type=int, default=450)
    ap.add_argument("--beams", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=100000)  # first validation seed
    args = ap.parse_args()

    import open3d as o3d

    from clip2scene_ros.sim import SimConfig, build_world, generate_sequence
    from clip2scene_ros.sim.render import Renderer

    cfg = SimConfig.default().with_overrides(
        **{"cameras.width": args.width, "cameras.height": args.height, "lidar.beams": args.beams,
           "threads": args.threads}
    )  # fmt: skip
    # warm-up (imports, first BVH build) outside the timing
    next(generate_sequence(cfg, args.seed, 1))
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU seconds of all our threads: what the frames cost without neighbours
    frames = 0
    points = 0
    for f in generate_sequence(cfg, args.seed, args.frames):
        frames += 1
        points += len(f.points)
    total = time.perf_counter() - t0
    cpu_per_frame = (time.process_time() - c0) / frames
    fps = frames / total
    # upper bound on 2 idle cores: the CPU work spread perfectly over both
    fps_idle_bound = min(2.0, os.cpu_count() or 1) / cpu_per_frame

    # reference: bare ray casting of the same rays (no shading, no labels), same scenes
    world = build_world(cfg, args.seed, cfg.scene.duration_s)
    r = Renderer(cfg)
    cast = 0.0
    # per-stage CPU seconds, one stage at a time (the pipeline overlaps LiDAR and camera rasterising)
    stages = {"scene": 0.0, "lidar": 0.0, "camera_raster": 0.0, "camera_shade": 0.0}
    rng = np.random.default_rng(0)
    for i in range(args.frames):
        t = i / cfg.frame_rate_hz
        ego = world.ego_road_pose(t)  # the renderer works in the road frame
        a = time.process_time()
        verts = r._vertices(world, t)
        scene = r._scene(world, t, verts)
        b = time.process_time()
        r.render_lidar(world, scene, t, rng)
        c = time.process_time()
        rasters = r._map(lambda k, t=t, verts=verts: r._rasterize(world, t, verts, k), list(range(len(r.cameras))))
        d = time.process_time()
        r.render_cameras(world, t, rng, rasters, verts)
        d2 = time.process_time()
        stages["scene"] += b - a
        stages["lidar"] += c - b
        stages["camera_raster"] += d - c
        stages["camera_shade"] += d2 - d
        dirs = [r.lidar.directions @ (ego @ r.lidar.lidar_to_ego)[:3, :3].T.astype(np.float32)]
        origins = [np.broadcast_to((ego @ r.lidar.lidar_to_ego)[:3, 3], (len(dirs[0]), 3))]
        for cam in r.cameras:
            c2w = ego @ cam.cam_to_ego
            dirs.append(cam.directions @ c2w[:3, :3].T.astype(np.float32))
            origins.append(np.broadcast_to(c2w[:3, 3], (len(cam.directions), 3)))
        rays = np.concatenate([np.concatenate(origins), np.concatenate(dirs)], 1).astype(np.float32)
        e = time.perf_counter()
        scene.cast_rays(o3d.core.Tensor(rays), nthreads=args.threads)
        cast += time.perf_counter() - e
    cast_fps = args.frames / cast

    rays_per_frame = args.beams * cfg.lidar.points_per_ring + 6 * args.width * args.height
    load = os.getloadavg()[0]  # other processes on the 2 cores slow both numbers alike
    print(f"{'what':32s} {'value':>10s}")
    print(f"{'load average (1 min)':32s} {load:>10.2f}")
    print(f"{'cores (os.cpu_count)':32s} {os.cpu_count():>10d}")
    print(f"{'ray-casting threads':32s} {args.threads:>10d}")
    print(f"{'rays per frame':32s} {rays_per_frame:>10d}")
    print(f"{'triangles in the world':32s} {world.num_triangles:>10d}")
    print(f"{'LiDAR points per frame (mean)':32s} {points / frames:>10.0f}")
    for k, v in stages.items():
        print(f"{'  stage ' + k + ' (CPU ms/frame)':32s} {1000 * v / args.frames:>10.1f}")
    print(f"{'bare Open3D casting (frames/s)':32s} {cast_fps:>10.2f}")
    print(f"{'full pipeline (frames/s)':32s} {fps:>10.2f}")
    print(f"{'CPU seconds per frame':32s} {cpu_per_frame:>10.3f}")
    print(f"{'bound on 2 idle cores (frames/s)':32s} {fps_idle_bound:>10.2f}")
    print(f"{'target (frames/s)':32s} {5.0:>10.2f}")
    print(json.dumps({
        "benchmark": "sim_fps", "frames": frames, "width": args.width, "height": args.height, "beams": args.beams,
        "cameras": 6, "threads": args.threads, "fps": round(fps, 3), "bare_raycast_fps": round(cast_fps, 3),
        "ratio_vs_bare_raycast": round(fps / cast_fps, 3),
        "cpu_s_per_frame": round(cpu_per_frame, 3), "fps_bound_2_idle_cores": round(fps_idle_bound, 2),
        "stage_ms": {k: round(1000 * v / args.frames, 1) for k, v in stages.items()},
        "target_fps": 5.0, "meets_target": fps >= 5.0, "bound_meets_target": fps_idle_bound >= 5.0,
        "load_avg_1min": round(load, 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
