"""Sensor models and the ray-casting renderer (Open3D ``RaycastingScene``, Embree underneath).

One merged triangle mesh per time stamp (static scenery + posed agents) is cast against once for
the LiDAR and once for all cameras together; the hit triangle indexes the per-triangle material
table, which gives labels, instances, colour patterns and LiDAR reflectivity.

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

from clip2scene_ros.sim import meshes as M
from clip2scene_ros.sim.config import CameraSpec, SimConfig
from clip2scene_ros.sim.transforms import invert, rot_y, rot_z, translation
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

    @staticmethod
    def from_config(cfg: SimConfig) -> LidarModel:
        lc = cfg.lidar
        el = np.radians(np.linspace(lc.vertical_fov_deg[0], lc.vertical_fov_deg[1], lc.beams))
        az = np.arange(lc.points_per_ring) * (2 * np.pi / lc.points_per_ring)
        azg, elg = np.meshgrid(az, el, indexing="ij")  # [ppr, beams]: one column of beams per azimuth
        d = np.stack([np.cos(elg) * np.cos(azg), np.cos(elg) * np.sin(azg), np.sin(elg)], -1).reshape(-1, 3)
        rings = np.tile(np.arange(lc.beams, dtype=np.uint8), lc.points_per_ring)
        l2e = translation(*lc.translation) @ rot_z(math.radians(lc.yaw_deg))
        return LidarModel(
            l2e, d.astype(np.float32), rings, lc.min_range_m, lc.max_range_m, lc.range_noise_std_m, lc.dropout
        )


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
    """Casts the LiDAR and the cameras of a ``SimConfig`` against a ``World``.

    Everything is computed in the world's road frame (see ``world.py``); poses handed in and out
    are converted at the boundary.
    """

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.lidar = LidarModel.from_config(config)
        cc = config.cameras
        self.cameras = [CameraModel.from_spec(s, cc.width, cc.height) for s in cc.specs()]
        self.threads = int(config.threads)
        self._workers = self.threads if self.threads > 0 else (os.cpu_count() or 1)
        self._ray_len = [np.linalg.norm(c.directions, axis=1).astype(np.float32) for c in self.cameras]
        # sensor noise as a fixed tile added at a random offset: as good as fresh noise for the eye,
        # and far cheaper than drawing millions of normals per frame
        tile_rng = np.random.default_rng(0xC11)
        self._noise_tile = (tile_rng.normal(0, 1, size=(61, 67, 3)) * cc.image_noise_std).astype(np.float32)
        self._pool: ThreadPoolExecutor | None = None

    def _map(self, fn, items: list) -> list:
        """Run fn over items on a small thread pool (numpy releases the GIL in its loops)."""
        if self._workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers)
        return list(self._pool.map(fn, items))

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)

    # -- scene ------------------------------------------------------------------------------------
    def _scene(self, world: World, t: float):
        o3d = _o3d()
        scene = o3d.t.geometry.RaycastingScene()
        verts = np.ascontiguousarray(world.vertices_at(t), dtype=np.float32)
        tris = np.ascontiguousarray(world.triangles(), dtype=np.uint32)
        scene.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(tris))
        return scene

    def _dir_buffer(self, n: int) -> np.ndarray:
        buf = getattr(self, "_dir_buf", None)
        if buf is None or len(buf) < n:
            self._dir_buf = buf = np.empty((n, 3), np.float32)
        return buf[:n]

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
        return np.stack([invert(a) for a in poses]).astype(np.float32) if len(poses) else np.zeros((0, 4, 4))

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
        r_noisy = np.maximum(r + noise, 0.0)[keep]
        sel = idx[keep]
        xyz = lm.directions[sel] * r_noisy[:, None]
        inten = refl[keep] * (0.3 + 0.7 * cos_inc[keep]) * 255.0 * (1.0 + 0.05 * inten_noise[keep])
        pts = np.empty((len(sel), 4), np.float32)
        pts[:, :3] = xyz
        pts[:, 3] = np.clip(np.round(inten), 0, 255)
        return LidarHits(pts, mt.label[tri[keep]], mt.instance[tri[keep]], lm.rings[sel])

    # -- cameras ----------------------------------------------------------------------------------
    def render_cameras(self, world: World, scene, t: float, rng: np.random.Generator) -> list[CameraRender]:
        if not self.cameras:
            return []
        ego = world.ego_road_pose(t)
        c2r = [ego @ cam.cam_to_ego for cam in self.cameras]
        offsets = np.cumsum([0] + [len(c.directions) for c in self.cameras])
        rays = np.empty((offsets[-1], 6), np.float32)  # filled in place: no concatenation copies
        for k, (cam, m) in enumerate(zip(self.cameras, c2r)):
            sl = slice(offsets[k], offsets[k + 1])
            rays[sl, :3] = m[:3, 3]
            np.matmul(cam.directions, m[:3, :3].T.astype(np.float32), out=self._dir_buffer(len(cam.directions)))
            rays[sl, 3:] = self._dir_buf[: len(cam.directions)]
        dirs = rays[:, 3:]
        t_hit, prim, normals = self._cast_rays(scene, rays)
        inv_agent = self._inverse_agents(world, t)
        th, tw, _ = self._noise_tile.shape
        noise_at = [(int(rng.integers(0, th)), int(rng.integers(0, tw))) for _ in self.cameras]

        def one(k: int) -> CameraRender:
            cam = self.cameras[k]
            sl = slice(offsets[k], offsets[k + 1])
            th_k = t_hit[sl]
            hit = np.isfinite(th_k)
            tri = np.where(hit, prim[sl], 0)
            rgb = self._shade(world, c2r[k][:3, 3].astype(np.float32), dirs[sl], self._ray_len[k], th_k, hit,
                              tri, normals[sl], inv_agent)  # fmt: skip
            img = rgb.reshape(cam.height, cam.width, 3)
            if self.config.cameras.image_noise_std > 0:
                oy, ox = noise_at[k]
                reps = (cam.height + oy) // th + 1, (cam.width + ox) // tw + 1, 1
                img += np.tile(self._noise_tile, reps)[oy : oy + cam.height, ox : ox + cam.width]
            mt = world.materials
            return CameraRender(
                np.clip(img + 0.5, 0, 255).astype(np.uint8),
                np.where(hit, mt.label[tri], 0).astype(np.uint8).reshape(cam.height, cam.width),  # 0 = sky
                np.where(hit, th_k, 0.0).astype(np.float32).reshape(cam.height, cam.width),
                np.where(hit, mt.instance[tri], 0).astype(np.int32).reshape(cam.height, cam.width),
            )

        return self._map(one, list(range(len(self.cameras))))

    def _shade(
        self,
        world: World,
        origin: np.ndarray,
        d: np.ndarray,
        ray_len: np.ndarray,
        t_hit: np.ndarray,
        hit: np.ndarray,
        tri: np.ndarray,
        normals: np.ndarray,
        inv_agent: np.ndarray,
    ) -> np.ndarray:
        """Colour (0..255 float32 [N,3]) of one camera's rays: patterned albedo, sun + sky light, haze.

        Shades every ray as if it hit something (misses use triangle 0 at distance 0) and paints
        the sky over the misses afterwards: cheaper than gathering the ~90% of rays that hit."""
        lt = world.lighting
        hor = lt.sky_horizon.astype(np.float32)
        zen = lt.sky_zenith.astype(np.float32)
        sun = lt.sun_dir.astype(np.float32)
        mt = world.materials
        t = np.where(hit, t_hit, np.float32(0.0))
        tex = self._texcoords(world, tri, origin + d * t[:, None], inv_agent)
        m = pattern_blend(tex, mt.pattern[tri], mt.freq[tri], mt.param[tri])
        cols = mt.packed_colors()[tri]  # [N,6]: colour1, colour2 - colour1
        grain = 0.88 + 0.24 * _noise(tex, 14.0)
        n = normals
        flip = np.einsum("ij,ij->i", n, d) > 0  # seen from behind: light the side we see
        n[flip] *= -1
        light = lt.ambient * (0.8 + 0.2 * n[:, 2]) + lt.sun * np.maximum(n @ sun, 0.0)
        col = cols[:, 3:] * m[:, None]
        col += cols[:, :3]
        col *= (light * grain)[:, None]
        gloss = mt.gloss[tri]
        gi = np.flatnonzero((gloss > 0) & hit)
        if len(gi):
            ng, vg = n[gi], d[gi] / ray_len[gi, None]
            refl = vg - 2 * np.einsum("ij,ij->i", vg, ng)[:, None] * ng
            spec = np.maximum(refl @ sun, 0.0) ** 20 * lt.sun
            sky_ref = hor + (zen - hor) * np.clip(refl[:, 2:3] * 2.5, 0, 1)
            col[gi] += gloss[gi, None] * (0.25 * sky_ref + spec[:, None])
        haze = 1.0 - np.exp(t * ray_len * np.float32(-1.0 / 400.0))
        col += (hor - col) * haze[:, None]
        col *= np.float32(255.0 * lt.exposure)
        # sky: horizon-to-zenith gradient, sun glow, blocky clouds
        si = np.flatnonzero(~hit)
        if len(si):
            ds = d[si] / ray_len[si, None]
            h = np.clip(ds[:, 2] * 2.5, 0.0, 1.0)[:, None]
            sky = hor + (zen - hor) * h
            glow = np.maximum(ds @ sun, 0.0) ** 24
            cloud = _noise(ds / np.maximum(ds[:, 2:3], 0.05), 1.3)
            cloud = np.clip((cloud - 0.55) * 2.5, 0, 1) * np.clip(ds[:, 2] * 6, 0, 1)
            sky = sky * (1 - 0.6 * cloud[:, None]) + 0.6 * cloud[:, None] * np.float32(0.95)
            col[si] = (sky + glow[:, None] * 0.5) * 255.0
        return col

    # -- both -------------------------------------------------------------------------------------
    def render(self, world: World, t: float, rng: np.random.Generator, cameras: bool = True):
        """(world <- ego pose, LidarHits, [CameraRender]) at time t."""
        scene = self._scene(world, t)
        lidar = self.render_lidar(world, scene, t, rng)
        cams = self.render_cameras(world, scene, t, rng) if cameras else []
        return world.ego_pose(t), lidar, cams
