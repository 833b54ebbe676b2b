"""``clip2scene train STAGE``: run one offline training stage (imports clip2scene_training lazily)."""

from __future__ import annotations

import argparse

from clip2scene_ros.cli.stages import add_stage_parsers, run_stage

HELP = "train a model: teacher (tiny CLIP), pretrain (CLIP2Scene), finetune (labelled fraction), soup (average)"
KIND = "train"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_parsers(parser, KIND)


def run(args: argparse.Namespace) -> int:
    return run_stage(args)
