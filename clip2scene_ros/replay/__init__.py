"""Rosbag2 replay through segment_node: ``bag`` (ROS-free reading), ``player`` (rclpy), ``convert``
(datasets -> bags) and ``offline`` (the same frames through the Segmenter in-process, the reference a
replay must agree with).

Importing this package does not import rclpy; :mod:`clip2scene_ros.replay.player` does.
"""
