"""ScanNet ``.sens`` recordings -> the posed-frame layout :class:`ScanNetDataset` reads.

A ``.sens`` file (ScanNet's SensorData format, version 4, little endian) holds a header
(sensor name; colour/depth intrinsics and extrinsics as 4x4 float32; compression kinds; image
sizes; depth shift; frame count) followed by frames (camera-to-world 4x4 float32, two uint64 time
stamps, the byte sizes of the colour and depth payloads, then the payloads). Colour is usually
JPEG, depth zlib-compressed uint16 (depth_shift units per metre, 1000 = millimetres). Trailing
IMU records are not read.

Output, per scene: ``color/<i>.jpg``, ``depth/<i>.png`` (uint16 mm), ``pose/<i>.txt`` and
``intrinsic/intrinsic_{color,depth}.txt`` / ``extrinsic_{color,depth}.txt``.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLOR_KINDS = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_KINDS = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
MAX_NAME = 4096  # a sensor name longer than this means the file is not a .sens recording


@dataclass
class SensHeader:
    sensor_name: str
    intrinsic_color: np.ndarray
    extrinsic_color: np.ndarray
    intrinsic_depth: np.ndarray
    extrinsic_depth: np.ndarray
    color_kind: str
    depth_kind: str
    color_size: tuple[int, int]  # (width, height)
    depth_size: tuple[int, int]
    depth_shift: float
    num_frames: int


@dataclass
class SensFrame:
    camera_to_world: np.ndarray  # 4x4 float64; ScanNet marks lost tracking with -inf
    timestamp_color: int
    timestamp_depth: int
    color: bytes  # compressed as header.color_kind says
    depth: bytes


class SensFormatError(ValueError):
    pass


def _read(f: io.BufferedReader, n: int, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise SensFormatError(f"{getattr(f, 'name', '.sens')}: file ends inside {what} (truncated download?)")
    return b


def read_sens(path: str | Path) -> tuple[SensHeader, Iterator[SensFrame]]:
    """The header and a lazy iterator over the frames (the file stays open until exhausted)."""
    f = open(path, "rb")  # noqa: SIM115 - closed by the generator
    try:
        (version,) = struct.unpack("<I", _read(f, 4, "the header"))
        if version != 4:
            raise SensFormatError(f"{path}: .sens version {version}; only version 4 (ScanNet) is supported")
        (name_len,) = struct.unpack("<Q", _read(f, 8, "the header"))
        if name_len > MAX_NAME:
            raise SensFormatError(f"{path}: sensor name of {name_len} bytes; not a ScanNet .sens file")
        name = _read(f, name_len, "the header").decode("utf-8", errors="replace")
        mats = np.frombuffer(_read(f, 4 * 64, "the header"), "<f4").reshape(4, 4, 4).astype(np.float64)
        color_kind, depth_kind = struct.unpack("<ii", _read(f, 8, "the header"))
        cw, ch, dw, dh = struct.unpack("<IIII", _read(f, 16, "the header"))
        (shift,) = struct.unpack("<f", _read(f, 4, "the header"))
        (num_frames,) = struct.unpack("<Q", _read(f, 8, "the header"))
    except BaseException:
        f.close()
        raise
    header = SensHeader(
        name, mats[0], mats[1], mats[2], mats[3], COLOR_KINDS.get(color_kind, f"kind {color_kind}"),
        DEPTH_KINDS.get(depth_kind, f"kind {depth_kind}"), (cw, ch), (dw, dh), float(shift), int(num_frames),
    )  # fmt: skip

    def frames() -> Iterator[SensFrame]:
        with f:
            for i in range(num_frames):
                what = f"frame {i}"
                pose = np.frombuffer(_read(f, 64, what), "<f4").reshape(4, 4).astype(np.float64)
                t_color, t_depth, n_color, n_depth = struct.unpack("<QQQQ", _read(f, 32, what))
                yield SensFrame(pose, t_color, t_depth, _read(f, n_color, what), _read(f, n_depth, what))

    return header, frames()


def decode_depth(frame: SensFrame, header: SensHeader) -> np.ndarray:
    """uint16 [H, W] depth in the file's units (header.depth_shift per metre)."""
    if header.depth_kind == "zlib_ushort":
        raw = zlib.decompress(frame.depth)
    elif header.depth_kind == "raw_ushort":
        raw = frame.depth
    else:
        raise SensFormatError(f"depth compression {header.depth_kind!r} is not supported (zlib_ushort, raw_ushort)")
    w, h = header.depth_size
    if len(raw) != 2 * w * h:
        raise SensFormatError(f"depth frame holds {len(raw)} bytes, expected {2 * w * h} for {w}x{h}")
    return np.frombuffer(raw, "<u2").reshape(h, w)


