"""Query instances as a MarkerArray: a delete-all first, then a box and a text label per instance."""

from __future__ import annotations

import numpy as np
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from clip2scene_ros.nodes.query_markers import query_markers


def test_boxes_and_labels_per_instance():
    header = Header(frame_id="lidar_top")
    arr = query_markers(header, "a parked car", [np.array([1.0, 2.0, 0.5]), np.array([5.0, -1, 0.7])],
                        [np.array([4.0, 1.8, 1.5]), np.array([0.0, 0.0, 0.0])], [0.91, 0.7])  # fmt: skip
    kinds = [m.type for m in arr.markers[1:]]
    assert arr.markers[0].action == Marker.DELETEALL and len(arr.markers) == 5
    assert kinds == [Marker.CUBE, Marker.TEXT_VIEW_FACING] * 2
    box, label = arr.markers[1], arr.markers[2]
    assert (box.pose.position.x, box.scale.x, box.header.frame_id) == (1.0, 4.0, "lidar_top")
    assert label.text == "a parked car 0.91" and label.pose.position.z > box.pose.position.z
    assert arr.markers[3].scale.x > 0  # a degenerate (single-point) instance still draws
    assert len({m.id for m in arr.markers[1:]}) == 4
    assert len(query_markers(header, "x", [], []).markers) == 1  # nothing found: only clears
