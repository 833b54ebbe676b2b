"""PointCloud2 byte layout <-> numpy, ROS-free (duck-typed on ``fields``, ``data``, ``point_step``...).

Works on rclpy messages and on rosbags' deserialised ones alike, so the node, the bag reader and the
simulator's bag writer parse clouds one way. PointField datatype codes are the ROS constants.
"""

from __future__ import annotations

import numpy as np

# sensor_msgs/PointField datatype -> numpy kind (INT8=1 ... FLOAT64=8)
POINTFIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def fields_to_dtype(msg) -> np.dtype:
    """Structured dtype of one point of ``msg`` (offsets and padding as in the message)."""
    e = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in POINTFIELD_DTYPES:
            raise ValueError(f"field '{f.name}' has unknown PointField datatype {f.datatype}")
        if f.name in names or not f.name:
            continue  # duplicate or unnamed fields cannot be addressed; skip them
        base = e + POINTFIELD_DTYPES[f.datatype]
        names.append(f.name)
        formats.append(base if f.count <= 1 else (base, (f.count,)))
        offsets.append(f.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})


def cloud_to_array(msg) -> np.ndarray:
    """Structured view [height*width] of the points (zero-copy unless rows carry padding)."""
    n = msg.width * msg.height
    if n == 0:
        return np.zeros(0, dtype=fields_to_dtype(msg)) if msg.point_step else np.zeros(0)
    if msg.point_step <= 0:
        raise ValueError(f"point_step is {msg.point_step}; it must be the byte size of one point")
    dtype = fields_to_dtype(msg)
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    row_bytes = msg.width * msg.point_step
    if msg.row_step == row_bytes or msg.height == 1:
        if buf.size < n * msg.point_step:
            raise ValueError(f"data holds {buf.size} bytes but width*height*point_step = {n * msg.point_step}")
        return np.frombuffer(msg.data, dtype=dtype, count=n)
    if buf.size < msg.row_step * msg.height or msg.row_step < row_bytes:
        raise ValueError(f"row_step {msg.row_step} is inconsistent with width*point_step {row_bytes}")
    rows = buf[: msg.row_step * msg.height].reshape(msg.height, msg.row_step)[:, :row_bytes]
    return np.ascontiguousarray(rows).view(dtype).reshape(-1)


def little_endian_points(msg) -> np.ndarray:
    """uint8 [height*width, point_step]: the points' bytes with every field little-endian.

    Big-endian clouds are converted field by field (bytes outside fields stay as they are), so the
    output of a node can append little-endian fields and declare one byte order.
    """
    n = msg.width * msg.height
    raw = np.zeros((n, msg.point_step), np.uint8)
    if n == 0:
        return raw
    cloud = np.ascontiguousarray(cloud_to_array(msg))
    raw[:] = cloud.view(np.uint8).reshape(n, msg.point_step)
    if msg.is_bigendian:
        swapped = cloud.astype(cloud.dtype.newbyteorder("<")).view(np.uint8).reshape(n, msg.point_step)
        for name in cloud.dtype.names:
            sub, off = cloud.dtype.fields[name][:2]
            raw[:, off : off + sub.itemsize] = swapped[:, off : off + sub.itemsize]
    return raw
