"""Read rosbag2 recordings (mcap or sqlite3) through ``rosbags``, ROS-free.

Every failure to open or read a bag becomes :class:`BagError` with a message that says what is
wrong and how to fix it, so the CLI can print one line instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clip2scene_ros.cloud_layout import cloud_to_array

LIDAR_TOPIC = "/lidar/points"
LABEL_TOPIC = "/lidar/gt_labels"
CLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
GT_TAXONOMY_KEY = "clip2scene.gt_taxonomy"  # bag custom_data: the taxonomy of the label topic
TF_TOPICS = ("/tf_static", "/tf")
# Bag time by which a cloud is held back behind the messages recorded after it (see clouds_after_transforms)
TF_LOOKAHEAD_NS = 500_000_000


class BagError(RuntimeError):
    """The bag cannot be used (missing, truncated, corrupt, or without the needed topics)."""


@dataclass
class BagInfo:
    path: Path
    storage: str
    topics: dict[str, str]  # topic -> message type
    counts: dict[str, int]
    start_ns: int
    end_ns: int
    custom: dict[str, str] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / 1e9

    def require_cloud(self, topic: str) -> None:
        if topic not in self.topics:
            clouds = [t for t, ty in self.topics.items() if ty == CLOUD_TYPE]
            raise BagError(
                f"{self.path} has no topic {topic}; its PointCloud2 topics: {', '.join(clouds) or 'none'} "
                "(choose one with --lidar-topic)"
            )
        if self.topics[topic] != CLOUD_TYPE:
            raise BagError(f"{self.path}: {topic} carries {self.topics[topic]}, not {CLOUD_TYPE}")
        if self.counts.get(topic, 0) == 0:
            raise BagError(f"{self.path}: {topic} has no messages")


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _bag_dir(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_file() and p.suffix in (".mcap", ".db3") and (p.parent / "metadata.yaml").is_file():
        return p.parent  # a storage file inside a bag folder
    if not p.exists():
        raise BagError(f"bag {p} does not exist (give the rosbag2 folder that holds metadata.yaml)")
    if p.is_file():
        raise BagError(
            f"{p} is a file; give the rosbag2 folder holding metadata.yaml and the .mcap/.db3 files "
            "(a bag without metadata.yaml can be repaired with `ros2 bag reindex`)"
        )
    if not (p / "metadata.yaml").is_file():
        raise BagError(f"{p} has no metadata.yaml: not a rosbag2 folder, or a recording that was not closed "
                       "(repair it with `ros2 bag reindex`)")  # fmt: skip
    return p


def _corrupt(path: Path, e: Exception) -> BagError:
    return BagError(
        f"bag {path} is truncated or corrupt ({type(e).__name__}: {e}); re-record or re-convert it, "
        "or repair an interrupted recording with `ros2 bag reindex`"
    )


def _metadata(path: Path) -> dict:
    import yaml

    data = yaml.safe_load((path / "metadata.yaml").read_text()) or {}
    return data.get("rosbag2_bagfile_information", data)


def _reader(path: Path):
    from rosbags.highlevel import AnyReader

    return AnyReader([path], default_typestore=typestore())


def inspect_bag(path: str | Path) -> BagInfo:
    """Topics, counts and time span of a bag (opens it fully, so damage is found here)."""
    p = _bag_dir(path)
    try:
        with _reader(p) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            counts: dict[str, int] = {}
            for c in reader.connections:
                counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
            meta = _metadata(p)
            custom = {str(k): str(v) for k, v in (meta.get("custom_data") or {}).items()}
            storage = str(meta.get("storage_identifier", "?"))
            return BagInfo(p, storage, topics, counts, int(reader.start_time), int(reader.end_time), custom)
    except BagError:
        raise
    except Exception as e:  # rosbags raises several types for damaged files
        raise _corrupt(p, e) from e


def iter_raw(path: str | Path, topics: Sequence[str]) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, bag time ns, serialized CDR bytes) in bag time order."""
    p = _bag_dir(path)
    try:
        with _reader(p) as reader:
            conns = [c for c in reader.connections if c.topic in set(topics)]
            expected = sum(int(c.msgcount) for c in conns)
            n = 0
            for conn, t, raw in reader.messages(connections=conns):
                n += 1
                yield conn.topic, conn.msgtype, int(t), bytes(raw)
            if n != expected:  # rosbags skips unreadable mcap chunks silently; the index knows better
                raise BagError(
                    f"bag {p} is truncated or corrupt: read {n} of the {expected} indexed messages on "
                    f"{', '.join(sorted({c.topic for c in conns}))}; re-record or re-convert it"
                )
    except BagError:
        raise
    except GeneratorExit:
        raise
    except Exception as e:
        raise _corrupt(p, e) from e


def clouds_after_transforms(
    messages: Iterator[tuple[str, str, int, bytes]], lidar_topic: str, lookahead_ns: int = TF_LOOKAHEAD_NS
) -> Iterator[tuple[str, str, int, bytes]]:
    """``iter_raw`` messages with each cloud moved behind the other messages of the next
    ``lookahead_ns`` of bag time. A cloud's transform is interpolated between the /tf poses around
    its stamp, and the later pose is often recorded after the cloud: whoever handles each cloud
    before reading on (a replay waiting for its labels, the offline evaluation) needs it first."""
    held = None
    for m in messages:
        if held is not None and (m[0] == lidar_topic or m[2] > held[2] + lookahead_ns):
            yield held
            held = None
        if m[0] == lidar_topic:
            held = m
        else:
            yield m
    if held is not None:
        yield held


def verify(path: str | Path, topics: Sequence[str]) -> int:
    """Read every message of ``topics`` once (no decoding): finds damage before a replay starts."""
    return sum(1 for _ in iter_raw(path, topics))


def deserialize(raw: bytes, msgtype: str, store=None):
    return (store or typestore()).deserialize_cdr(raw, msgtype)


def header_stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def cloud_array(msg) -> np.ndarray:
    """PointCloud2 (rosbags-deserialised) -> structured array over its declared fields."""
    try:
        return cloud_to_array(msg)
    except ValueError as exc:
        raise BagError(f"malformed PointCloud2: {exc}") from exc


def read_labels(path: str | Path, topic: str = LABEL_TOPIC, field_name: str = "label") -> dict[int, np.ndarray]:
    """Ground-truth labels of every message on ``topic``, keyed by header stamp (ns)."""
    store = typestore()
    out: dict[int, np.ndarray] = {}
    for _t, msgtype, _ts, raw in iter_raw(path, [topic]):
        msg = deserialize(raw, msgtype, store)
        arr = cloud_array(msg)
        if field_name not in (arr.dtype.names or ()):
            raise BagError(f"{topic} has no '{field_name}' field (fields: {', '.join(arr.dtype.names or ())})")
        out[header_stamp_ns(msg)] = arr[field_name].astype(np.int64)
    return out
