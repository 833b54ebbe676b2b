"""Known-answer tests of the LiDAR and camera models against hand-made worlds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clip2scene_ros.geometry.transforms import invert_transform, rot_z, transform_points, translation
from clip2scene_ros.sim import generate_sequence
from clip2scene_ros.sim import meshes as M
from clip2scene_ros.sim import taxonomy as C
from clip2scene_ros.sim.world import assemble_world


def _static_ego(t: float) -> np.ndarray:
    return np.eye(4)


def _world(parts):
    ms = M.MeshSet()
    for (v, t), mat in parts:
        ms.add(v, t, mat)
    return assemble_world(ms, [], _static_ego)


@pytest.mark.parametrize("beams", [32, 64])
def test_range_to_wall_at_known_distance(small_config, beams):
    wall_x = 20.0
    mat = M.Material(C.BUILDING, 0, (0.5, 0.5, 0.5))
    world = _world([(M.box(wall_x, wall_x + 1, -60, 60, -5, 30), mat)])
    cfg = small_config.with_overrides(**{"cameras.names": ["cam_front"], "lidar.beams": beams})
    frame = next(generate_sequence(cfg, 0, 1, world=world))
    assert len(frame.points) > 1000
    assert (frame.labels == C.BUILDING).all()
    assert set(np.unique(frame.rings).tolist()) <= set(range(beams)) and frame.rings.max() > beams // 2
    assert 0 <= frame.points[:, 3].min() and frame.points[:, 3].max() <= 255
    ego = transform_points(frame.lidar_to_ego, frame.points[:, :3].astype(np.float64))
    np.testing.assert_allclose(ego[:, 0], wall_x, atol=2e-3)  # every return lies on the wall plane
    # the beam closest to horizontal, looking straight ahead (LiDAR +y = ego +x)
    lc = cfg.lidar
    elev = np.radians(np.linspace(*lc.vertical_fov_deg, lc.beams))
    ring = int(np.argmin(np.abs(elev)))
    sel = (frame.rings == ring) & (np.abs(frame.points[:, 0]) < 0.05) & (frame.points[:, 1] > 0)
    assert sel.sum() >= 1
    rng_m = np.linalg.norm(frame.points[sel, :3], axis=1)
    expected = (wall_x - lc.translation[0]) / math.cos(elev[ring])
    np.testing.assert_allclose(rng_m, expected, atol=2e-3)
    # and the front camera sees the wall at the same depth along its optical axis
    cam = frame.camera("cam_front")
    assert (cam.labels == C.BUILDING).all()
    centre = cam.depth[cam.height // 2, cam.width // 2]
    assert abs(centre - (wall_x - cam.cam_to_ego[0, 3])) < 0.05


def test_range_noise_and_dropout_are_applied(small_config):
    world = _world([(M.box(15, 16, -60, 60, -5, 30), M.Material(C.BUILDING, 0, (0.5, 0.5, 0.5)))])
    cfg = small_config.with_overrides(
        **{"lidar.range_noise_std_m": 0.05, "lidar.dropout": 0.2, "cameras.names": ["cam_front"]}
    )
    clean = next(
        generate_sequence(
            small_config.with_overrides(**{"cameras.names": ["cam_front"]}), 0, 1, world=world, cameras=False
        )
    )
    noisy = next(generate_sequence(cfg, 0, 1, world=world, cameras=False))
    assert 0.6 * len(clean.points) < len(noisy.points) < 0.9 * len(clean.points)
    ego = transform_points(noisy.lidar_to_ego, noisy.points[:, :3].astype(np.float64))
    assert 0.02 < np.std(ego[:, 0] - 15.0) < 0.2


CUSTOM_RIG = [
    {"name": "cam_a", "translation": [1.5, 0.2, 1.4], "yaw_deg": 20, "hfov_deg": 70, "pitch_deg": 12,
     "fx_frac": 0.7, "fy_frac": 0.65, "cx_frac": 0.45, "cy_frac": 0.55},
    {"name": "cam_b", "translation": [-0.5, -0.4, 2.0], "yaw_deg": -150, "hfov_deg": 100, "pitch_deg": -5},
]  # fmt: skip


@pytest.mark.parametrize("rig", ["nuscenes", "custom"])
def test_box_corners_project_onto_rendered_pixels(small_config, rig):
    """Each camera sees a rotated box; its projected corners bound the rendered silhouette."""
    over = {"cameras.width": 320, "cameras.height": 180}
    if rig == "custom":
        over.update({"cameras.rig": CUSTOM_RIG, "cameras.names": ["cam_a", "cam_b"]})
    cfg = small_config.with_overrides(**over)
    from clip2scene_ros.sim.render import Renderer

    cams = Renderer(cfg).cameras
    parts, boxes = [], []
    for k, cam in enumerate(cams):
        # 9 m along the optical axis, offset and rotated so that no edge is axis-aligned
        centre = transform_points(cam.cam_to_ego, np.array([[0.6, 0.3, 9.0]]))[0]
        pose = translation(*centre) @ rot_z(0.4 + k)
        v, t = M.box(-0.8, 0.8, -0.6, 0.6, -0.7, 0.7)
        parts.append(((transform_points(pose, v), t), M.Material(C.CAR, k + 1, (0.8, 0.1, 0.1))))
        boxes.append(transform_points(pose, v))
    world = _world(parts)
    frame = next(generate_sequence(cfg, 0, 1, world=world))
    for k, cam in enumerate(frame.cameras):
        corners_cam = transform_points(invert_transform(cam.cam_to_ego), boxes[k])
        uvw = corners_cam @ cam.K.T
        uv = uvw[:, :2] / uvw[:, 2:3]
        mask = cam.instances == k + 1
        rows, cols = np.nonzero(mask)
        assert len(rows) > 100, cam.name
        # pixel centres sit at integer coordinates: the silhouette's extreme pixels are within 1 px
        assert abs(cols.min() - math.ceil(uv[:, 0].min())) <= 1, cam.name
        assert abs(cols.max() - math.floor(uv[:, 0].max())) <= 1, cam.name
        assert abs(rows.min() - math.ceil(uv[:, 1].min())) <= 1, cam.name
        assert abs(rows.max() - math.floor(uv[:, 1].max())) <= 1, cam.name
        # the leftmost corner lands on (or next to) a rendered pixel of the box
        j = int(np.argmin(uv[:, 0]))
        r, c = int(round(uv[j, 1])), int(round(uv[j, 0]))
        assert mask[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].any(), cam.name
        # and the rendered depth at the box centre pixel equals the geometry's depth there
        assert np.all(cam.labels[mask] == C.CAR)


def test_lidar_labels_agree_with_camera_labels_where_visible(small_config):
    frame = next(generate_sequence(small_config, 11, 1))
    agree = total = 0
    for cam in frame.cameras:
        cam_from_lidar = invert_transform(cam.cam_to_ego) @ frame.lidar_to_ego
        pts_cam = transform_points(cam_from_lidar, frame.points[:, :3].astype(float))
        z = pts_cam[:, 2]
        front = z > 1.0
        uv = pts_cam[front] @ cam.K.T
        u = np.round(uv[:, 0] / uv[:, 2]).astype(int)
        v = np.round(uv[:, 1] / uv[:, 2]).astype(int)
        inside = (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        idx = np.flatnonzero(front)[inside]
        u, v = u[inside], v[inside]
        d_img = cam.depth[v, u]
        visible = np.abs(d_img - z[idx]) < 0.02 * z[idx] + 0.05  # same surface, not occluded
        total += visible.sum()
        agree += (cam.labels[v, u][visible] == frame.labels[idx][visible]).sum()
    assert total > 2000
    assert agree / total > 0.97, agree / total


def test_procedural_scene_covers_the_taxonomy(small_config):
    frames = list(generate_sequence(small_config.with_overrides(**{"cameras.names": ["cam_front"]}), 2, 1))
    seen = set(np.unique(frames[0].labels).tolist())
    for o in frames[0].objects:
        seen.add(o.label)
    cam = frames[0].cameras[0]
    sky = cam.labels == 0
    assert sky.any() and (cam.depth[sky] == 0).all() and (cam.depth[~sky] > 0).all()
    # every class of the taxonomy is present in the world (stuff as points, things as objects)
    assert {C.ROAD, C.SIDEWALK, C.TERRAIN, C.BUILDING, C.VEGETATION} <= seen
    assert set(C.THING_CLASSES) <= seen
    assert frames[0].points.dtype == np.float32 and frames[0].points.shape[1] == 4
    assert frames[0].labels.dtype == np.uint8 and frames[0].instances.dtype == np.int32


def test_same_seed_same_bytes_different_seed_differs(small_config):
    cfg = small_config.with_overrides(**{"lidar.range_noise_std_m": 0.02, "lidar.dropout": 0.02})
    a = list(generate_sequence(cfg, 7, 2))
    b = list(generate_sequence(cfg, 7, 2))
    c = next(generate_sequence(cfg, 8, 1))
    for fa, fb in zip(a, b, strict=True):
        assert fa.points.tobytes() == fb.points.tobytes()
        assert fa.labels.tobytes() == fb.labels.tobytes()
        assert np.array_equal(fa.ego_pose, fb.ego_pose)
        for ca, cb in zip(fa.cameras, fb.cameras, strict=True):
            assert ca.image.tobytes() == cb.image.tobytes()
            assert ca.depth.tobytes() == cb.depth.tobytes()
    assert c.points.shape != a[0].points.shape or c.points.tobytes() != a[0].points.tobytes()
    # the ego actually moves between frames
    assert np.linalg.norm(a[1].ego_pose[:3, 3] - a[0].ego_pose[:3, 3]) > 0.3


def test_camera_rasteriser_matches_open3d_ray_casting(small_config):
    """The cameras are rasterised; each pixel must see the triangle a ray through its centre hits."""
    import open3d as o3d

    from clip2scene_ros.sim.generate import canonical_world
    from clip2scene_ros.sim.render import Renderer

    cfg = small_config.with_overrides(**{"threads": 2})
    world, r, t = canonical_world(cfg, 11), Renderer(cfg), 1.5
    verts = r._vertices(world, t)
    scene = r._scene(world, t, verts)
    for k, cam in enumerate(r.cameras):
        depth, tri = r._rasterize(world, t, verts, k)
        c2r = world.ego_road_pose(t) @ cam.cam_to_ego
        rays = np.concatenate(
            [np.broadcast_to(c2r[:3, 3], cam.directions.shape), cam.directions @ c2r[:3, :3].T], 1
        ).astype(np.float32)
        out = scene.cast_rays(o3d.core.Tensor(rays), nthreads=1)
        t_hit, prim = out["t_hit"].numpy(), out["primitive_ids"].numpy().astype(np.int64)
        hit = np.isfinite(t_hit)
        assert 0.5 < hit.mean() and np.array_equal(hit, tri >= 0), cam.name
        # a different triangle only where two surfaces coincide (ties): same depth, same material
        mt, a, b = world.materials, prim[hit], tri[hit]
        assert (a == b).mean() > 0.98, cam.name
        assert np.array_equal(mt.label[a], mt.label[b]) and np.array_equal(mt.instance[a], mt.instance[b]), cam.name
        np.testing.assert_allclose(depth[hit], t_hit[hit], rtol=1e-5, atol=1e-4)
    frame = next(generate_sequence(cfg, 11, 1, world=world, start_frame=round(t * cfg.frame_rate_hz)))
    cam0 = frame.cameras[0]
    assert cam0.image.dtype == np.uint8 and cam0.image.std() > 10
