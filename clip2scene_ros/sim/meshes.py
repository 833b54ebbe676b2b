"""Low-poly mesh primitives and the per-triangle material table the renderer shades from.

Every triangle carries its own material (label, instance, two colours, a pattern with its frequency,
LiDAR reflectivity), so one merged mesh per frame is all the ray caster needs: the hit triangle's
index gives the label, the instance and the appearance at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Surface patterns (see render._pattern): blend factor m in [0, 1] between colour1 and colour2.
P_PLAIN = 0  # colour1 with fine grain
P_ROAD = 1  # asphalt grain + lane markings (freq = lane width, param = lanes per direction)
P_TILES = 2  # paving-stone grid (freq = tiles per metre)
P_WINDOWS = 3  # facade windows (freq = window columns per metre, param = floor height)
P_FOLIAGE = 4  # two-octave blotchy noise between colour1 and colour2
P_HBANDS = 5  # horizontal bands along local z (freq = bands per metre)
P_DIAG = 6  # diagonal stripes (freq = stripes per metre)
P_NOISE = 7  # coarse value noise between colour1 and colour2 (freq = cells per metre)
NUM_PATTERNS = 8


@dataclass
class Material:
    label: int
    instance: int
    color1: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pattern: int = P_PLAIN
    freq: float = 1.0
    param: float = 0.0
    reflect1: float = 0.2  # LiDAR reflectivity where m = 0
    reflect2: float = 0.2  # ... and where m = 1 (e.g. painted lane markings, reflective stripes)
    gloss: float = 0.0  # specular strength (car paint, glass)


@dataclass
class MeshSet:
    """Vertices + triangles + one material record per triangle, growable."""

    vertices: list[np.ndarray] = field(default_factory=list)
    triangles: list[np.ndarray] = field(default_factory=list)
    materials: list[tuple[Material, int]] = field(default_factory=list)
    _nv: int = 0

    def add(self, verts: np.ndarray, tris: np.ndarray, mat: Material) -> None:
        # triangles are stored part-local; arrays() offsets them
        self.vertices.append(np.asarray(verts, dtype=np.float64))
        self.triangles.append(np.asarray(tris, dtype=np.int64))
        self.materials.append((mat, len(tris)))
        self._nv += len(verts)

    def extend(self, other: MeshSet, transform: np.ndarray | None = None) -> None:
        for v, t, (m, _) in zip(other.vertices, other.triangles, other.materials, strict=True):
            vv = v if transform is None else v @ transform[:3, :3].T + transform[:3, 3]
            self.add(vv, t, m)

    @property
    def num_vertices(self) -> int:
        return self._nv

    def arrays(self) -> tuple[np.ndarray, np.ndarray, MaterialTable]:
        if not self.vertices:
            return np.zeros((0, 3)), np.zeros((0, 3), np.int64), MaterialTable.from_list([])
        offsets = np.cumsum([0] + [len(v) for v in self.vertices[:-1]])
        return (
            np.concatenate(self.vertices),
            np.concatenate([t + o for t, o in zip(self.triangles, offsets, strict=True)]),
            MaterialTable.from_list(self.materials),
        )


@dataclass
class MaterialTable:
    """Structure-of-arrays material per triangle."""

    label: np.ndarray  # uint8 [T]
    instance: np.ndarray  # int32 [T]
    color1: np.ndarray  # float32 [T,3]
    color2: np.ndarray  # float32 [T,3]
    pattern: np.ndarray  # uint8 [T]
    freq: np.ndarray  # float32 [T]
    param: np.ndarray  # float32 [T]
    reflect: np.ndarray  # float32 [T,2]
    gloss: np.ndarray  # float32 [T]

    def packed_colors(self) -> np.ndarray:
        """[T,6] float32: colour1 and colour2 - colour1 (one gather per pixel instead of two)."""
        packed = getattr(self, "_packed", None)
        if packed is None:
            packed = np.ascontiguousarray(np.concatenate([self.color1, self.color2 - self.color1], 1), np.float32)
            object.__setattr__(self, "_packed", packed)
        return packed

    @staticmethod
    def from_list(items: list[tuple[Material, int]]) -> MaterialTable:
        counts = np.array([n for _, n in items], dtype=np.int64)
        mats = [m for m, _ in items]

        def rep(values: list, dtype: type) -> np.ndarray:
            arr = np.asarray(values, dtype=dtype)
            return np.repeat(arr, counts, axis=0) if len(arr) else arr

        return MaterialTable(
            label=rep([m.label for m in mats], np.uint8),
            instance=rep([m.instance for m in mats], np.int32),
            color1=rep([m.color1 for m in mats], np.float32).reshape(-1, 3),
            color2=rep([m.color2 for m in mats], np.float32).reshape(-1, 3),
            pattern=rep([m.pattern for m in mats], np.uint8),
            freq=rep([m.freq for m in mats], np.float32),
            param=rep([m.param for m in mats], np.float32),
            reflect=rep([(m.reflect1, m.reflect2) for m in mats], np.float32).reshape(-1, 2),
            gloss=rep([m.gloss for m in mats], np.float32),
        )

    @staticmethod
    def concat(tables: list[MaterialTable]) -> MaterialTable:
        return MaterialTable(
            **{k: np.concatenate([getattr(t, k) for t in tables]) for k in MaterialTable.__dataclass_fields__}
        )


def triangle_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Unit geometric normals (v1 - v0) x (v2 - v0), float32 [T,3] (zero for degenerate triangles)."""
    v0 = verts[tris[:, 0]]
    n = np.cross(verts[tris[:, 1]] - v0, verts[tris[:, 2]] - v0)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), np.float32(1e-30))
    return np.ascontiguousarray(n, dtype=np.float32)


