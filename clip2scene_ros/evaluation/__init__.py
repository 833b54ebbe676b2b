"""ROS-free evaluation shared by replay (node outputs) and offline evaluation (Segmenter on files).

- :mod:`metrics`: confusion matrix, per-class IoU / mIoU, class mapping between a model vocabulary
  and a ground-truth taxonomy, latency percentiles.
- :mod:`report`: markdown + JSON + PNG plots (per-class IoU, latency histogram, bird's-eye views).
- :mod:`offline`: the same frames of a rosbag2 through :class:`~clip2scene_ros.inference.segmenter.Segmenter`
  in-process, the reference the node's replay must agree with.
"""

from clip2scene_ros.evaluation.metrics import (
    ConfusionMatrix,
    LabelMapping,
    gt_class_names,
    latency_summary,
    resolve_label_mapping,
)

__all__ = ["ConfusionMatrix", "LabelMapping", "gt_class_names", "latency_summary", "resolve_label_mapping"]
