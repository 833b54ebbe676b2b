"""ROS-free metrics and reports shared by replay (node outputs), offline bag evaluation and training.

- :mod:`metrics`: confusion matrix, per-class IoU / mIoU, class mapping between a model vocabulary
  and a ground-truth taxonomy, latency percentiles.
- :mod:`report`: markdown + JSON + PNG plots (per-class IoU, latency histogram, bird's-eye views).
"""

from clip2scene_ros.evaluation.metrics import (
    ConfusionMatrix,
    LabelMapping,
    gt_class_names,
    latency_summary,
    resolve_label_mapping,
)

__all__ = ["ConfusionMatrix", "LabelMapping", "gt_class_names", "latency_summary", "resolve_label_mapping"]
