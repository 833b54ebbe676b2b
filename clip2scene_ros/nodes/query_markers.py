"""A query answer's instances as ``visualization_msgs/MarkerArray``: one box and one label each.

RViz and Foxglove draw these directly; each answer first deletes the previous one's markers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from visualization_msgs.msg import Marker, MarkerArray

NAMESPACE = "query"


def query_markers(
    header, text: str, centroids: Sequence[np.ndarray], sizes: Sequence[np.ndarray], scores: Sequence[float] = ()
) -> MarkerArray:
    """Boxes (translucent orange) and text labels (phrase + instance score) at each centroid."""
    out = MarkerArray()
    clear = Marker(header=header, ns=NAMESPACE, action=Marker.DELETEALL)
    out.markers.append(clear)
    for i, (c, s) in enumerate(zip(centroids, sizes, strict=True)):
        box = Marker(header=header, ns=NAMESPACE, id=2 * i, type=Marker.CUBE, action=Marker.ADD)
        box.pose.position.x, box.pose.position.y, box.pose.position.z = (float(v) for v in c)
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = (max(float(v), 0.05) for v in s)
        box.color.r, box.color.g, box.color.b, box.color.a = 1.0, 0.55, 0.0, 0.35
        box.lifetime = Duration(sec=0)
        label = Marker(header=header, ns=NAMESPACE, id=2 * i + 1, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        label.pose.position.x, label.pose.position.y = float(c[0]), float(c[1])
        label.pose.position.z = float(c[2]) + float(s[2]) / 2 + 0.4
        label.pose.orientation.w = 1.0
        label.scale.z = 0.6
        label.color.r = label.color.g = label.color.b = label.color.a = 1.0
        label.text = text if i >= len(scores) else f"{text} {float(scores[i]):.2f}"
        out.markers += [box, label]
    return out
