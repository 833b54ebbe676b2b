"""sensor_msgs <-> numpy without sensor_msgs_py or cv_bridge (neither is installable here).

Every function raises ``ValueError`` with a message that names the problem, so the node can log
it as a warning and keep serving.
"""

from __future__ import annotations

import array
import json
from typing import TYPE_CHECKING

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField

from clip2scene_ros.cloud_layout import (  # noqa: F401
    POINTFIELD_DTYPES,
    cloud_to_array,
    fields_to_dtype,
    little_endian_points,
)

if TYPE_CHECKING:
    from clip2scene_ros.models.inputs import InputSpec

_PF = {kind: code for code, kind in POINTFIELD_DTYPES.items()}  # numpy kind -> PointField datatype

# Output fields appended to the input points: label, score and PCL-style packed rgb.
OUTPUT_FIELDS = (("label", PointField.UINT16), ("score", PointField.FLOAT32), ("rgb", PointField.FLOAT32))


try:  # the design card's PointCloud2 reader (a ROS install, or the kit scripts/setup.sh installs)
    from sensor_msgs_py import point_cloud2 as _pc2
except ImportError:  # pragma: no cover - depends on the installation
    _pc2 = None
READER = "sensor_msgs_py" if _pc2 is not None else "own"  # benchmarks/node_overhead.py times both


def read_cloud(msg: PointCloud2) -> np.ndarray:
    """Structured array [height*width] of a cloud: sensor_msgs_py's ``read_points`` (a zero-copy
    view, as fast as our own reader: benchmarks/node_overhead.py), our reader for what it does not
    cover: rows with padding (it ignores row_step), short data (it fails without saying why) and
    big-endian clouds (it byte-swaps the message's own buffer in place, which corrupts the output
    cloud built from the same message)."""
    n = msg.width * msg.height
    if READER == "sensor_msgs_py" and n and not msg.is_bigendian and msg.row_step == msg.width * msg.point_step \
            and len(msg.data) >= n * msg.point_step and msg.point_step > 0:  # fmt: skip
        return _pc2.read_points(msg, skip_nans=False)
    return cloud_to_array(msg)


def cloud_points(msg: PointCloud2, spec: InputSpec) -> tuple[np.ndarray, tuple[str, ...]]:
    """([N, 3 + F] float32 model input, feature fields the cloud lacks) from a PointCloud2, read
    through the model's input contract (``Segmenter.input``).

    An empty cloud with x/y/z gives zero rows; a cloud without x/y/z raises ``ValueError``.
    """
    cloud = read_cloud(msg)
    if cloud.size == 0 and "x" in (cloud.dtype.names or ()):
        return np.zeros((0, 3 + len(spec.fields)), np.float32), ()
    points, missing = spec.points_from_cloud(cloud)
    return points, tuple(missing)


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """uint8 [N, 3] -> float32 [N] holding 0x00RRGGBB, the PCL/RViz 'rgb' convention."""
    c = colors.astype(np.uint32)
    return ((c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]).view(np.float32)


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(rgb, dtype=np.float32).view(np.uint32)
    return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=1).astype(np.uint8)


def labelled_cloud(msg: PointCloud2, labels: np.ndarray, scores: np.ndarray, rgb: np.ndarray) -> PointCloud2:
    """The input cloud (same header, layout and point order) with label, score and rgb appended.

    Input fields that share a name with an output field are hidden (their bytes stay as padding).
    """
    n = msg.width * msg.height
    in_step = msg.point_step
    base = in_step + (-in_step) % 4  # keep the appended floats 4-byte aligned
    out_step = base + 12  # label u2, 2 bytes padding, score f4, rgb f4
    offsets = {"label": base, "score": base + 4, "rgb": base + 8}
    # The message's own zero-filled buffer, written in place: one allocation and no final copy
    # (zeros keep the padding bytes deterministic).
    data = array.array("B", b"\0") * (n * out_step)
    if n:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(n, out_step)
        if msg.is_bigendian:  # converted: the output declares one byte order for all its fields
            raw[:, :in_step] = little_endian_points(msg)
        else:
            src = np.frombuffer(msg.data, dtype=np.uint8)
            row_bytes = msg.width * in_step
            if msg.height > 1 and msg.row_step != row_bytes:
                src = src[: msg.row_step * msg.height].reshape(msg.height, msg.row_step)[:, :row_bytes]
            raw[:, :in_step] = src[: n * in_step].reshape(n, in_step)
        rec = raw.reshape(-1).view(
            np.dtype(
                {
                    "names": list(offsets),
                    "formats": ["<u2", "<f4", "<f4"],
                    "offsets": list(offsets.values()),
                    "itemsize": out_step,
                }
            )  # fmt: skip
        )
        rec["label"], rec["score"], rec["rgb"] = labels, scores, rgb
    out = PointCloud2()
    out.header = msg.header
    out.height, out.width = msg.height, msg.width
    out.fields = [f for f in msg.fields if f.name not in offsets]
    for name, dt in OUTPUT_FIELDS:
        out.fields.append(PointField(name=name, offset=offsets[name], datatype=dt, count=1))
    out.is_bigendian = False
    out.point_step = out_step
    out.row_step = out_step * msg.width
    out.is_dense = msg.is_dense
    out.data = data
    return out


