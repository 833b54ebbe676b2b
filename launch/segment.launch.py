"""ros2 launch clip2scene_ros segment.launch.py [config:=FILE] [backend:=torch] [namespace:=/robot]

Thin: the node reads the same config/segment.yaml as `clip2scene segment`.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    default_config = os.path.join(get_package_share_directory("clip2scene_ros"), "config", "segment.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument("config", default_value=default_config, description="parameter YAML"),
            DeclareLaunchArgument(
                "backend", default_value="torch", description="torch | onnxruntime | tensorrt"
            ),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
            Node(
                package="clip2scene_ros",
                executable="segment_node",
                name="segment_node",
                namespace=LaunchConfiguration("namespace"),
                parameters=[LaunchConfiguration("config"), {"backend": LaunchConfiguration("backend")}],
                output="screen",
            ),
        ]
    )
