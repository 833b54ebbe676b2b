"""The world: static scenery, moving agents, the ego trajectory, sky and light; procedural builder.

Everything is laid out in a *road frame* (x along the road, y to the left, z up, road surface at
z = 0, right-hand traffic), then placed in the world by ``road_to_world`` (a random yaw and offset),
so ego poses are not trivially axis-aligned. Rendering happens in the road frame (ray casting does
not care, and static texture coordinates are then the hit points themselves); every pose handed
out (``ego_pose``, ``agent_poses``, ``objects``) is in the world frame. Each agent keeps its mesh
in its own frame and is posed per time stamp.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from clip2scene_ros.geometry.transforms import rot_z, translation
from clip2scene_ros.sim import meshes as M
from clip2scene_ros.sim import taxonomy as C
from clip2scene_ros.sim.config import SimConfig


@dataclass
class Agent:
    """A rigid moving object driving straight in the road frame at constant speed."""

    instance: int
    label: int
    size: tuple[float, float, float]  # length, width, height of its bounding box
    start: tuple[float, float]  # road-frame position at t = 0
    heading: float  # road-frame yaw (rad)
    speed: float  # m/s along its heading

    def road_pose(self, t: float) -> np.ndarray:
        c, s = math.cos(self.heading), math.sin(self.heading)
        x = self.start[0] + c * self.speed * t
        y = self.start[1] + s * self.speed * t
        return translation(x, y, 0.0) @ rot_z(self.heading)


@dataclass
class ObjectBox:
    """A labelled thing (static or moving) with its box: centre pose (world) and size (l, w, h)."""

    instance: int
    label: int
    pose: np.ndarray
    size: tuple[float, float, float]
    moving: bool


@dataclass
class EgoTrajectory:
    """Ego drives along +x of the road frame with a gentle lateral sway (so its yaw changes)."""

    start: tuple[float, float]
    speed: float
    sway_m: float = 0.0
    sway_period_s: float = 8.0

    def road_pose(self, t: float) -> np.ndarray:
        w = 2 * math.pi / self.sway_period_s
        x = self.start[0] + self.speed * t
        y = self.start[1] + self.sway_m * math.sin(w * t)
        dy = self.sway_m * w * math.cos(w * t)
        return translation(x, y, 0.0) @ rot_z(math.atan2(dy, max(self.speed, 1e-6)))


@dataclass
class Lighting:
    sun_dir: np.ndarray  # unit vector towards the sun (world)
    sun: float
    ambient: float
    sky_zenith: np.ndarray  # RGB 0..1
    sky_horizon: np.ndarray
    exposure: float = 1.0


@dataclass
class World:
    road_to_world: np.ndarray
    static_vertices: np.ndarray  # float32 [Vs,3] road frame
    static_triangles: np.ndarray  # int64 [Ts,3]
    agent_vertices: np.ndarray  # float32 [Va,3] agent-local
    agent_vertex_owner: np.ndarray  # int64 [Va] agent index
    agent_triangles: np.ndarray  # int64 [Ta,3] indexing agent_vertices
    materials: MaterialTableLike  # per triangle: static first, then agents
    tri_owner: np.ndarray  # int32 [Ts+Ta], -1 static, else agent index
    agents: list[Agent]
    ego: Callable[[float], np.ndarray] | EgoTrajectory  # road pose of the ego at time t
    lighting: Lighting
    static_objects: list[ObjectBox] = field(default_factory=list)
    agent_local_boxes: list[tuple[np.ndarray, tuple[float, float, float]]] = field(default_factory=list)

    @property
    def num_triangles(self) -> int:
        return len(self.static_triangles) + len(self.agent_triangles)

    def ego_road_pose(self, t: float) -> np.ndarray:
        """road <- ego at time t (s)."""
        return self.ego.road_pose(t) if hasattr(self.ego, "road_pose") else self.ego(t)

    def ego_pose(self, t: float) -> np.ndarray:
        """world <- ego at time t (s)."""
        return self.road_to_world @ self.ego_road_pose(t)

    def agent_road_poses(self, t: float) -> np.ndarray:
        """[K,4,4] road <- agent at time t."""
        if not self.agents:
            return np.zeros((0, 4, 4))
        return np.stack([a.road_pose(t) for a in self.agents])

    def agent_poses(self, t: float) -> np.ndarray:
        """[K,4,4] world <- agent at time t."""
        return self.road_to_world @ self.agent_road_poses(t) if self.agents else np.zeros((0, 4, 4))

    def objects(self, t: float) -> list[ObjectBox]:
        """All thing instances with world boxes at time t (static ones first)."""
        poses = self.agent_poses(t)
        out = list(self.static_objects)
        for a, p, (local, size) in zip(self.agents, poses, self.agent_local_boxes, strict=True):
            out.append(ObjectBox(a.instance, a.label, p @ local, size, a.speed > 0))
        return out

    def vertices_at(self, t: float) -> np.ndarray:
        """All vertices in the road frame at time t, float32 [Vs+Va,3]."""
        if len(self.agent_vertices) == 0:
            return self.static_vertices
        poses = self.agent_road_poses(t).astype(np.float32)
        r = poses[self.agent_vertex_owner, :3, :3]
        moved = np.einsum("nij,nj->ni", r, self.agent_vertices) + poses[self.agent_vertex_owner, :3, 3]
        return np.concatenate([self.static_vertices, moved.astype(np.float32)])

    def triangles(self) -> np.ndarray:
        return np.concatenate([self.static_triangles, self.agent_triangles + len(self.static_vertices)])

    def triangles_i32(self) -> np.ndarray:
        """``triangles()`` as contiguous int32, built once (the renderers ask for it every frame)."""
        tris = self.__dict__.get("_tris_i32")
        if tris is None or len(tris) != self.num_triangles:
            tris = self.__dict__["_tris_i32"] = np.ascontiguousarray(self.triangles(), dtype=np.int32)
        return tris


MaterialTableLike = M.MaterialTable


def assemble_world(
    static: M.MeshSet,
    agents: list[tuple[Agent, M.MeshSet]],
    ego: Callable[[float], np.ndarray] | EgoTrajectory,
    lighting: Lighting | None = None,
    road_to_world: np.ndarray | None = None,
    static_objects: list[ObjectBox] | None = None,
) -> World:
    """Build a World from meshes (static meshes given in the road frame)."""
    r2w = np.eye(4) if road_to_world is None else np.asarray(road_to_world, dtype=np.float64)
    sv, st, smat = static.arrays()
    av, at, owners, amats, boxes = [], [], [], [], []
    nv = 0
    for k, (_agent, mesh) in enumerate(agents):
        v, t, mat = mesh.arrays()
        av.append(v.astype(np.float32))
        at.append(t + nv)
        owners.append(np.full(len(v), k, np.int64))
        amats.append(mat)
        nv += len(v)
        lo, hi = v.min(0), v.max(0)
        box_pose = translation(*((lo + hi) / 2))
        boxes.append((box_pose, tuple(float(x) for x in hi - lo)))
    owner_parts = [np.full(len(st), -1, np.int32)]
    owner_parts += [np.full(sum(n for _, n in mesh.materials), k, np.int32) for k, (_, mesh) in enumerate(agents)]
    tri_owner = np.concatenate(owner_parts)
    if lighting is None:
        lighting = Lighting(
            sun_dir=np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93]),
            sun=0.7,
            ambient=0.45,
            sky_zenith=np.array([0.35, 0.55, 0.85]),
            sky_horizon=np.array([0.75, 0.82, 0.9]),
        )
    return World(
        road_to_world=r2w,
        static_vertices=sv.astype(np.float32),
        static_triangles=st,
        agent_vertices=np.concatenate(av) if av else np.zeros((0, 3), np.float32),
        agent_vertex_owner=np.concatenate(owners) if owners else np.zeros(0, np.int64),
        agent_triangles=np.concatenate(at) if at else np.zeros((0, 3), np.int64),
        materials=M.MaterialTable.concat([smat, *amats]),
        tri_owner=tri_owner,
        agents=[a for a, _ in agents],
        ego=ego,
        lighting=lighting,
        static_objects=[ObjectBox(o.instance, o.label, r2w @ o.pose, o.size, False) for o in (static_objects or [])],
        agent_local_boxes=boxes,
    )


# --------------------------------------------------------------------------------------------------
# Procedural street builder
# --------------------------------------------------------------------------------------------------
def _hsv(rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float], v: tuple[float, float]):
    hh = rng.uniform(*h) % 1.0
    return tuple(float(x) for x in colorsys.hsv_to_rgb(hh, rng.uniform(*s), rng.uniform(*v)))


def _car_paint(rng: np.random.Generator) -> tuple[float, float, float]:
    kind = rng.random()
    if kind < 0.25:  # white / silver / grey / black, as on real roads
        return _hsv(rng, (0, 1), (0, 0.06), (0.08, 0.95))
    return _hsv(rng, (0, 1), (0.35, 0.95), (0.25, 0.9))


class _Builder:
    def __init__(self, cfg: SimConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.sc = cfg.scene
        self.rng = rng
        self.static = M.MeshSet()
        self.static_objects: list[ObjectBox] = []
        self.agents: list[tuple[Agent, M.MeshSet]] = []
        self._next_instance = 1
        self._rows: dict[str, list[tuple[float, float]]] = {}
        self.open_side = {-1: False, 1: False}  # sides without buildings (scene.variety)
        # per side of the main road: cross streets as (x0, x1) of their road surface and the
        # wider span including their corner sidewalks (scene.cross_streets)
        self.cross: dict[int, list[tuple[float, float, float, float]]] = {-1: [], 1: []}

    def instance(self) -> int:
        self._next_instance += 1
        return self._next_instance - 1

    def free(self, row: str, x: float, half: float) -> bool:
        """Reserve [x-half, x+half] in a placement row; False when it overlaps something."""
        spans = self._rows.setdefault(row, [])
        if any(x - half < b and x + half > a for a, b in spans):
            return False
        spans.append((x - half, x + half))
        return True

    def in_cross_street(self, side: int, x0: float, x1: float, corners: bool = True) -> bool:
        """Whether [x0, x1] on ``side`` overlaps a cross street (with its corner sidewalks)."""
        return any(x0 < (g1 if corners else r1) and x1 > (g0 if corners else r0) for r0, r1, g0, g1 in self.cross[side])

    def outside_cross_streets(self, side: int, x0: float, x1: float, corners: bool) -> list[tuple[float, float]]:
        """[x0, x1] minus the cross streets on ``side``: the pieces a strip along the main road keeps."""
        pieces = [(x0, x1)]
        for r0, r1, g0, g1 in self.cross[side]:
            a, b = (g0, g1) if corners else (r0, r1)
            pieces = [q for p0, p1 in pieces for q in ((p0, min(p1, a)), (max(p0, b), p1)) if q[1] - q[0] > 0.05]
        return pieces

    def count(self, density: float, length: float) -> int:
        return int(self.rng.poisson(density * length / 100.0))

    # --- object meshes in their local frame (x forward, base at z = 0) ------------------------
    def vehicle(self, label: int, inst: int) -> tuple[M.MeshSet, tuple[float, float, float]]:
        rng = self.rng
        ms = M.MeshSet()
        tyre = M.Material(
            label,
            inst,
            _hsv(rng, (0, 1), (0, 0.1), (0.04, 0.12)),
            pattern=M.P_PLAIN,
            reflect1=0.05,
            reflect2=0.05,
        )
        glass = M.Material(
            label,
            inst,
            _hsv(rng, (0.5, 0.65), (0.1, 0.4), (0.05, 0.2)),
            pattern=M.P_PLAIN,
            reflect1=0.03,
            reflect2=0.03,
            gloss=0.9,
        )
        paint = _car_paint(rng)
        body = M.Material(
            label,
            inst,
            paint,
            tuple(0.7 * c for c in paint),
            pattern=M.P_PLAIN,
            freq=8,
            reflect1=0.45,
            reflect2=0.45,
            gloss=0.5,
        )

        def wheels(xs: list[float], half_w: float, r: float) -> None:
            for x in xs:
                for y in (-half_w + 0.12, half_w - 0.12):
                    v, t = M.frustum(r, r, -0.12, 0.12, sides=8, axis="y")
                    ms.add(v + [x, y, r], t, tyre)

        if label == C.CAR:
            L, W, H = rng.uniform(3.8, 5.0), rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.75)
            hb = 0.55 * H
            ms.add(*M.cbox(L, W, 0.3, hb), body)
            cab_l = L * rng.uniform(0.45, 0.6)
            ms.add(*M.cbox(cab_l, W * 0.86, hb, H, cx=-L * 0.05), glass)
            ms.add(*M.cbox(cab_l * 0.8, W * 0.8, H - 0.04, H, cx=-L * 0.05), body)  # roof
            wheels([L * 0.32, -L * 0.32], W / 2, 0.32)
        elif label == C.TRUCK:
            L, W, H = rng.uniform(6.0, 10.0), rng.uniform(2.3, 2.6), rng.uniform(2.8, 3.8)
            cab = rng.uniform(1.8, 2.3)
            ms.add(*M.cbox(cab, W, 0.5, H * 0.8, cx=L / 2 - cab / 2), body)
            ms.add(*M.cbox(0.1, W * 0.8, H * 0.5, H * 0.75, cx=L / 2 + 0.01), glass)
            cargo_c = _hsv(rng, (0, 1), (0, 0.5), (0.5, 0.95))
            cargo = M.Material(
                label,
                inst,
                cargo_c,
                tuple(0.8 * c for c in cargo_c),
                pattern=M.P_NOISE,
                freq=0.7,
                reflect1=0.5,
                reflect2=0.4,
            )
            ms.add(*M.cbox(L - cab - 0.2, W, 0.8, H, cx=-(cab + 0.2) / 2), cargo)
            wheels([L / 2 - cab / 2, -L / 2 + 1.2, -L / 2 + 2.3], W / 2, 0.5)
        elif label == C.BUS:
            L, W, H = rng.uniform(10.0, 12.5), rng.uniform(2.5, 2.6), rng.uniform(3.0, 3.4)
            ms.add(*M.cbox(L, W, 0.35, 1.2), body)
            ms.add(*M.cbox(L * 0.98, W * 0.98, 1.2, H - 0.45), glass)
            ms.add(*M.cbox(L, W, H - 0.45, H), body)
            wheels([L / 2 - 2.2, -L / 2 + 2.8], W / 2, 0.5)
        elif label == C.MOTORCYCLE:
            L, W, H = rng.uniform(1.9, 2.3), rng.uniform(0.7, 0.9), rng.uniform(1.1, 1.4)
            ms.add(*M.cbox(L * 0.55, 0.35, 0.45, 0.9), body)
            ms.add(*M.cbox(0.15, W, H - 0.15, H - 0.05, cx=L * 0.3), tyre)  # handlebar
            ms.add(*M.cbox(0.06, 0.08, 0.6, H - 0.1, cx=L * 0.3), body)
            for x in (L / 2 - 0.33, -L / 2 + 0.33):
                v, t = M.frustum(0.32, 0.32, -0.07, 0.07, sides=10, axis="y")
                ms.add(v + [x, 0, 0.32], t, tyre)
        elif label == C.BICYCLE:
            L, W, H = rng.uniform(1.6, 1.8), rng.uniform(0.5, 0.65), rng.uniform(1.0, 1.15)
            frame = M.Material(
                label,
                inst,
                _hsv(rng, (0, 1), (0.4, 1.0), (0.3, 0.95)),
                pattern=M.P_PLAIN,
                reflect1=0.4,
                reflect2=0.4,
                gloss=0.3,
            )
            ms.add(*M.cbox(L * 0.55, 0.05, 0.55, 0.62), frame)
            ms.add(*M.cbox(0.05, 0.05, 0.35, 0.95, cx=-0.15), frame)
            ms.add(*M.cbox(0.05, 0.05, 0.35, H - 0.05, cx=L * 0.28), frame)
            ms.add(*M.cbox(0.06, W, H - 0.06, H, cx=L * 0.28), tyre)
            ms.add(*M.cbox(0.25, 0.12, 0.95, 1.0, cx=-0.15), tyre)  # saddle
            for x in (L / 2 - 0.35, -L / 2 + 0.35):
                v, t = M.frustum(0.34, 0.34, -0.03, 0.03, sides=12, axis="y")
                ms.add(v + [x, 0, 0.34], t, tyre)
        else:
            raise ValueError(f"not a vehicle label: {label}")
        return ms, (L, W, H)

    def pedestrian(self, inst: int) -> tuple[M.MeshSet, tuple[float, float, float]]:
        rng = self.rng
        ms = M.MeshSet()
        H = rng.uniform(1.5, 1.95)
        shirt = _hsv(rng, (0, 1), (0.1, 0.9), (0.15, 0.95))
        pants = _hsv(rng, (0.55, 0.7), (0.05, 0.6), (0.08, 0.5))
        skin = _hsv(rng, (0.03, 0.1), (0.25, 0.6), (0.3, 0.9))
        top = M.Material(
            C.PEDESTRIAN,
            inst,
            shirt,
            tuple(0.75 * c for c in shirt),
            M.P_NOISE,
            6.0,
            reflect1=0.2,
            reflect2=0.2,
        )
        bottom = M.Material(C.PEDESTRIAN, inst, pants, pants, M.P_PLAIN, reflect1=0.15, reflect2=0.15)
        head = M.Material(C.PEDESTRIAN, inst, skin, skin, M.P_PLAIN, reflect1=0.3, reflect2=0.3)
        leg_h = 0.47 * H
        w = rng.uniform(0.36, 0.48)
        for y in (-w / 4, w / 4):
            ms.add(*M.cbox(0.16, 0.15, 0.0, leg_h, cy=y), bottom)
        ms.add(*M.cbox(0.24, w, leg_h, 0.82 * H), top)
        for y in (-w / 2 - 0.06, w / 2 + 0.06):
            ms.add(*M.cbox(0.1, 0.09, 0.45 * H, 0.8 * H, cy=y), top)
        hv, ht = M.frustum(0.1, 0.1, 0.84 * H, H, sides=8)
        ms.add(hv, ht, head)
        return ms, (0.3, w + 0.2, H)

    # --- the street ------------------------------------------------------------------------------
    def build(self, duration_s: float) -> World:
        rng, sc = self.rng, self.sc
        lw, lanes = sc.lane_width_m, sc.lanes_per_direction
        open_side = {-1: False, 1: False}
        if sc.variety:
            lanes = int(rng.integers(1, lanes + 1))
            lw = lw * rng.uniform(0.85, 1.1)
            highway = rng.random() < 0.3
            for side in (-1, 1):
                open_side[side] = rng.random() < (0.8 if highway else 0.25)
        self.open_side = open_side
        half = lanes * lw + sc.parking_width_m
        ego_speed = rng.uniform(*sc.ego_speed_mps)
        ego_lane = int(rng.integers(lanes))
        ego_y = -(ego_lane + 0.5) * lw
        travel = ego_speed * duration_s
        xa, xb = -sc.margin_m, travel + sc.margin_m
        length = xb - xa
        sides = {}
        for side in (-1, 1):
            sw = rng.uniform(*sc.sidewalk_width_m)
            tw = rng.uniform(*sc.terrain_width_m)
            if sc.variety:
                tw *= rng.uniform(1.0, 3.0) if open_side[side] else rng.uniform(0.5, 1.5)
                if open_side[side] and rng.random() < 0.5:
                    sw = rng.uniform(0.0, 1.0)  # a verge: little or no pavement
            sides[side] = (sw, tw)

        lo, hi = sc.curb_height_m
        self.curb = lo if hi == lo else float(rng.uniform(lo, hi))  # no draw for a fixed curb
        if sc.cross_streets > 0:
            self._choose_cross_streets(xa, xb, length, lw)

        # ground, road, sidewalks, terrain strips
        ground = M.Material(
            C.TERRAIN,
            0,
            _hsv(rng, (0.18, 0.3), (0.3, 0.6), (0.25, 0.45)),
            _hsv(rng, (0.07, 0.14), (0.3, 0.6), (0.25, 0.5)),
            M.P_FOLIAGE,
            rng.uniform(1.5, 3.0),
            reflect1=0.3,
            reflect2=0.2,
        )
        # long thin/huge triangles make the BVH slow: tile the ground and strips
        for gx in np.arange(xa - 250, xb + 250, 50.0):
            for gy in np.arange(-250, 250, 50.0):
                self.static.add(*M.quad(gx, gx + 50.0, gy, gy + 50.0, -0.03), ground)
        road = M.Material(
            C.ROAD,
            0,
            _hsv(rng, (0.0, 1.0), (0.0, 0.08), (0.16, 0.34)),
            _hsv(rng, (0.1, 0.16), (0.0, 0.12), (0.8, 0.95)),
            M.P_ROAD,
            lw,
            float(lanes),
            reflect1=0.08,
            reflect2=0.55,
        )
        for sx in np.arange(xa - 40, xb + 40, 20.0):
            self.static.add(*M.quad(sx, sx + 20.0, -half, half, 0.0), road)
        for side in (-1, 1):
            sw, tw = sides[side]
            pav = _hsv(rng, (0.0, 0.12), (0.0, 0.3), (0.45, 0.78))
            sidewalk = M.Material(
                C.SIDEWALK,
                0,
                pav,
                tuple(0.6 * c for c in pav),
                M.P_TILES,
                1.0 / rng.uniform(0.3, 1.0),
                reflect1=0.22,
                reflect2=0.15,
            )
            y0, y1 = sorted((side * half, side * (half + sw)))
            for sx in np.arange(xa - 40, xb + 40, 20.0):
                for p0, p1 in self.outside_cross_streets(side, sx, sx + 20.0, corners=False):
                    self.static.add(*M.box(p0, p1, y0, y1, -0.1, self.curb), sidewalk)
            for r0, r1, _, _ in self.cross[side]:
                self._cross_street(side, r0, r1, half, road, sidewalk)
            if tw > 0.3:
                grass = M.Material(
                    C.TERRAIN,
                    0,
                    _hsv(rng, (0.17, 0.33), (0.35, 0.75), (0.25, 0.55)),
                    _hsv(rng, (0.06, 0.14), (0.3, 0.7), (0.25, 0.55)),
                    M.P_FOLIAGE,
                    rng.uniform(1.5, 5.0),
                    reflect1=0.32,
                    reflect2=0.22,
                )
                y0, y1 = sorted((side * (half + sw), side * (half + sw + tw)))
                for sx in np.arange(xa - 40, xb + 40, 20.0):
                    for p0, p1 in self.outside_cross_streets(side, sx, sx + 20.0, corners=True):
                        self.static.add(*M.box(p0, p1, y0, y1, -0.1, 0.06), grass)

        self._buildings(xa, xb, half, sides)
        self._vegetation(xa, xb, length, half, sides)
        self._street_furniture(xa, xb, length, half, sides)
        self._parked(xa, xb, length, half, sides)
        self._traffic(xa, xb, length, duration_s, ego_speed, ego_lane, ego_y)
        self._pedestrians(xa, xb, length, half, sides)

        yaw = rng.uniform(-math.pi, math.pi) if sc.world_yaw else 0.0
        offset = rng.uniform(-500, 500, size=2) if sc.world_yaw else np.zeros(2)
        r2w = translation(offset[0], offset[1], 0.0) @ rot_z(yaw)
        sway = rng.uniform(0.0, 0.6)
        ego = EgoTrajectory((0.0, ego_y), ego_speed, sway_m=sway, sway_period_s=rng.uniform(6, 14))
        return assemble_world(self.static, self.agents, ego, self._lighting(r2w), r2w, self.static_objects)

    def _choose_cross_streets(self, xa: float, xb: float, length: float, lane_w: float) -> None:
        """Junctions along the main road, at least 40 m apart; a quarter are T junctions (one side).
        Roadside rows are reserved over them, so nothing is placed in a junction's mouth."""
        rng = np.random.default_rng(self.rng.integers(2**32))  # own stream: later draws keep their order
        taken: list[float] = []
        for _ in range(self.count(self.sc.cross_streets, length)):
            xc = rng.uniform(xa + 20.0, xb - 20.0)
            if any(abs(xc - t) < 40.0 for t in taken):
                continue
            taken.append(xc)
            width = 2 * int(rng.integers(1, 3)) * lane_w * rng.uniform(0.9, 1.1)
            walk = rng.uniform(*self.sc.sidewalk_width_m)
            r0, r1 = xc - width / 2, xc + width / 2
            g0, g1 = r0 - walk, r1 + walk
            skip = (1 if rng.random() < 0.5 else -1) if rng.random() < 0.25 else 0
            for side in (-1, 1):
                if side == skip:
                    continue
                self.cross[side].append((r0, r1, g0, g1))
                rows = [f"{r}{side}" for r in ("curb", "park", "back", "tree")] + [f"ped{side}{b}" for b in range(3)]
                for row in rows:
                    self.free(row, (g0 + g1) / 2, (g1 - g0) / 2)

    def _cross_street(self, side: int, r0: float, r1: float, half: float, road, sidewalk) -> None:
        """A side street from the main road's edge out to the scenery's edge: its surface, the
        sidewalks on both of its sides and, with some probability, a row of buildings behind them."""
        rng = self.rng
        reach = 150.0
        g0, g1 = next((a, b) for a0, a1, a, b in self.cross[side] if a0 == r0 and a1 == r1)
        for d in np.arange(0.0, reach, 20.0):
            y0, y1 = sorted((side * (half + d), side * (half + d + 20.0)))
            self.static.add(*M.quad(r0, r1, y0, y1, 0.0), road)
            self.static.add(*M.box(g0, r0, y0, y1, -0.1, self.curb), sidewalk)
            self.static.add(*M.box(r1, g1, y0, y1, -0.1, self.curb), sidewalk)
        for edge, out in ((g0, -1.0), (g1, 1.0)):
            if rng.random() < 0.35:
                continue
            d = half + rng.uniform(12.0, 25.0)
            while d < reach:
                bl, depth = rng.uniform(8, 25), rng.uniform(8, 16)
                setback = rng.uniform(0.0, 6.0)
                x0, x1 = sorted((edge + out * setback, edge + out * (setback + depth)))
                y0, y1 = sorted((side * d, side * (d + bl)))
                col = _hsv(rng, (0, 1), (0.02, 0.45), (0.4, 0.88))
                win = _hsv(rng, (0.5, 0.7), (0.05, 0.4), (0.08, 0.3))
                mat = M.Material(
                    C.BUILDING, 0, col, win, M.P_WINDOWS, 1.0 / rng.uniform(1.8, 4.0), rng.uniform(2.8, 3.6),
                    reflect1=0.3, reflect2=0.08,
                )  # fmt: skip
                self.static.add(*M.box(x0, x1, y0, y1, -0.1, rng.uniform(3, 18)), mat)
                d += bl + (rng.uniform(1, 8) if rng.random() < 0.4 else 0.0)

    def _lighting(self, r2w: np.ndarray) -> Lighting:
        rng = self.rng
        overcast = rng.random() < 0.25
        az, el = rng.uniform(-math.pi, math.pi), math.radians(rng.uniform(15, 65))
        sun_dir = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        if overcast:
            zen = np.array(_hsv(rng, (0.55, 0.65), (0.0, 0.08), (0.55, 0.8)))
            return Lighting(
                sun_dir,
                rng.uniform(0.1, 0.25),
                rng.uniform(0.7, 0.85),
                zen,
                np.minimum(zen * 1.15, 1.0),
                rng.uniform(0.9, 1.1),
            )
        zen = np.array(_hsv(rng, (0.55, 0.63), (0.35, 0.75), (0.6, 0.95)))
        hor = 0.45 * zen + 0.55 * np.array(_hsv(rng, (0.08, 0.6), (0.0, 0.2), (0.85, 1.0)))
        return Lighting(sun_dir, rng.uniform(0.55, 0.85), rng.uniform(0.3, 0.5), zen, hor, rng.uniform(0.9, 1.15))

    def _buildings(self, xa: float, xb: float, half: float, sides: dict) -> None:
        rng = self.rng
        variety = self.sc.variety
        for side in (-1, 1):
            sw, tw = sides[side]
            y_front = half + sw + tw
            if variety and rng.random() < 0.5:
                self._hedge_row(xa, xb, side * (y_front + rng.uniform(0.2, 1.0)))
            if self.open_side.get(side):
                continue
            x = xa - 30
            while x < xb + 30:
                bl = rng.uniform(8, 30)
                depth = rng.uniform(8, 20)
                h = rng.uniform(4, 28) if not variety else rng.uniform(3, 18)
                setback = rng.uniform(0.0, 3.0) if not variety else rng.uniform(0.0, 12.0)
                col = _hsv(rng, (0, 1), (0.02, 0.45), (0.4, 0.88))
                win = _hsv(rng, (0.5, 0.7), (0.05, 0.4), (0.08, 0.3))
                mat = M.Material(
                    C.BUILDING,
                    0,
                    col,
                    win,
                    M.P_WINDOWS,
                    1.0 / rng.uniform(1.8, 4.0),
                    rng.uniform(2.8, 3.6),
                    reflect1=0.3,
                    reflect2=0.08,
                )
                y0, y1 = sorted((side * (y_front + setback), side * (y_front + setback + depth)))
                for p0, p1 in self.outside_cross_streets(side, x, x + bl, corners=True):
                    if p1 - p0 > 2.0:
                        self.static.add(*M.box(p0, p1, y0, y1, -0.1, h), mat)
                x += bl + (rng.uniform(1, 8) if rng.random() < 0.4 else 0.0)

    def _hedge_row(self, xa: float, xb: float, y: float) -> None:
        """Hedges along a plot boundary: boxes of foliage 0.6-2.2 m high with gaps (vegetation)."""
        rng = self.rng
        x = xa - 20
        while x < xb + 20:
            seg = rng.uniform(4, 25)
            if rng.random() < 0.75:
                h, w = rng.uniform(0.6, 2.2), rng.uniform(0.5, 1.5)
                mat = M.Material(
                    C.VEGETATION,
                    0,
                    _hsv(rng, (0.2, 0.42), (0.4, 0.9), (0.1, 0.4)),
                    _hsv(rng, (0.15, 0.35), (0.3, 0.8), (0.25, 0.55)),
                    M.P_FOLIAGE,
                    rng.uniform(3.0, 8.0),
                    reflect1=0.4,
                    reflect2=0.3,
                )
                y0, y1 = sorted((y, y + np.sign(y) * w))
                for sx in np.arange(x, x + seg, 10.0):  # short boxes keep the BVH fast
                    for p0, p1 in self.outside_cross_streets(int(np.sign(y)), sx, min(sx + 10.0, x + seg), True):
                        self.static.add(*M.box(p0, p1, y0, y1, -0.05, h), mat)
            x += seg + rng.uniform(0.5, 6.0)

    def _tree(self, x: float, y: float) -> None:
        rng = self.rng
        trunk_h, r = rng.uniform(1.8, 4.0), rng.uniform(0.12, 0.3)
        bark = M.Material(
            C.VEGETATION,
            0,
            _hsv(rng, (0.05, 0.1), (0.3, 0.6), (0.15, 0.35)),
            _hsv(rng, (0.05, 0.1), (0.2, 0.5), (0.08, 0.2)),
            M.P_NOISE,
            8.0,
            reflect1=0.3,
            reflect2=0.25,
        )
        v, t = M.frustum(r, r * 0.7, 0.0, trunk_h + 0.5, sides=7)
        self.static.add(v + [x, y, 0], t, bark)
        cr = rng.uniform(1.4, 3.5)
        leaves = M.Material(
            C.VEGETATION,
            0,
            _hsv(rng, (0.2, 0.4), (0.4, 0.85), (0.12, 0.4)),
            _hsv(rng, (0.14, 0.3), (0.3, 0.8), (0.3, 0.6)),
            M.P_FOLIAGE,
            rng.uniform(2.5, 6.0),
            reflect1=0.4,
            reflect2=0.3,
        )
        v, t = M.blob(
            rng,
            (cr, cr * rng.uniform(0.8, 1.2), cr * rng.uniform(0.8, 1.3)),
            (x, y, trunk_h + cr * 0.8),
            0.35,
        )
        self.static.add(v, t, leaves)

    def _vegetation(self, xa: float, xb: float, length: float, half: float, sides: dict) -> None:
        rng, sc = self.rng, self.sc
        for _ in range(self.count(sc.trees, length)):
            side = 1 if rng.random() < 0.5 else -1
            sw, tw = sides[side]
            if tw > 1.2:
                y = side * (half + sw + rng.uniform(0.6, tw - 0.6))
            else:
                y = side * (half + rng.uniform(0.7, 1.0))  # tree pit on the sidewalk near the curb
            x = rng.uniform(xa, xb)
            if self.free(f"tree{side}", x, 2.5):
                self._tree(x, y)
        for _ in range(self.count(sc.bushes, length)):
            side = 1 if rng.random() < 0.5 else -1
            sw, tw = sides[side]
            if tw < 1.0:
                continue
            x, y = rng.uniform(xa, xb), side * (half + sw + rng.uniform(0.5, tw - 0.5))
            r = rng.uniform(0.4, 1.2)
            if self.in_cross_street(side, x - 2.5 * r, x + 2.5 * r):
                continue
            mat = M.Material(
                C.VEGETATION,
                0,
                _hsv(rng, (0.2, 0.42), (0.4, 0.9), (0.12, 0.45)),
                _hsv(rng, (0.15, 0.35), (0.3, 0.8), (0.25, 0.55)),
                M.P_FOLIAGE,
                rng.uniform(4.0, 9.0),
                reflect1=0.4,
                reflect2=0.3,
            )
            v, t = M.blob(rng, (r * rng.uniform(1, 2.5), r, r * 0.7), (x, y, r * 0.5), 0.4)
            self.static.add(v, t, mat)

    def _static_thing(self, mesh: M.MeshSet, label: int, inst: int, x: float, y: float, yaw: float) -> None:
        pose = translation(x, y, 0.0) @ rot_z(yaw)
        self.static.extend(mesh, pose)
        v = np.concatenate(mesh.vertices)
        lo, hi = v.min(0), v.max(0)
        centre = pose @ translation(*((lo + hi) / 2))
        self.static_objects.append(ObjectBox(inst, label, centre, tuple(float(s) for s in hi - lo), False))

    def _street_furniture(self, xa: float, xb: float, length: float, half: float, sides: dict) -> None:
        rng, sc = self.rng, self.sc
        for _ in range(self.count(sc.poles, length)):
            side = 1 if rng.random() < 0.5 else -1
            x = rng.uniform(xa, xb)
            if not self.free(f"curb{side}", x, 0.6):
                continue
            inst = self.instance()
            ms = M.MeshSet()
            metal = _hsv(rng, (0.2, 0.6), (0.0, 0.25), (0.25, 0.65))
            mat = M.Material(
                C.POLE,
                inst,
                metal,
                tuple(0.8 * c for c in metal),
                M.P_NOISE,
                4.0,
                reflect1=0.45,
                reflect2=0.4,
                gloss=0.3,
            )
            h = rng.uniform(5.0, 9.0)
            v, t = M.frustum(0.14, 0.09, 0.15, h, sides=8)
            ms.add(v, t, mat)
            if rng.random() < 0.7:  # street-light arm over the road
                arm = rng.uniform(1.0, 2.5)
                ms.add(*M.box(-0.05, 0.05, 0.0, arm, h - 0.25, h - 0.1), mat)
            self._static_thing(ms, C.POLE, inst, x, side * (half + 0.45), 0.0 if side > 0 else math.pi)
        for _ in range(self.count(sc.signs, length)):
            side = 1 if rng.random() < 0.5 else -1
            x = rng.uniform(xa, xb)
            if not self.free(f"curb{side}", x, 0.5):
                continue
            pole_inst, sign_inst = self.instance(), self.instance()
            metal = _hsv(rng, (0.5, 0.6), (0.0, 0.15), (0.4, 0.7))
            post = M.Material(C.POLE, pole_inst, metal, metal, M.P_PLAIN, reflect1=0.45, reflect2=0.45)
            h = rng.uniform(2.2, 3.2)
            pv, pt = M.frustum(0.04, 0.04, 0.15, h, sides=6)
            kind = rng.integers(4)
            face = [
                (0.0, (0.85, 1.0), (0.6, 0.95)),
                (0.6, (0.7, 1.0), (0.4, 0.8)),
                (0.13, (0.8, 1.0), (0.7, 1.0)),
                (0.0, (0.0, 0.05), (0.85, 1.0)),
            ][kind]
            c1 = _hsv(rng, (face[0] - 0.02, face[0] + 0.02), face[1], face[2])
            plate = M.Material(
                C.TRAFFIC_SIGN,
                sign_inst,
                c1,
                (0.95, 0.95, 0.95),
                M.P_HBANDS,
                rng.uniform(1.5, 3.0),
                reflect1=0.9,
                reflect2=0.95,
            )
            size = rng.uniform(0.5, 0.9)
            # plate faces oncoming traffic on its side of the road (normal along -x for side -1)
            sv, st = M.box(-0.03, 0.03, -size / 2, size / 2, h - size, h)
            yaw = 0.0 if side < 0 else math.pi
            self.static.extend(_single(pv, pt, post), translation(x, side * (half + 0.5), 0) @ rot_z(yaw))
            self.static_objects.append(
                ObjectBox(pole_inst, C.POLE, translation(x, side * (half + 0.5), h / 2), (0.08, 0.08, h), False)
            )
            self._static_thing(_single(sv, st, plate), C.TRAFFIC_SIGN, sign_inst, x, side * (half + 0.5), yaw)
        for _ in range(self.count(sc.cones, length)):
            side = 1 if rng.random() < 0.5 else -1
            x = rng.uniform(xa, xb)
            if self.free(f"curb{side}", x, 0.4):
                self._cone(x, side * (half - rng.uniform(0.2, 0.6)))
        zones = max(1, self.count(sc.barriers / 4, length)) if sc.barriers > 0 else 0
        for _ in range(zones):  # construction zones in a parking strip: barriers with cones at the ends
            side = 1 if rng.random() < 0.5 else -1
            n = int(rng.integers(2, 7))
            seg = rng.uniform(1.8, 2.4)
            x0 = rng.uniform(xa, xb - n * seg)
            if not self.free(f"park{side}", x0 + n * seg / 2, n * seg / 2 + 1.5):
                continue
            y = side * (half - self.sc.parking_width_m / 2)
            concrete = rng.random() < 0.5
            for i in range(n):
                self._barrier(x0 + (i + 0.5) * seg, y, seg * 0.97, concrete)
            self._cone(x0 - 0.8, y)
            self._cone(x0 + n * seg + 0.8, y)

    def _cone(self, x: float, y: float) -> None:
        rng = self.rng
        inst = self.instance()
        h = rng.uniform(0.5, 0.9)
        c1 = _hsv(rng, (0.0, 0.08), (0.8, 1.0), (0.75, 1.0))
        mat = M.Material(
            C.TRAFFIC_CONE,
            inst,
            c1,
            (0.95, 0.95, 0.95),
            M.P_HBANDS,
            1.0 / (h * 0.3),
            reflect1=0.45,
            reflect2=0.95,
        )
        ms = M.MeshSet()
        ms.add(
            *M.cbox(h * 0.55, h * 0.55, 0.0, 0.04),
            M.Material(C.TRAFFIC_CONE, inst, c1, c1, M.P_PLAIN, reflect1=0.4, reflect2=0.4),
        )
        v, t = M.frustum(h * 0.22, 0.03, 0.04, h, sides=10)
        ms.add(v, t, mat)
        self._static_thing(ms, C.TRAFFIC_CONE, inst, x, y, 0.0)

    def _barrier(self, x: float, y: float, length: float, concrete: bool) -> None:
        rng = self.rng
        inst = self.instance()
        if concrete:
            c1 = _hsv(rng, (0.05, 0.15), (0.0, 0.12), (0.5, 0.8))
            mat = M.Material(
                C.BARRIER, inst, c1, tuple(0.8 * c for c in c1), M.P_NOISE, 3.0, reflect1=0.3, reflect2=0.3
            )
            prof = np.array(
                [
                    [-0.3, 0.0],
                    [0.3, 0.0],
                    [0.3, 0.08],
                    [0.1, 0.3],
                    [0.08, 0.8],
                    [-0.08, 0.8],
                    [-0.1, 0.3],
                    [-0.3, 0.08],
                ]
            )
        else:
            c1 = _hsv(rng, (-0.03, 0.03), (0.8, 1.0), (0.6, 0.95))
            mat = M.Material(
                C.BARRIER,
                inst,
                c1,
                (0.95, 0.95, 0.95),
                M.P_DIAG,
                rng.uniform(1.2, 2.5),
                reflect1=0.4,
                reflect2=0.9,
            )
            prof = np.array([[-0.25, 0.0], [0.25, 0.0], [0.2, 1.0], [-0.2, 1.0]])
        ms = _single(*M.prism(prof, -length / 2, length / 2), mat)
        self._static_thing(ms, C.BARRIER, inst, x, y, 0.0)

    def _parked(self, xa: float, xb: float, length: float, half: float, sides: dict) -> None:
        rng, sc = self.rng, self.sc
        for _ in range(self.count(sc.parked_vehicles, length)):
            side = 1 if rng.random() < 0.5 else -1
            r = rng.random()
            label = C.CAR if r < 0.8 else C.TRUCK if r < 0.93 else C.BUS
            inst = self.instance()
            ms, (L, W, H) = self.vehicle(label, inst)
            x = rng.uniform(xa, xb)
            if not self.free(f"park{side}", x, L / 2 + 0.6):
                continue
            yaw = (0.0 if side < 0 else math.pi) + rng.normal(0, 0.02)
            y = side * (half - sc.parking_width_m / 2 + rng.uniform(-0.15, 0.15))
            self._static_thing(ms, label, inst, x, y, yaw)
        for _ in range(self.count(sc.cycles, length)):  # parked cycles near the sidewalk's back edge
            side = 1 if rng.random() < 0.5 else -1
            sw, _ = sides[side]
            label = C.BICYCLE if rng.random() < 0.6 else C.MOTORCYCLE
            inst = self.instance()
            ms, (L, _, _) = self.vehicle(label, inst)
            x = rng.uniform(xa, xb)
            if not self.free(f"back{side}", x, L / 2 + 0.2):
                continue
            y = side * (half + sw - 0.6)
            self._static_thing(ms, label, inst, x, y, rng.uniform(0, 2 * math.pi))

    def _traffic(
        self,
        xa: float,
        xb: float,
        length: float,
        duration: float,
        ego_speed: float,
        ego_lane: int,
        ego_y: float,
    ) -> None:
        rng, sc = self.rng, self.sc
        lw, lanes = sc.lane_width_m, sc.lanes_per_direction
        for direction in (1, -1):
            for lane in range(lanes):
                same = direction == 1 and lane == ego_lane
                speed = ego_speed if same else rng.uniform(*sc.ego_speed_mps) * rng.uniform(0.7, 1.2)
                y = -direction * (lane + 0.5) * lw
                # agents covering the visible stretch at every time of the sequence
                lo, hi = xa - speed * duration, xb + speed * duration
                n = self.count(sc.moving_vehicles / (2 * lanes), hi - lo)
                xs = np.sort(rng.uniform(lo, hi, size=n))
                last = -1e9
                for x in xs:
                    if same and abs(x) < 14.0:  # keep the ego's own lane clear around it
                        continue
                    r = rng.random()
                    label = (
                        C.CAR
                        if r < 0.65
                        else C.TRUCK
                        if r < 0.78
                        else C.BUS
                        if r < 0.86
                        else C.MOTORCYCLE
                        if r < 0.94
                        else C.BICYCLE
                    )
                    inst = self.instance()
                    ms, (L, W, H) = self.vehicle(label, inst)
                    if x - L / 2 < last + 5.0:
                        continue
                    last = x + L / 2
                    heading = 0.0 if direction == 1 else math.pi
                    agent = Agent(inst, label, (L, W, H), (float(x), y), heading, speed)
                    self.agents.append((agent, ms))

    def _pedestrians(self, xa: float, xb: float, length: float, half: float, sides: dict) -> None:
        rng, sc = self.rng, self.sc
        n = self.count(sc.pedestrians, length)
        for _ in range(n):
            side = 1 if rng.random() < 0.5 else -1
            sw, _ = sides[side]
            band = int(rng.integers(3))  # 0/1: walking either way in its own band, 2: standing
            frac = (0.35, 0.6, 0.82)[band]
            y = side * (half + frac * sw)
            speed = 0.0 if band == 2 else [1.15, 1.45][band] * (1 + 0.05 * side)
            heading = (0.0 if band == 0 else math.pi) if band < 2 else rng.uniform(-math.pi, math.pi)
            x = rng.uniform(xa, xb)
            if not self.free(f"ped{side}{band}", x, 0.6):
                continue
            inst = self.instance()
            ms, size = self.pedestrian(inst)
            self.agents.append((Agent(inst, C.PEDESTRIAN, size, (float(x), y), heading, speed), ms))


def _single(v: np.ndarray, t: np.ndarray, mat: M.Material) -> M.MeshSet:
    ms = M.MeshSet()
    ms.add(v, t, mat)
    return ms


def build_world(config: SimConfig, seed: int, duration_s: float) -> World:
    """The procedural street for ``seed`` covering an ego drive of ``duration_s`` seconds."""
    rng = np.random.default_rng([int(seed), 0x5C3E])
    return _Builder(config, rng).build(duration_s)