def _byte_array(a: np.ndarray) -> array.array:
    """array('B') with one copy (rclpy accepts it without its slow per-byte field check)."""
    out = array.array("B")
    if a.size:
        out.frombytes(memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8)))
    return out


def array_to_cloud(header, cloud: np.ndarray, height: int = 1) -> PointCloud2:
    """PointCloud2 from a structured array of scalar (count 1) or fixed-size fields."""
    msg = PointCloud2()
    msg.header = header
    n = cloud.shape[0]
    msg.height = height if n else 1
    msg.width = n // msg.height if n else 0
    fields = []
    for name in cloud.dtype.names:
        sub, off = cloud.dtype.fields[name][:2]
        count = 1
        if sub.subdtype is not None:
            sub, shape = sub.subdtype
            count = int(np.prod(shape))
        fields.append(PointField(name=name, offset=off, datatype=_PF[sub.str[1:]], count=count))
    msg.fields = fields
    msg.is_bigendian = False
    msg.point_step = cloud.dtype.itemsize
    msg.row_step = msg.point_step * msg.width
    msg.is_dense = bool(n) and all(np.isfinite(cloud[c]).all() for c in ("x", "y", "z") if c in cloud.dtype.names)
    msg.data = _byte_array(cloud)
    return msg


def xyz_cloud(header, points: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> PointCloud2:
    """Convenience: [N, 3+F] float points (x, y, z, intensity...) + optional extra columns."""
    names = ["x", "y", "z", "intensity"][: points.shape[1]]
    extra = extra or {}
    dtype = np.dtype([(n, "<f4") for n in names] + [(k, v.dtype.newbyteorder("<")) for k, v in extra.items()])
    arr = np.zeros(points.shape[0], dtype=dtype)
    for i, n in enumerate(names):
        arr[n] = points[:, i]
    for k, v in extra.items():
        arr[k] = v
    return array_to_cloud(header, arr)


# ---- images -------------------------------------------------------------------------------

# Read here as zero-copy views: cv_bridge's imgmsg_to_cv2 copies (+0.4 ms per 1600x900 image, measured).
FAST_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC3", "8UC1")
# Colour encodings only cv_bridge converts (where installed: a ROS install or the set-up's kit).
BRIDGE_ENCODINGS = ("rgb16", "bgr16", "rgba16", "bgra16", "yuv422", "yuv422_yuy2", "bayer_rggb8", "bayer_bggr8",
                    "bayer_gbrg8", "bayer_grbg8")  # fmt: skip
try:
    from cv_bridge import CvBridge, CvBridgeError

    _BRIDGE = CvBridge()
except ImportError:  # pragma: no cover - depends on the installation
    _BRIDGE = None
SUPPORTED_ENCODINGS = FAST_ENCODINGS + (BRIDGE_ENCODINGS if _BRIDGE is not None else ())


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> uint8 [H, W, 3] RGB (a view where possible)."""
    enc = msg.encoding.lower() if msg.encoding else ""
    channels = {"rgb8": 3, "bgr8": 3, "8uc3": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "8uc1": 1, "mono16": 2}
    if enc not in channels and _BRIDGE is not None and msg.encoding in BRIDGE_ENCODINGS:
        try:
            return _BRIDGE.imgmsg_to_cv2(msg, "rgb8")
        except CvBridgeError as e:
            raise ValueError(f"cv_bridge cannot convert '{msg.encoding}' to rgb8: {e}") from None
    if enc not in channels:
        raise ValueError(
            f"unsupported image encoding '{msg.encoding}'; publish one of {', '.join(SUPPORTED_ENCODINGS)} "
            "or a CompressedImage (jpeg/png)"
        )
    h, w = msg.height, msg.width
    bpp = channels[enc]
    if h == 0 or w == 0:
        raise ValueError("image has zero width or height")
    if msg.step < w * bpp or len(msg.data) < msg.step * h:
        raise ValueError(f"image step {msg.step} / data size {len(msg.data)} do not fit {w}x{h} {enc}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)[: msg.step * h].reshape(h, msg.step)[:, : w * bpp]
    if enc == "mono16":
        v = buf.view(">u2" if msg.is_bigendian else "<u2").reshape(h, w)
        g = (v >> 8).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    img = buf.reshape(h, w, bpp)
    if bpp == 1:
        return np.repeat(img, 3, axis=2)
    if enc in ("bgr8", "8uc3", "bgra8"):
        return img[:, :, 2::-1]
    return img[:, :, :3]


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> uint8 [H, W, 3] RGB."""
    import cv2  # imported lazily: only cameras with compressed transport need OpenCV

    data = np.frombuffer(msg.data, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise ValueError(f"cannot decode CompressedImage (format '{msg.format}'); expected jpeg or png bytes")
    return img[:, :, ::-1]


def rgb_to_image(header, rgb: np.ndarray, encoding: str = "rgb8") -> Image:
    msg = Image()
    msg.header = header
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * (rgb.shape[2] if rgb.ndim == 3 else 1)
    msg.data = _byte_array(rgb)
    return msg


def camera_info_matrix(info: CameraInfo) -> np.ndarray:
    """3x3 intrinsics from CameraInfo.k; raises when it is all zeros (uncalibrated)."""
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError("CameraInfo.k has no focal length (uncalibrated camera)")
    return k


def check_info_matches(info: CameraInfo, height: int, width: int) -> None:
    if info.width and info.height and (info.width != width or info.height != height):
        raise ValueError(
            f"CameraInfo says {info.width}x{info.height} but the image is {width}x{height}; "
            "publish the CameraInfo of the image's resolution (or rectified/resized pair)"
        )


def image_problem(msg: Image | CompressedImage, info: CameraInfo | None) -> str | None:
    """Why an arriving image cannot be used (unsupported encoding, size unlike its CameraInfo), else None."""
    if not isinstance(msg, Image):
        return None
    if (msg.encoding or "").lower() not in {e.lower() for e in SUPPORTED_ENCODINGS}:
        return (f"unsupported image encoding '{msg.encoding}'; supported: {', '.join(SUPPORTED_ENCODINGS)} "
                "(or CompressedImage); image ignored")  # fmt: skip
    try:
        if info is not None:
            check_info_matches(info, msg.height, msg.width)
    except ValueError as e:
        return f"{e}; camera ignored until they agree"
    return None


def legend_json(vocabulary, colors: np.ndarray) -> str:  # noqa: ANN001 - teacher.vocabulary.Vocabulary
    """The class legend the node latches: vocabulary name, ids, names and colours (uint8 [K, 3])."""
    return json.dumps({
        "vocabulary": vocabulary.name,
        "unlabelled": {"id": 0, "color": colors[0].tolist()},
        "classes": [
            {"id": i, "name": c.name, "names": list(c.names), "color": colors[i].tolist()}
            for i, c in zip(vocabulary.ids, vocabulary.classes, strict=True)
        ],
    })  # fmt: skip


def diagnostics(stamp, level: int, name: str, hardware_id: str, problems: list[str], values: dict[str, str]):  # noqa: ANN001, ANN201
    """A DiagnosticArray with one status; ``level`` 0/1/2 = OK/WARN/ERROR."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(
        level=(DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)[level],
        name=name,
        message="; ".join(problems) or "ok",
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in values.items()],
    )
    arr = DiagnosticArray(status=[status])
    arr.header.stamp = stamp
    return arr
