"""clip2scene_ros: CLIP2Scene for ROS 2.

The core (``sparse``, ``geometry``, ``models``, ``teacher``, ``inference``, ``sim``) never imports
rclpy; ROS nodes live in ``clip2scene_ros.nodes``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clip2scene_ros")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