def export_frames(sens: str | Path, out_dir: str | Path, every: int = 1, progress: bool = False) -> int:
    """Write every ``every``-th frame of ``sens`` in the ScanNetDataset layout; returns frames written."""
    from PIL import Image

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    header, frames = read_sens(sens)
    if header.color_kind not in ("jpeg", "png", "raw"):
        raise SensFormatError(f"{sens}: colour compression {header.color_kind!r} is not supported")
    out = Path(out_dir)
    for sub in ("color", "depth", "pose", "intrinsic"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for name in ("intrinsic_color", "extrinsic_color", "intrinsic_depth", "extrinsic_depth"):
        np.savetxt(out / "intrinsic" / f"{name}.txt", getattr(header, name), fmt="%.6f")
    scale = 1000.0 / header.depth_shift if header.depth_shift > 0 else 1.0  # the dataset reads millimetres
    it = frames
    if progress:
        from tqdm import tqdm

        it = tqdm(frames, total=header.num_frames, desc=Path(sens).stem, unit="frame")
    written = 0
    for i, fr in enumerate(it):
        if i % every:
            continue
        if header.color_kind == "jpeg":
            (out / "color" / f"{i}.jpg").write_bytes(fr.color)  # already JPEG: no re-encoding loss
        else:
            if header.color_kind == "png":
                rgb = np.asarray(Image.open(io.BytesIO(fr.color)).convert("RGB"))
            else:
                w, h = header.color_size
                rgb = np.frombuffer(fr.color, np.uint8).reshape(h, w, 3)
            Image.fromarray(rgb).save(out / "color" / f"{i}.jpg", quality=95)
        depth = decode_depth(fr, header)
        if scale != 1.0:
            depth = np.clip(np.rint(depth * scale), 0, 65535).astype(np.uint16)
        Image.fromarray(depth).save(out / "depth" / f"{i}.png")
        np.savetxt(out / "pose" / f"{i}.txt", fr.camera_to_world, fmt="%.6f")
        written += 1
    return written


def write_sens(path: str | Path, header: SensHeader, frames: list[SensFrame]) -> None:
    """The inverse of :func:`read_sens` (tests and tools that make small recordings)."""
    kinds = {v: k for k, v in COLOR_KINDS.items()}, {v: k for k, v in DEPTH_KINDS.items()}
    name = header.sensor_name.encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<IQ", 4, len(name)) + name)
        for m in (header.intrinsic_color, header.extrinsic_color, header.intrinsic_depth, header.extrinsic_depth):
            f.write(np.asarray(m, "<f4").tobytes())
        f.write(struct.pack("<ii", kinds[0][header.color_kind], kinds[1][header.depth_kind]))
        f.write(struct.pack("<IIIIfQ", *header.color_size, *header.depth_size, header.depth_shift, len(frames)))
        for fr in frames:
            f.write(np.asarray(fr.camera_to_world, "<f4").tobytes())
            f.write(struct.pack("<QQQQ", fr.timestamp_color, fr.timestamp_depth, len(fr.color), len(fr.depth)))
            f.write(fr.color + fr.depth)
