"""Sensor models and the renderer: LiDAR by ray casting (Open3D ``RaycastingScene``, Embree
underneath), cameras by an exact z-buffer rasteriser (``raster.py``, numba) that finds the same
nearest triangle per pixel centre as a cast ray would, at a fraction of Open3D's cost.

One merged triangle mesh per time stamp (static scenery + posed agents) serves both; the hit
triangle indexes the per-triangle material table, which gives labels, instances, colour patterns
and LiDAR reflectivity.

Camera convention (OpenCV): optical frame x right, y down, z forward; pixel (row i, column j) has
its centre at continuous image coordinates (u, v) = (j, i), so the nearest pixel of a projected
point is ``round(u), round(v)``. ``depth`` is the z distance in the optical frame (0 = no hit, sky).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from clip2scene_ros.geometry.transforms import invert_transform, rot_y, rot_z, translation
from clip2scene_ros.sim import meshes as M
from clip2scene_ros.sim import raster
from clip2scene_ros.sim import taxonomy as C
from clip2scene_ros.sim.config import CameraSpec, LidarConfig, SimConfig
from clip2scene_ros.sim.world import World

# optical frame axes expressed in a forward-looking sensor frame (x fwd, y left, z up)
_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0, 0, 0, 1.0]])


def _o3d():
    try:
        import open3d as o3d
    except ImportError as e:  # the wheel needs Debian's libusb at import time
        raise ImportError(
            f"open3d is required for the simulator ({e}); install it with `pip install open3d==0.20.0` "
            "and, if libusb-1.0.so.0 is missing, `sudo apt-get install -y libusb-1.0-0`"
        ) from e
    return o3d


@dataclass
class LidarModel:
    lidar_to_ego: np.ndarray  # 4x4
    directions: np.ndarray  # float32 [N,3] unit rays in the LiDAR frame, azimuth-major order
    rings: np.ndarray  # uint8 [N] beam index (0 = lowest)
    min_range: float
    max_range: float
    noise_std: float
    dropout: float

    row_keep: np.ndarray | None = None  # float32 [N] keep probability per ray (None: keep all)
    intensity: bool = True
    # calibration residuals: rays are cast along ``directions`` but reported along these nominal
    # ones, with a per-beam range bias (None: a perfectly calibrated sensor)
    reported_directions: np.ndarray | None = None
    range_bias: np.ndarray | None = None  # float32 [N]

    @staticmethod
    def from_config(cfg: SimConfig, lidar: LidarConfig | None = None, seed: int = 0) -> LidarModel:
        """Rays of ``lidar`` (default ``cfg.lidar``): azimuth-major, ring 0 = the lowest beam. ``seed``
        draws the drive's calibration residuals (when the config asks for any)."""
        from clip2scene_ros.sim.sensors import row_keep_probability

        lc = cfg.lidar if lidar is None else lidar
        el_deg = lc.elevations_deg()
        beams = len(el_deg)
        az = np.arange(lc.points_per_ring) * (2 * np.pi / lc.points_per_ring)

        def rays(elevations_deg: np.ndarray) -> np.ndarray:
            azg, elg = np.meshgrid(az, np.radians(elevations_deg), indexing="ij")  # [ppr, beams]
            d = np.stack([np.cos(elg) * np.cos(azg), np.cos(elg) * np.sin(azg), np.sin(elg)], -1)
            return d.reshape(-1, 3).astype(np.float32)

        d = rays(el_deg)
        reported = bias = None
        if lc.beam_elevation_error_deg > 0 or lc.beam_range_bias_m > 0:
            crng = np.random.default_rng([int(seed), 0xCA1B])
            true_el = el_deg + crng.normal(0.0, 1.0, beams) * lc.beam_elevation_error_deg
            bias = np.tile(crng.normal(0.0, 1.0, beams) * lc.beam_range_bias_m, lc.points_per_ring).astype(np.float32)
            reported, d = d, rays(true_el)
        rings = np.tile(np.arange(beams, dtype=np.uint8), lc.points_per_ring)
        l2e = translation(*lc.translation) @ rot_z(math.radians(lc.yaw_deg))
        if lc.pitch_deg:  # about the car's lateral axis, nose down for positive pitch
            l2e = translation(*lc.translation) @ rot_y(math.radians(lc.pitch_deg)) @ rot_z(math.radians(lc.yaw_deg))
        keep = None
        if tuple(lc.row_keep) != (1.0, 1.0, 1.0):
            keep = np.tile(row_keep_probability(beams, tuple(lc.row_keep)), lc.points_per_ring)
        return LidarModel(
            l2e, d, rings, lc.min_range_m, lc.max_range_m, lc.range_noise_std_m, lc.dropout,
            keep, lc.intensity != "none", reported, bias,
        )  # fmt: skip


