"""ros2 launch clip2scene_ros segment.launch.py [config:=FILE] [backend:=torch] [namespace:=/robot]
    [points:=/lidar/points] [camera:=/camera/{name}] [rviz:=false]

The node subscribes to ``~/input/points`` and, per camera of the config's ``cameras`` list,
``~/input/<camera>/image_raw`` (or ``.../compressed``) and ``~/input/<camera>/camera_info``; the
remappings below connect them to the driver topics (``points`` and ``camera`` arguments).
Input QoS is best effort (sensor-data style) by default: it accepts best-effort and reliable publishers.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from clip2scene_ros.inference.registry import BACKENDS
from launch import LaunchDescription


def _nodes(context, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - launch's OpaqueFunction signature
    from clip2scene_ros.nodes.parameters import cameras_in_file, input_remaps

    config = LaunchConfiguration("config").perform(context)
    remappings = input_remaps(
        cameras_in_file(config),
        points=LaunchConfiguration("points").perform(context),
        camera=LaunchConfiguration("camera").perform(context),
    )
    # e.g. ("~/input/points", "/lidar/points"), ("~/input/cam_front/image_raw", "/camera/cam_front/image_raw")
    return [
        Node(
            package="clip2scene_ros",
            executable="segment_node",
            name="segment_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[config, {"backend": LaunchConfiguration("backend")}],
            remappings=remappings,
            output="screen",
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("clip2scene_ros")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "config", default_value=os.path.join(share, "config", "segment.yaml"), description="parameter YAML"
            ),
            DeclareLaunchArgument("backend", default_value="torch", description=" | ".join(BACKENDS)),
            DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
            DeclareLaunchArgument("points", default_value="/lidar/points", description="PointCloud2 topic"),
            DeclareLaunchArgument(
                "camera", default_value="/camera/{name}", description="camera topic prefix ({name} = camera)"
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="also start RViz2 with config/rviz"),
            # seconds between Ctrl-C and SIGTERM: room for the frame in flight and a clean shutdown
            DeclareLaunchArgument("sigterm_timeout", default_value="20"),
            OpaqueFunction(function=_nodes),
            Node(
                package="rviz2",
                executable="rviz2",
                arguments=["-d", os.path.join(share, "config", "rviz", "segment.rviz")],
                condition=IfCondition(LaunchConfiguration("rviz")),
                output="screen",
            ),
        ]
    )
