"""Real LiDAR models in the simulator: beam tables, mounts, ray drop, randomisation, base frame."""

from __future__ import annotations

import numpy as np
import pytest

from clip2scene_ros.sim import SimConfig, generate_sequence
from clip2scene_ros.sim.config import SimConfigError
from clip2scene_ros.sim.sensors import (
    BEAM_TABLES,
    PRESETS,
    beam_elevations,
    lidar_for_seed,
    preset_overrides,
    row_keep_probability,
)


def _kitti(**extra) -> SimConfig:
    return SimConfig.default().with_overrides(**{**preset_overrides("hdl64e_kitti"), "threads": 1, **extra})


def _elevation(points: np.ndarray) -> np.ndarray:
    r = np.linalg.norm(points[:, :3], axis=1)
    return np.degrees(np.arcsin(points[:, 2] / r))


def test_beam_tables_are_the_published_ones():
    assert {k: len(v) for k, v in BEAM_TABLES.items()} == {
        "hdl64e_kitti": 64, "hdl32e": 32, "vlp16": 16, "os1_64": 64, "os1_128": 128,
    }  # fmt: skip
    for name in BEAM_TABLES:
        assert np.all(np.diff(beam_elevations(name)) > 0), name  # lowest beam first
    np.testing.assert_allclose(beam_elevations("hdl32e")[[0, -1]], [-30.67, 10.67], atol=0.005)
    np.testing.assert_allclose(beam_elevations("vlp16")[[0, -1]], [-15.0, 15.0])
    np.testing.assert_allclose(beam_elevations("os1_64")[[0, -1]], [16.611 - 0.527 * 63, 16.611])
    kitti = beam_elevations("hdl64e_kitti")
    assert kitti[0] == -23.53 and kitti[-1] == 2.92
    # two blocks: ~0.5 deg steps in the lower 32 lasers, ~0.34 deg in the upper 32
    assert 0.45 < np.diff(kitti[:32]).mean() < 0.55 and 0.3 < np.diff(kitti[32:]).mean() < 0.38
    keep = row_keep_probability(64, (0.5, 0.9, 0.7))
    assert keep[0] == pytest.approx(0.5) and keep[32] == pytest.approx(0.9) and keep[-1] == pytest.approx(0.7)


def test_config_validation_names_the_key():
    with pytest.raises(SimConfigError, match="beam_table"):
        SimConfig.default().with_overrides(**{"lidar.beam_table": "hdl65"})
    with pytest.raises(SimConfigError, match="has 64 beams"):
        SimConfig.default().with_overrides(**{"lidar.beam_table": "hdl64e_kitti"})  # beams still 32
    with pytest.raises(SimConfigError, match="randomize"):
        SimConfig.default().with_overrides(**{"lidar.randomize": ["hdl64e_kitti", "nope"]})
    with pytest.raises(SimConfigError, match="row_keep"):
        SimConfig.default().with_overrides(**{"lidar.row_keep": [0.5, 1.2, 1.0]})


def test_hdl64e_scan_follows_the_kitti_table(o3d_available):
    cfg = _kitti(**{"lidar.range_noise_std_m": 0.0})
    frame = next(generate_sequence(cfg, seed=3, num_frames=1, cameras=False))
    table = beam_elevations("hdl64e_kitti")
    el = _elevation(frame.points)
    # every return lies on its beam's cone (exact up to float32), rings index the table
    np.testing.assert_allclose(el, table[frame.rings], atol=0.02)
    # the elevation histogram: every beam returns, the low block (ground) densest
    counts = np.bincount(frame.rings, minlength=64)
    assert (counts > 0).all()
    assert counts[:32].sum() > counts[32:].sum()
    r = np.linalg.norm(frame.points[:, :3], axis=1)
    assert r.min() >= 2.5 and r.max() <= 80.0  # KITTI's published range window
    # the sensor sits 1.73 m above the road, x forward (KITTI axes in the ego frame)
    np.testing.assert_allclose(frame.lidar_to_ego[:3, 3], PRESETS["hdl64e_kitti"].translation)
    np.testing.assert_allclose(frame.lidar_to_ego[:3, :3], np.eye(3), atol=1e-12)