@dataclass
class CameraModel:
    name: str
    width: int
    height: int
    K: np.ndarray  # 3x3
    cam_to_ego: np.ndarray  # 4x4 (optical frame)
    directions: np.ndarray  # float32 [H*W,3] in the optical frame with z = 1 (t_hit = depth)

    @staticmethod
    def from_spec(spec: CameraSpec, width: int, height: int) -> CameraModel:
        fx = spec.fx_frac * width if spec.fx_frac > 0 else (width / 2.0) / math.tan(math.radians(spec.hfov_deg) / 2.0)
        fy = spec.fy_frac * width if spec.fy_frac > 0 else fx
        cx = spec.cx_frac * width if spec.cx_frac > 0 else (width - 1) / 2.0
        cy = spec.cy_frac * height if spec.cy_frac > 0 else (height - 1) / 2.0
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        c2e = (
            translation(*spec.translation)
            @ rot_z(math.radians(spec.yaw_deg))
            @ rot_y(math.radians(spec.pitch_deg))
            @ _OPTICAL
        )
        jj, ii = np.meshgrid(np.arange(width), np.arange(height))
        d = np.stack([(jj - cx) / fx, (ii - cy) / fy, np.ones_like(jj, dtype=np.float64)], -1)
        return CameraModel(spec.name, width, height, K, c2e, d.reshape(-1, 3).astype(np.float32))


@dataclass
class LidarHits:
    points: np.ndarray  # float32 [P,4] x, y, z, intensity (0..255) in the LiDAR frame
    labels: np.ndarray  # uint8 [P]
    instances: np.ndarray  # int32 [P]
    rings: np.ndarray  # uint8 [P]


@dataclass
class CameraRender:
    image: np.ndarray  # uint8 [H,W,3]
    labels: np.ndarray  # uint8 [H,W]
    depth: np.ndarray  # float32 [H,W]
    instances: np.ndarray  # int32 [H,W]


# --------------------------------------------------------------------------------------------------
def _noise(p: np.ndarray, freq: np.ndarray | float) -> np.ndarray:
    """Blocky value noise in [0, 1): an integer hash of the cell containing p * freq."""
    q = np.floor(p * (freq[:, None] if isinstance(freq, np.ndarray) else freq)).astype(np.int32)
    h = (q[:, 0] * np.int32(73856093)) ^ (q[:, 1] * np.int32(19349663)) ^ (q[:, 2] * np.int32(83492791))
    h = (h ^ (h >> 13)) * np.int32(1274126177)
    return ((h >> 9) & 0xFFFF).astype(np.float32) * np.float32(1.0 / 65536.0)


def smooth_noise(xy: np.ndarray, wavelength: float, seed: int) -> np.ndarray:
    """Value noise in [-1, 1] over the plane, smooth at ``wavelength`` (metres): a hash of the
    lattice corners, blended with smoothstep weights. A function of position only, so every sweep
    of a drive sees the same relief."""
    g = xy.astype(np.float64) / wavelength
    cell = np.floor(g).astype(np.int64)
    f = g - cell
    f = f * f * (3.0 - 2.0 * f)

    def corner(dx: int, dy: int) -> np.ndarray:
        h = (cell[:, 0] + dx) * np.int64(73856093) ^ (cell[:, 1] + dy) * np.int64(19349663) ^ np.int64(seed * 83492791)
        h = (h ^ (h >> 13)) * np.int64(1274126177)
        return ((h >> 11) & 0xFFFF).astype(np.float64) * (2.0 / 65535.0) - 1.0

    top = corner(0, 0) * (1 - f[:, 0]) + corner(1, 0) * f[:, 0]
    bottom = corner(0, 1) * (1 - f[:, 0]) + corner(1, 1) * f[:, 0]
    return (top * (1 - f[:, 1]) + bottom * f[:, 1]).astype(np.float32)