# --- primitives (local frame, z up, base at z = 0 unless stated) --------------------------------
_BOX_TRIS = np.array(
    [
        [0, 2, 1], [0, 3, 2],  # bottom (z-)
        [4, 5, 6], [4, 6, 7],  # top (z+)
        [0, 1, 5], [0, 5, 4],  # y-
        [2, 3, 7], [2, 7, 6],  # y+
        [1, 2, 6], [1, 6, 5],  # x+
        [3, 0, 4], [3, 4, 7],  # x-
    ],
    dtype=np.int64,
)  # fmt: skip


def box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box with outward-facing triangles."""
    v = np.array(
        [[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
         [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]],
        dtype=np.float64,
    )  # fmt: skip
    return v, _BOX_TRIS.copy()


def cbox(length: float, width: float, z0: float, z1: float, cx: float = 0.0, cy: float = 0.0):
    """Box centred at (cx, cy) in x/y, spanning z0..z1."""
    return box(cx - length / 2, cx + length / 2, cy - width / 2, cy + width / 2, z0, z1)


def frustum(
    r0: float, r1: float, z0: float, z1: float, sides: int = 8, axis: str = "z", caps: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Truncated cone (cylinder when r0 == r1) around the local z axis (or y/x axis), centred at 0."""
    a = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    ring0 = np.stack([r0 * np.cos(a), r0 * np.sin(a), np.full(sides, z0)], 1)
    ring1 = np.stack([r1 * np.cos(a), r1 * np.sin(a), np.full(sides, z1)], 1)
    v = np.concatenate([ring0, ring1, [[0, 0, z0], [0, 0, z1]]])
    i = np.arange(sides)
    j = (i + 1) % sides
    tris = [np.stack([i, j, j + sides], 1), np.stack([i, j + sides, i + sides], 1)]
    if caps:
        tris.append(np.stack([np.full(sides, 2 * sides), j, i], 1))
        tris.append(np.stack([np.full(sides, 2 * sides + 1), i + sides, j + sides], 1))
    t = np.concatenate(tris)
    if axis == "y":  # wheels: rotate z -> y
        v = v[:, [0, 2, 1]] * np.array([1, -1, 1])
        t = t[:, ::-1]
    elif axis == "x":
        v = v[:, [2, 1, 0]] * np.array([-1, 1, 1])
        t = t[:, ::-1]
    return v, t


def _icosphere() -> tuple[np.ndarray, np.ndarray]:
    p = (1 + 5**0.5) / 2
    v = np.array(
        [[-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0], [0, -1, p], [0, 1, p],
         [0, -1, -p], [0, 1, -p], [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1]],
        dtype=np.float64,
    )  # fmt: skip
    t = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=np.int64,
    )  # fmt: skip
    # one subdivision: 80 faces
    verts = list(v / np.linalg.norm(v, axis=1, keepdims=True))
    cache: dict[tuple[int, int], int] = {}

    def mid(a: int, b: int) -> int:
        key = (min(a, b), max(a, b))
        if key not in cache:
            m = verts[a] + verts[b]
            verts.append(m / np.linalg.norm(m))
            cache[key] = len(verts) - 1
        return cache[key]

    out = []
    for a, b, c in t:
        ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
        out += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
    return np.array(verts), np.array(out, dtype=np.int64)


_ICO_V, _ICO_T = _icosphere()


def blob(
    rng: np.random.Generator,
    radii: tuple[float, float, float],
    center: tuple[float, float, float],
    bumpy: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A randomly dented ellipsoid (tree crowns, bushes)."""
    scale = 1.0 + bumpy * (rng.random(len(_ICO_V)) - 0.5)
    v = _ICO_V * scale[:, None] * np.asarray(radii) + np.asarray(center)
    return v, _ICO_T.copy()


def prism(profile_yz: np.ndarray, x0: float, x1: float) -> tuple[np.ndarray, np.ndarray]:
    """Extrude a convex counter-clockwise (y, z) polygon along x (jersey barriers)."""
    n = len(profile_yz)
    a = np.c_[np.full(n, x0), profile_yz]
    b = np.c_[np.full(n, x1), profile_yz]
    v = np.concatenate([a, b])
    i = np.arange(n)
    j = (i + 1) % n
    sides = np.concatenate([np.stack([i, i + n, j + n], 1), np.stack([i, j + n, j], 1)])
    fan = np.arange(1, n - 1)
    cap0 = np.stack([np.zeros(n - 2, np.int64), fan + 1, fan], 1)
    cap1 = np.stack([np.full(n - 2, n), fan + n, fan + 1 + n], 1)
    return v, np.concatenate([sides, cap0, cap1])


def quad(x0: float, x1: float, y0: float, y1: float, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Upward-facing horizontal rectangle."""
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=np.float64)
    return v, np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int64)