def test_points_per_range_bin_close_to_a_real_kitti_scan(real_data, o3d_available):
    real = np.fromfile(real_data / "kitti-frame" / "training" / "velodyne" / "000001.bin", np.float32).reshape(-1, 4)
    bins = np.arange(0, 90, 10)
    real_frac = np.histogram(np.linalg.norm(real[:, :3], axis=1), bins)[0] / len(real)
    cfg = _kitti()
    sims = [next(generate_sequence(cfg, seed=s, num_frames=1, cameras=False)).points for s in (0, 2)]
    for pts in sims:
        assert 0.7 < len(pts) / len(real) < 1.3, (len(pts), len(real))  # 120k real returns
        frac = np.histogram(np.linalg.norm(pts[:, :3], axis=1), bins)[0] / len(pts)
        # 0-10 / 10-20 / 20-30 m hold ~52 / 27 / 10 % of the real returns
        np.testing.assert_allclose(frac[:3], real_frac[:3], atol=0.08)
        assert frac[5:].sum() < 0.06  # little beyond 50 m, as in KITTI


def test_row_keep_map_and_no_intensity(o3d_available):
    base = _kitti(**{"lidar.row_keep": [1.0, 1.0, 1.0], "lidar.dropout": 0.0})
    full = next(generate_sequence(base, seed=5, num_frames=1, cameras=False))
    cfg = base.with_overrides(**{"lidar.row_keep": [0.5, 1.0, 1.0], "lidar.intensity": "none"})
    thin = next(generate_sequence(cfg, seed=5, num_frames=1, cameras=False))
    low_full = np.count_nonzero(full.rings < 8)
    low_thin = np.count_nonzero(thin.rings < 8)
    assert 0.4 < low_thin / low_full < 0.6
    mid = (full.rings >= 16) & (full.rings < 48)
    assert np.count_nonzero((thin.rings >= 16) & (thin.rings < 48)) == np.count_nonzero(mid)
    assert (thin.points[:, 3] == 0).all() and full.points[:, 3].max() > 0


def test_sensor_randomisation_per_drive(o3d_available):
    cfg = SimConfig.default().with_overrides(
        **{
            "lidar.randomize": ["hdl64e_kitti", "vlp16", "os1_128"],
            "lidar.mount_height_jitter_m": 0.1,
            "lidar.mount_pitch_jitter_deg": 1.0,
            "threads": 1,
        }
    )
    picked = {}
    for seed in range(12):
        lc = lidar_for_seed(cfg, seed)
        assert lc == lidar_for_seed(cfg, seed)  # deterministic
        preset = PRESETS[lc.beam_table]
        assert abs(lc.translation[2] - preset.translation[2]) <= 0.1 and abs(lc.pitch_deg) <= 1.0
        picked[lc.beam_table] = seed
    assert set(picked) == {"hdl64e_kitti", "vlp16", "os1_128"}
    seed = picked["vlp16"]
    frame = next(generate_sequence(cfg, seed=seed, num_frames=1, cameras=False))
    assert frame.rings.max() == 15
    lc = lidar_for_seed(cfg, seed)
    np.testing.assert_allclose(frame.lidar_to_ego[:3, 3], lc.translation)
    # the pitched mount still sees the road about the mount height below the sensor, in the ego frame
    ego = frame.points[:, :3] @ frame.lidar_to_ego[:3, :3].T + frame.lidar_to_ego[:3, 3]
    road = frame.labels == 1
    assert abs(np.median(ego[road, 2])) < 0.1


def test_synthetic_dataset_in_the_base_frame(o3d_available):
    from clip2scene_ros.datasets.synthetic import SyntheticDataset

    cfg = SimConfig.default().with_overrides(
        **{"cameras.width": 160, "cameras.height": 96, "lidar.points_per_ring": 180, "threads": 1}
    )
    kw = {"seeds": [7], "key_frames_per_scene": 1, "sim_config": cfg}
    lidar = SyntheticDataset(**kw)[0]
    base = SyntheticDataset(frame="base_link", **kw)[0]
    assert lidar.points.shape == base.points.shape
    road = base.labels == 1
    assert abs(np.median(base.points[road, 2])) < 0.1  # ground near z = 0
    assert abs(np.median(lidar.points[road, 2]) + 1.84) < 0.1  # 1.84 m below LIDAR_TOP
    # the cameras see the same pixels for the same points in both frames
    for a, b in zip(lidar.cameras, base.cameras, strict=True):
        pa = a.T_cam_from_lidar[:3, :3] @ lidar.points[:50, :3].T.astype(np.float64)
        pb = b.T_cam_from_lidar[:3, :3] @ base.points[:50, :3].T.astype(np.float64)
        np.testing.assert_allclose(pa + a.T_cam_from_lidar[:3, 3:], pb + b.T_cam_from_lidar[:3, 3:], atol=1e-4)
    with pytest.raises(ValueError, match="base_link"):
        SyntheticDataset(frame="map", **kw)


