"""Rosbag2 replay through segment_node: ``bag`` (ROS-free reading), ``player`` (rclpy), ``convert``.

Importing this package does not import rclpy; :mod:`clip2scene_ros.replay.player` does.
"""