@dataclass
class SurfaceRelief:
    """Height offsets the LiDAR sees on flat ground (``scene.*_roughness_m``), for one drive."""

    terrain_m: float = 0.0
    paved_m: float = 0.0
    seed: int = 0
    terrain_rise_m: float = 0.0

    @staticmethod
    def for_drive(config: SimConfig, seed: int) -> SurfaceRelief:
        sc = config.scene
        if max(sc.terrain_roughness_m) <= 0 and max(sc.paved_roughness_m) <= 0 and max(sc.terrain_rise_m) <= 0:
            return SurfaceRelief()
        rng = np.random.default_rng([int(seed), 0x5EF])
        relief = SurfaceRelief(float(rng.uniform(*sc.terrain_roughness_m)), float(rng.uniform(*sc.paved_roughness_m)),
                               int(rng.integers(1 << 20)))  # fmt: skip
        if max(sc.terrain_rise_m) > 0:  # drawn last: drives without it keep their relief
            relief.terrain_rise_m = float(rng.uniform(*sc.terrain_rise_m))
        return relief

    def __bool__(self) -> bool:
        return self.terrain_m > 0 or self.paved_m > 0 or self.terrain_rise_m > 0

    def offsets(self, xy: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Vertical offset (m) of each hit at road-frame ``xy`` on a surface of class ``labels``."""
        dz = np.zeros(len(xy), np.float32)
        terrain = labels == C.TERRAIN
        if self.terrain_m > 0 and terrain.any():
            p = xy[terrain]
            # hummocks (metres wide) and tussocks (decimetres), all at or above the soil, plus grass
            # tips a ray catches here and there (fresh per sweep, as real returns from grass are)
            field = 0.6 * smooth_noise(p, 1.7, self.seed) + 0.4 * smooth_noise(p, 0.35, self.seed + 1)
            tips = rng.random(len(p), dtype=np.float32) < 0.2
            dz[terrain] = self.terrain_m * (0.5 + 0.5 * field + tips * rng.random(len(p), dtype=np.float32))
        if self.terrain_rise_m > 0 and terrain.any():
            # a field ~10 m across, squared so that most verges stay low and some rise to the peak:
            # grass level with the pavement, banks sloping up from it, a few decimetres above it
            rise = 0.5 + 0.5 * smooth_noise(xy[terrain], 9.0, self.seed + 4)
            dz[terrain] += self.terrain_rise_m * rise * rise
        paved = (labels == C.ROAD) | (labels == C.SIDEWALK)
        if self.paved_m > 0 and paved.any():
            p = xy[paved]
            wear = 0.5 * smooth_noise(p, 2.5, self.seed + 2) + 0.5 * smooth_noise(p, 0.4, self.seed + 3)
            dz[paved] = self.paved_m * wear
        return dz


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def pattern_blend(p: np.ndarray, pattern: np.ndarray, freq: np.ndarray, param: np.ndarray) -> np.ndarray:
    """Blend factor m in [0,1] between colour1 and colour2 at texture coordinates p (float32 [N,3])."""
    m = np.zeros(len(p), np.float32)
    present = np.flatnonzero(np.bincount(pattern, minlength=M.NUM_PATTERNS))  # cheaper than np.unique
    for kind in present:
        if kind == M.P_PLAIN:
            continue
        idx = np.flatnonzero(pattern == kind)
        q, f, a = p[idx], freq[idx], param[idx]
        if kind == M.P_PLAIN:
            continue
        if kind == M.P_ROAD:
            k = np.round(q[:, 1] / f)
            near = np.abs(q[:, 1] - k * f) < 0.075
            solid = (k == 0) | (np.abs(k) >= a)
            dashed = _frac(q[:, 0] / 9.0) < 0.35
            edge_ok = np.abs(k) <= a
            val = (near & edge_ok & (solid | dashed)).astype(np.float32)
            val *= 0.75 + 0.25 * _noise(q, 9.0)
        elif kind == M.P_TILES:
            u, v = _frac(q[:, 0] * f), _frac((q[:, 1] + q[:, 2]) * f)
            val = ((u < 0.07) | (v < 0.07)).astype(np.float32)
        elif kind == M.P_WINDOWS:
            u = _frac((q[:, 0] + q[:, 1]) * f)
            v = _frac(q[:, 2] / a)
            val = ((u > 0.25) & (u < 0.75) & (v > 0.3) & (v < 0.8) & (q[:, 2] > 0.8)).astype(np.float32)
        elif kind == M.P_FOLIAGE:
            val = 0.6 * _noise(q, f) + 0.4 * _noise(q + 0.37, f * 3.7)
        elif kind == M.P_HBANDS:
            val = (_frac(q[:, 2] * f) < 0.5).astype(np.float32)
        elif kind == M.P_DIAG:
            val = (_frac((q[:, 0] + q[:, 1] + q[:, 2]) * f) < 0.5).astype(np.float32)
        else:  # P_NOISE
            val = _noise(q, f)
        m[idx] = val
    return m


class Renderer:
    """Renders the LiDAR and the cameras of a ``SimConfig`` against a ``World``.

    Everything is computed in the world's road frame (see ``world.py``); poses handed in and out
    are converted at the boundary.
    """

    def __init__(self, config: SimConfig, lidar: LidarConfig | None = None, seed: int = 0) -> None:
        """``seed``: the drive's, for its per-drive draws (calibration residuals, surface relief)."""
        self.config = config
        self.lidar = LidarModel.from_config(config, lidar, seed)
        self.relief = SurfaceRelief.for_drive(config, seed)
        cc = config.cameras
        self.cameras = [CameraModel.from_spec(s, cc.width, cc.height) for s in cc.specs()]
        self.threads = int(config.threads)
        self._workers = self.threads if self.threads > 0 else (os.cpu_count() or 1)
        # sensor noise as a fixed tile added at a random offset: as good as fresh noise for the eye,
        # and far cheaper than drawing millions of normals per frame
        tile_rng = np.random.default_rng(0xC11)
        self._noise_tile = (tile_rng.normal(0, 1, size=(61, 67, 3)) * cc.image_noise_std).astype(np.float32)
        self._pool: ThreadPoolExecutor | None = None

    def _map(self, fn, items: list) -> list:
        """Run fn over items on a small thread pool (numpy releases the GIL in its loops)."""
        if self._workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        return list(self._executor().map(fn, items))

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers)
        return self._pool

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)

    # -- scene ------------------------------------------------------------------------------------
    def _scene(self, world: World, t: float, verts: np.ndarray | None = None):
        """Open3D scene of the posed world (the LiDAR casts against it); verts: ``_vertices(world, t)``."""
        o3d = _o3d()
        scene = o3d.t.geometry.RaycastingScene()
        verts = self._vertices(world, t) if verts is None else verts
        scene.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(world.triangles_i32().view(np.uint32)))
        return scene

    def _cast(self, scene, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rays = np.empty((len(dirs), 6), np.float32)
        rays[:, :3] = origins
        rays[:, 3:] = dirs
        return self._cast_rays(scene, rays)

    def _cast_rays(self, scene, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        o3d = _o3d()
        out = scene.cast_rays(o3d.core.Tensor.from_numpy(rays), nthreads=self.threads)  # shares memory
        # primitive ids stay uint32 (INVALID_ID = 2**32-1 on a miss; callers mask with isfinite(t_hit))
        return out["t_hit"].numpy(), out["primitive_ids"].numpy(), out["primitive_normals"].numpy()

    # -- surface attributes -----------------------------------------------------------------------
    @staticmethod
    def _texcoords(world: World, tri: np.ndarray, p: np.ndarray, inv_agent: np.ndarray) -> np.ndarray:
        """Texture coordinates: the road-frame hit point for scenery, the agent-frame point for agents
        (so textures stick to moving objects). Modifies and returns ``p``."""
        if len(inv_agent):
            owner = world.tri_owner[tri]
            dyn = np.flatnonzero(owner >= 0)
            if len(dyn):
                o = owner[dyn]
                p[dyn] = np.einsum("nij,nj->ni", inv_agent[o, :3, :3], p[dyn]) + inv_agent[o, :3, 3]
        return p

    @staticmethod
    def _inverse_agents(world: World, t: float) -> np.ndarray:
        poses = world.agent_road_poses(t)
        return np.stack([invert_transform(a) for a in poses]).astype(np.float32) if len(poses) else np.zeros((0, 4, 4))

    # -- LiDAR ------------------------------------------------------------------------------------
    def render_lidar(self, world: World, scene, t: float, rng: np.random.Generator) -> LidarHits:
        lm = self.lidar
        l2r = world.ego_road_pose(t) @ lm.lidar_to_ego
        origin = l2r[:3, 3].astype(np.float32)
        dirs = (lm.directions @ l2r[:3, :3].T.astype(np.float32)).astype(np.float32)
        t_hit, prim, normals = self._cast(scene, origin, dirs)
        ok = np.isfinite(t_hit) & (t_hit >= lm.min_range) & (t_hit <= lm.max_range)
        idx = np.flatnonzero(ok)
        r = t_hit[idx]
        tri = prim[idx]
        mt = world.materials
        tex = self._texcoords(world, tri, origin + dirs[idx] * r[:, None], self._inverse_agents(world, t))
        m = pattern_blend(tex, mt.pattern[tri], mt.freq[tri], mt.param[tri])
        refl = mt.reflect[tri, 0] + (mt.reflect[tri, 1] - mt.reflect[tri, 0]) * m
        cos_inc = np.abs(np.einsum("ij,ij->i", normals[idx], dirs[idx]))
        # returns get lost more often from dark surfaces far away and at grazing angles
        p_drop = lm.dropout * (1.0 + 2.0 * (1.0 - refl) * (r / lm.max_range) + 2.0 * (cos_inc < 0.1))
        u = rng.random(len(idx), dtype=np.float32)
        noise = rng.normal(0.0, 1.0, len(idx)).astype(np.float32) * lm.noise_std
        inten_noise = rng.normal(0.0, 1.0, len(idx)).astype(np.float32)
        keep = u >= p_drop
        if lm.row_keep is not None:  # structured ray drop (own draw: the default stream is unchanged)
            keep &= rng.random(len(idx), dtype=np.float32) < lm.row_keep[idx]
        if lm.range_bias is not None:
            noise += lm.range_bias[idx]
        r_noisy = np.maximum(r + noise, 0.0)[keep]
        sel = idx[keep]
        xyz = (lm.directions if lm.reported_directions is None else lm.reported_directions)[sel] * r_noisy[:, None]
        labels = mt.label[tri[keep]]
        if self.relief:  # raise the hit along the road's up axis, expressed in the LiDAR frame
            hit_xy = origin[:2] + dirs[sel, :2] * r[keep, None]
            xyz += self.relief.offsets(hit_xy, labels, rng)[:, None] * l2r[2, :3].astype(np.float32)
        inten = refl[keep] * (0.3 + 0.7 * cos_inc[keep]) * 255.0 * (1.0 + 0.05 * inten_noise[keep])
        pts = np.empty((len(sel), 4), np.float32)
        pts[:, :3] = xyz
        pts[:, 3] = np.clip(np.round(inten), 0, 255) if lm.intensity else 0.0
        return LidarHits(pts, labels, mt.instance[tri[keep]], lm.rings[sel])

    # -- cameras ----------------------------------------------------------------------------------
    def _camera_pose(self, world: World, t: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(road <- optical rotation, optical centre) of camera k at time t, float64 contiguous."""
        c2r = world.ego_road_pose(t) @ self.cameras[k].cam_to_ego
        return np.ascontiguousarray(c2r[:3, :3]), np.ascontiguousarray(c2r[:3, 3])

    def _rasterize(self, world: World, t: float, verts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(depth float64 [H*W], inf = miss; nearest triangle int32 [H*W], -1 = miss) of camera k."""
        cam = self.cameras[k]
        (fx, _, cx), (_, fy, cy) = cam.K[0], cam.K[1]
        rot, origin = self._camera_pose(world, t, k)
        depth = np.empty(cam.height * cam.width)
        tri = np.empty(cam.height * cam.width, np.int32)
        raster.rasterize(verts, world.triangles_i32(), rot, origin, fx, fy, cx, cy, cam.width, cam.height, depth, tri)
        return depth, tri

    @staticmethod
    def _vertices(world: World, t: float) -> np.ndarray:
        return np.ascontiguousarray(world.vertices_at(t), dtype=np.float32)

    def render_cameras(
        self,
        world: World,
        t: float,
        rng: np.random.Generator,
        rasters: list | None = None,
        verts: np.ndarray | None = None,
    ) -> list[CameraRender]:
        """Rasterise (unless ``rasters`` from ``_rasterize`` are given) and shade every camera."""
        if not self.cameras:
            return []
        verts = self._vertices(world, t) if verts is None else verts
        if rasters is None:
            rasters = self._map(lambda k: self._rasterize(world, t, verts, k), list(range(len(self.cameras))))
        normals = M.triangle_normals(verts, world.triangles_i32())
        inv = self._inverse_agents(world, t).astype(np.float64)
        inv_agent = np.ascontiguousarray(inv if len(inv) else np.zeros((1, 4, 4)))
        lt = world.lighting
        light = np.concatenate([lt.sun_dir, lt.sky_horizon, lt.sky_zenith, [lt.sun, lt.ambient, lt.exposure]])
        light = np.ascontiguousarray(light, dtype=np.float64)
        th, tw, _ = self._noise_tile.shape
        noise_at = [(int(rng.integers(0, th)), int(rng.integers(0, tw))) for _ in self.cameras]
        mt = world.materials
        owner = np.ascontiguousarray(world.tri_owner, dtype=np.int32)

        def one(k: int) -> CameraRender:
            cam = self.cameras[k]
            (fx, _, cx), (_, fy, cy) = cam.K[0], cam.K[1]
            rot, origin = self._camera_pose(world, t, k)
            n = cam.height * cam.width
            image, labels = np.empty((n, 3), np.uint8), np.empty(n, np.uint8)
            depth, instances = np.empty(n, np.float32), np.empty(n, np.int32)
            raster.shade(
                rasters[k][0], rasters[k][1], rot, origin, fx, fy, cx, cy, cam.width, normals, owner, inv_agent,
                mt.pattern, mt.freq, mt.param, mt.packed_colors(), mt.gloss, mt.label, mt.instance, light,
                self._noise_tile, noise_at[k][0], noise_at[k][1], image, labels, depth, instances,
            )  # fmt: skip
            hw = (cam.height, cam.width)
            return CameraRender(image.reshape(*hw, 3), labels.reshape(hw), depth.reshape(hw), instances.reshape(hw))

        return self._map(one, list(range(len(self.cameras))))

    # -- both -------------------------------------------------------------------------------------
    def render(self, world: World, t: float, rng: np.random.Generator, cameras: bool = True):
        """(world <- ego pose, LidarHits, [CameraRender]) at time t.

        With more than one worker the cameras are rasterised on the pool while this thread casts the
        LiDAR (numba and Open3D both release the GIL); random numbers are still drawn in a fixed order.
        """
        pending = None
        verts = self._vertices(world, t)
        if cameras and self.cameras:
            jobs = [lambda k=k: self._rasterize(world, t, verts, k) for k in range(len(self.cameras))]
            if self._workers > 1:
                pending = [self._executor().submit(job) for job in jobs]
        scene = self._scene(world, t, verts)
        lidar = self.render_lidar(world, scene, t, rng)
        cams = []
        if cameras and self.cameras:
            rasters = [f.result() for f in pending] if pending is not None else [job() for job in jobs]
            cams = self.render_cameras(world, t, rng, rasters, verts)
        return world.ego_pose(t), lidar, cams
