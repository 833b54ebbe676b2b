"""ScanNet: reconstructed scans with posed RGB(-D) frames (the ``scannet_frames_25k`` style export).

Layout (what ScanNet's ``download-scannet.py`` + ``SensReader`` produce)::

    root/scans/<scene>/<scene>_vh_clean_2.ply            vertices x, y, z, red, green, blue
    root/scans/<scene>/<scene>_vh_clean_2.labels.ply     vertex property ``label`` (NYU40 id)
    root/frames/<scene>/color/<i>.jpg  depth/<i>.png (uint16 mm)  pose/<i>.txt (camera -> world)
    root/frames/<scene>/intrinsic/intrinsic_color.txt    (4x4, the top-left 3x3 is K)

Points keep their RGB (0..1) as the 3 input features; labels use the 20-class benchmark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clip2scene_ros.datasets.base import CameraFrame, PairingConfig, PointCloudDataset, Sample, Sweep
from clip2scene_ros.datasets.labels import SCANNET_CLASSES_20, map_scannet_nyu40
from clip2scene_ros.geometry import invert_transform

_PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4",
              "float": "f4", "double": "f8", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2",
              "int32": "i4", "uint32": "u4", "float32": "f4", "float64": "f8"}  # fmt: skip


def read_ply_vertices(path: str | Path) -> dict[str, np.ndarray]:
    """Vertex properties of a PLY file (ascii or binary little endian), as named columns."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    body = data[data.index(b"\n", end) + 1 :]
    fmt, count, props, in_vertex = "", 0, [], False
    for line in header:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                count = int(parts[2])
        elif parts[0] == "property" and in_vertex:
            if parts[1] == "list":
                raise ValueError(f"{path}: list properties in the vertex element are not supported")
            props.append((parts[2], _PLY_TYPES[parts[1]]))
    if fmt == "ascii":
        rows = np.loadtxt(body.decode().splitlines()[:count], dtype=np.float64, ndmin=2)
        return {name: rows[:, i].astype(t) for i, (name, t) in enumerate(props)}
    if fmt != "binary_little_endian":
        raise ValueError(f"{path}: PLY format {fmt!r} not supported (use ascii or binary_little_endian)")
    arr = np.frombuffer(body, dtype=np.dtype([(n, "<" + t) for n, t in props]), count=count)
    return {n: np.asarray(arr[n]) for n, _ in props}


class ScanNetDataset(PointCloudDataset):
    name = "scannet"
    class_names = SCANNET_CLASSES_20

    def __init__(
        self,
        root: str | Path,
        scenes: list[str] | None = None,
        frames_per_sample: int = 4,
        frame_stride: int = 20,
        load_images: bool = True,
        pairing: PairingConfig | None = None,
    ):
        super().__init__(pairing or PairingConfig(min_depth=0.1, one_camera_per_point=False), 1)
        self.root = Path(root)
        scan_dir = self.root / "scans"
        if not scan_dir.is_dir():
            raise FileNotFoundError(
                f"ScanNet scans not found at {scan_dir}; root= must hold scans/ and frames/"
            )
        self.scenes = scenes or sorted(p.name for p in scan_dir.iterdir() if p.is_dir())
        self.frames_per_sample = frames_per_sample
        self.frame_stride = frame_stride
        self.load_images = load_images

    def __len__(self) -> int:
        return len(self.scenes)

    def load(self, index: int) -> Sample:
        from PIL import Image

        scene = self.scenes[index]
        d = self.root / "scans" / scene
        v = read_ply_vertices(d / f"{scene}_vh_clean_2.ply")
        xyz = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)
        rgb = np.stack([v["red"], v["green"], v["blue"]], 1).astype(np.float32) / 255.0
        points = np.concatenate([xyz, rgb], 1)
        labels = None
        label_ply = d / f"{scene}_vh_clean_2.labels.ply"
        if label_ply.is_file():
            labels = map_scannet_nyu40(read_ply_vertices(label_ply)["label"])
        fdir = self.root / "frames" / scene
        cameras = []
        if (fdir / "pose").is_dir():
            K = np.loadtxt(fdir / "intrinsic" / "intrinsic_color.txt")[:3, :3]
            ids = sorted(int(p.stem) for p in (fdir / "pose").glob("*.txt"))[:: self.frame_stride]
            for i in ids[: self.frames_per_sample]:
                pose = np.loadtxt(fdir / "pose" / f"{i}.txt")
                if not np.isfinite(pose).all():
                    continue  # ScanNet marks lost tracking with -inf poses
                with Image.open(fdir / "color" / f"{i}.jpg") as im:
                    image = (
                        np.asarray(im.convert("RGB"))
                        if self.load_images
                        else np.zeros((im.height, im.width, 3), np.uint8)
                    )
                depth = None
                dpath = fdir / "depth" / f"{i}.png"
                if dpath.is_file():
                    with Image.open(dpath) as dm:
                        dm = dm.resize((image.shape[1], image.shape[0]), Image.NEAREST)
                        depth = np.asarray(dm).astype(np.float32) / 1000.0
                cameras.append(CameraFrame(f"frame_{i}", image, K, invert_transform(pose), depth))
        return Sample(scene, self.name, points, labels, cameras, [Sweep(points, 0.0, labels)])
