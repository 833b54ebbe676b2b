"""clip2scene_ros: an ament_python package (colcon) that is also a plain pip package."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "clip2scene_ros"
ROOT = Path(__file__).resolve().parent


def _version() -> str:
    # package.xml is the single source of the version.
    import re

    text = (ROOT / "package.xml").read_text()
    return re.search(r"<version>([^<]+)</version>", text).group(1)


def _tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install `folder` recursively under share/<pkg>/<folder>."""
    entries: dict[str, list[str]] = {}
    for path in sorted(glob(f"{folder}/**/*", recursive=True)):
        if Path(path).is_file() and "__pycache__" not in path:
            entries.setdefault(f"share/{PACKAGE}/{Path(path).parent}", []).append(path)
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version=_version(),
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"])
    + ["clip2scene_training"]
    + [f"clip2scene_training.{p}" for p in find_packages("training/clip2scene_training")],
    package_dir={"clip2scene_training": "training/clip2scene_training"},
    package_data={PACKAGE: ["models/configs/*.json", "assets/**/*", "sparse/*.cpp"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *_tree("launch"),
        *_tree("config"),
        *_tree("training/configs"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    python_requires=">=3.10",
    maintainer="clip2scene_ros maintainers",
    maintainer_email="maintainers@clip2scene-ros.org",
    description="CLIP2Scene for ROS 2: annotation-free LiDAR segmentation distilled from CLIP.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "clip2scene = clip2scene_ros.cli.main:main",
            "segment_node = clip2scene_ros.nodes.segment_node:main",
        ],
    },
)