def test_street_variety(o3d_available):
    """scene.variety: other lane counts, open sides without buildings, hedges; off = the classic street."""
    from clip2scene_ros.sim import build_world
    from clip2scene_ros.sim.taxonomy import BUILDING, VEGETATION

    def counts(cfg, seed):
        w = build_world(cfg, seed, duration_s=2.0)
        labels = w.materials.label
        return np.count_nonzero(labels == BUILDING), np.count_nonzero(labels == VEGETATION)

    classic = SimConfig.default().with_overrides(threads=1)
    varied = classic.with_overrides(**{"scene.variety": True})
    assert counts(classic, 4) == counts(SimConfig.default().with_overrides(threads=1), 4)  # deterministic
    per_seed = [counts(varied, s) for s in range(8)]
    classic_buildings = [counts(classic, s)[0] for s in range(8)]
    # some varied streets have far fewer buildings (open sides)
    assert min(b for b, _ in per_seed) < 0.6 * min(classic_buildings)


def test_cross_streets(o3d_available):
    """scene.cross_streets: side roads leave the main road at right angles, with no building, bush or
    parked car in their mouth; 0 keeps the street without junctions."""
    from clip2scene_ros.sim import build_world
    from clip2scene_ros.sim.taxonomy import BUILDING, CAR, ROAD
    from clip2scene_ros.sim.world import _Builder

    base = SimConfig.default().with_overrides(threads=1, **{"scene.variety": True})
    junctions = base.with_overrides(**{"scene.cross_streets": 2.0})

    def road_reach(world) -> float:
        """How far from the main road's centre line road surface reaches (m)."""
        tri = world.static_triangles[world.materials.label[: len(world.static_triangles)] == ROAD]
        return float(np.abs(world.static_vertices[tri.ravel(), 1]).max())

    assert road_reach(build_world(base, 3, 20.0)) < 25.0  # lanes + parking only
    reached, seen = 0, 0
    for seed in range(4):
        b = _Builder(junctions, np.random.default_rng([seed, 0x5C3E]))
        world = b.build(20.0)
        spans = [(g0, g1) for side in (-1, 1) for _, _, g0, g1 in b.cross[side]]
        seen += len(spans)
        reached += road_reach(world) > 100.0
        # nothing stands in a junction's mouth (first 10 m beyond the main road's parking lane)
        half = junctions.scene.lanes_per_direction * junctions.scene.lane_width_m + junctions.scene.parking_width_m
        tri = world.static_triangles
        labels = world.materials.label[: len(tri)]
        centre = world.static_vertices[tri].mean(1)
        for side in (-1, 1):
            for r0, r1, _, _ in b.cross[side]:
                mouth = (centre[:, 0] > r0) & (centre[:, 0] < r1) & (side * centre[:, 1] > half + 0.5)
                mouth &= side * centre[:, 1] < half + 10.0
                assert not np.isin(labels[mouth], [BUILDING, CAR]).any()
    assert seen >= 4 and reached == 4


