"""Offline evaluation of a rosbag2: the same frames through the ROS-free Segmenter, in-process.

This is the reference a replay through ``segment_node`` must agree with: same clouds (decoded
from the bag), same model, same vocabulary, same class mapping, same metric code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clip2scene_ros.evaluation.metrics import ConfusionMatrix, LabelMapping, resolve_label_mapping
from clip2scene_ros.replay import bag as B


def mapping_for(segmenter, gt_taxonomy: str, class_map: str | None = None) -> LabelMapping:
    vocab = segmenter.vocabulary
    classes = list(zip(vocab.ids, vocab.class_names, strict=True))
    return resolve_label_mapping(vocab.name, classes, gt_taxonomy, class_map)


def gt_taxonomy_of(info: B.BagInfo, override: str | None = None) -> str:
    """The label topic's taxonomy: the override, the bag's custom_data, else the synthetic world's."""
    return override or info.custom.get(B.GT_TAXONOMY_KEY) or "synthetic"


@dataclass
class OfflineResult:
    confusion: ConfusionMatrix
    frames: int
    mapping: LabelMapping
    labels: dict[int, np.ndarray]  # header stamp -> predicted label ids (model vocabulary)


def evaluate_bag_offline(
    bag: str | Path,
    segmenter,
    *,
    lidar_topic: str = B.LIDAR_TOPIC,
    label_topic: str = B.LABEL_TOPIC,
    gt_taxonomy: str | None = None,
    class_map: str | None = None,
    max_frames: int = 0,
    intensity_scale: float | None = None,
) -> OfflineResult:
    """mIoU of ``segmenter`` (a :class:`~clip2scene_ros.inference.segmenter.Segmenter`) on a bag's frames.

    Clouds become model points through the segmenter's input contract, as in the node;
    ``intensity_scale`` overrides the checkpoint's as the node's parameter does (None: keep it). A
    model working in base_link without a configured ``lidar_pose`` gets each cloud moved into it
    with the bag's /tf_static and /tf at the cloud's stamp, as the node does by default; a cloud
    without that transform is skipped, as the node skips it.
    """
    from clip2scene_ros.geometry.frames import BASE
    from clip2scene_ros.nodes.transform_buffer import TransformBuffer

    spec = segmenter.input if not intensity_scale else segmenter.input.replace(intensity_scale=intensity_scale)
    info = B.inspect_bag(bag)
    info.require_cloud(lidar_topic)
    if label_topic not in info.topics:
        raise B.BagError(f"{info.path} has no ground-truth topic {label_topic}: nothing to evaluate offline")
    gt = B.read_labels(info.path, label_topic)
    mapping = mapping_for(segmenter, gt_taxonomy_of(info, gt_taxonomy), class_map)
    conf = ConfusionMatrix(mapping.gt_names)
    store = B.typestore()
    labels: dict[int, np.ndarray] = {}
    n = 0
    base = BASE if spec.frame.name == BASE and segmenter.base_from_sensor is None else ""
    tf = TransformBuffer()
    messages = B.iter_raw(info.path, [lidar_topic, *(t for t in B.TF_TOPICS if base and t in info.topics)])
    for topic, msgtype, _t, raw in B.clouds_after_transforms(messages, lidar_topic):
        msg = B.deserialize(raw, msgtype, store)
        if topic != lidar_topic:
            tf.add_transforms(msg.transforms, static=topic == "/tf_static")
            continue
        stamp = B.header_stamp_ns(msg)
        base_from_sensor = tf.lookup(base, msg.header.frame_id, stamp) if base else None
        if base and base_from_sensor is None:
            continue
        try:
            pts, _ = spec.points_from_cloud(B.cloud_array(msg))
        except ValueError as e:
            raise B.BagError(f"{info.path}: LiDAR cloud at {stamp}: {e}") from e
        result = segmenter.segment(pts, [], base_from_sensor)
        labels[stamp] = result.labels
        if stamp in gt:
            conf.update(mapping(result.labels), gt[stamp])
        n += 1
        if max_frames and n >= max_frames:
            break
    return OfflineResult(conf, n, mapping, labels)
