"""``clip2scene evaluate STAGE``: evaluate a trained model (imports clip2scene_training lazily)."""

from __future__ import annotations

import argparse

from clip2scene_ros.cli.stages import add_stage_parsers, run_stage

HELP = "evaluate a model: teacher (2D pixel mIoU), student (annotation-free / fine-tuned 3D mIoU)"
KIND = "evaluate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_parsers(parser, KIND)


def run(args: argparse.Namespace) -> int:
    return run_stage(args)