def test_surface_relief_and_calibration_residuals(o3d_available):
    """Rough terrain, worn paving and per-beam calibration residuals: what real ground looks like to a
    LiDAR. Terrain becomes much rougher than road; the relief is fixed in the world (two sweeps of
    a drive agree) and the defaults leave the classic flat surfaces untouched."""
    from clip2scene_ros.models.ground import height_above_ground
    from clip2scene_ros.sim.render import SurfaceRelief, smooth_noise
    from clip2scene_ros.sim.taxonomy import ROAD, TERRAIN
    from clip2scene_ros.sparse import voxelize

    # the noise field: bounded, smooth (neighbours 1 cm apart differ little), deterministic
    xy = np.random.default_rng(0).uniform(-50, 50, size=(4000, 2)).astype(np.float32)
    n = smooth_noise(xy, 1.0, 7)
    assert n.min() >= -1 and n.max() <= 1 and n.std() > 0.2
    assert np.abs(smooth_noise(xy + 0.01, 1.0, 7) - n).max() < 0.1
    np.testing.assert_array_equal(n, smooth_noise(xy, 1.0, 7))
    assert not np.allclose(n, smooth_noise(xy, 1.0, 8))

    flat = _kitti(**{"scene.variety": True, "scene.cross_streets": 1.0})
    assert not SurfaceRelief.for_drive(flat, 3)
    rough = flat.with_overrides(**{
        "scene.terrain_roughness_m": [0.2, 0.2], "scene.paved_roughness_m": [0.03, 0.03],
        "lidar.beam_elevation_error_deg": 0.05, "lidar.beam_range_bias_m": 0.015,
    })  # fmt: skip
    relief = SurfaceRelief.for_drive(rough, 3)
    assert relief.terrain_m == pytest.approx(0.2) and relief.paved_m == pytest.approx(0.03)

    def heights(cfg, seed):
        f = next(generate_sequence(cfg, seed=seed, num_frames=1, cameras=False))
        pts = f.points[:, :3] @ f.lidar_to_ego[:3, :3].T + f.lidar_to_ego[:3, 3]
        v = voxelize(__import__("torch").from_numpy(pts.astype(np.float32)), 0.2)
        h = height_above_ground(v.feats[:, :3], v.coords[:, 0], v.counts).numpy()[v.point_to_voxel.numpy()]
        return h, f.labels

    spread = {}
    for name, cfg in (("flat", flat), ("rough", rough)):
        h, labels = heights(cfg, 3)
        spread[name] = {c: float(np.percentile(h[labels == c], 90)) for c in (ROAD, TERRAIN)}
    assert spread["flat"][TERRAIN] < 0.03 and spread["flat"][ROAD] < 0.03
    assert spread["rough"][TERRAIN] > 0.08  # hummocks and grass tips
    assert spread["rough"][TERRAIN] > 2.5 * spread["rough"][ROAD]
    assert 0.01 < spread["rough"][ROAD] < 0.06  # worn, not broken

    # the relief is a property of the place: a second sweep sees the same hummocks (smooth part)
    a = relief.offsets(xy, np.full(len(xy), TERRAIN), np.random.default_rng(1))
    b = relief.offsets(xy, np.full(len(xy), TERRAIN), np.random.default_rng(2))
    assert np.mean(a == b) > 0.5  # the same hummock wherever neither sweep caught a grass tip
    np.testing.assert_array_equal(relief.offsets(xy, np.full(len(xy), 0), np.random.default_rng(1)), 0.0)

    # rising terrain (verges and banks above the pavement): drawn after the other draws, so a drive
    # keeps its roughness; terrain goes up by up to the drawn peak over metres, nothing else moves
    risen = rough.with_overrides(**{"scene.terrain_rise_m": [0.4, 0.4]})
    lifted = SurfaceRelief.for_drive(risen, 3)
    assert (lifted.terrain_m, lifted.seed) == (relief.terrain_m, relief.seed) and lifted.terrain_rise_m == 0.4
    up = lifted.offsets(xy, np.full(len(xy), TERRAIN), np.random.default_rng(1)) - a
    assert up.min() >= 0 and up.max() <= 0.4 + 1e-6 and np.percentile(up, 90) > 0.15
    np.testing.assert_array_equal(lifted.offsets(xy, np.full(len(xy), ROAD), np.random.default_rng(1)),
                                  relief.offsets(xy, np.full(len(xy), ROAD), np.random.default_rng(1)))  # fmt: skip
    h, labels = heights(risen, 3)
    assert np.percentile(h[labels == TERRAIN], 90) > spread["rough"][TERRAIN] + 0.05


def test_calibration_residuals_move_rings_not_reported_angles(o3d_available):
    """Each beam fires off its nominal elevation by a fixed amount per drive, but the sensor reports
    the nominal angle: the points stay on the table's cones while the ground rings shift."""
    base = _kitti(**{"lidar.range_noise_std_m": 0.0})
    off = base.with_overrides(**{"lidar.beam_elevation_error_deg": 0.1, "lidar.beam_range_bias_m": 0.02})
    f0 = next(generate_sequence(base, seed=5, num_frames=1, cameras=False))
    f1 = next(generate_sequence(off, seed=5, num_frames=1, cameras=False))
    table = beam_elevations("hdl64e_kitti")
    np.testing.assert_allclose(_elevation(f1.points), table[f1.rings], atol=0.02)  # nominal angles

    # the lowest ring on the road in front: its mean range moves by the per-beam error
    def ring_range(f, ring):
        m = (f.rings == ring) & (np.abs(f.points[:, 1]) < 2.0) & (f.points[:, 0] > 0)
        return float(np.linalg.norm(f.points[m, :3], axis=1).mean())

    shifts = [abs(ring_range(f1, k) - ring_range(f0, k)) for k in range(0, 8)]
    assert max(shifts) > 0.02
    with pytest.raises(SimConfigError, match="standard deviations"):
        base.with_overrides(**{"lidar.beam_range_bias_m": -0.01})
    with pytest.raises(SimConfigError, match="terrain_roughness_m"):
        base.with_overrides(**{"scene.terrain_roughness_m": [0.3, 0.1]})
    with pytest.raises(SimConfigError, match="curb_height_m"):
        base.with_overrides(**{"scene.curb_height_m": [-0.1, 0.1]})
    with pytest.raises(SimConfigError, match="terrain_rise_m"):
        base.with_overrides(**{"scene.terrain_rise_m": [0.5, 0.2]})
