"""Stage registry shared by ``clip2scene train`` and ``clip2scene evaluate``.

Each stage lives in a ``clip2scene_training`` module that defines ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Only stages whose module exists are listed;
importing them is deferred to keep ``clip2scene --help`` fast and robot installs lean.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

STAGES: dict[str, dict[str, str]] = {
    "train": {
        "teacher": "clip2scene_training.teacher.train",
        "pretrain": "clip2scene_training.pretrain",
        "finetune": "clip2scene_training.finetune",
    },
    "evaluate": {
        "teacher": "clip2scene_training.teacher.evaluate",
        "student": "clip2scene_training.evaluate",
    },
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def add_stage_parsers(parser: argparse.ArgumentParser, kind: str) -> None:
    sub = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    for stage, module_name in STAGES[kind].items():
        if not _exists(module_name):
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(stage, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_stage_run=module.run)


def run_stage(args: argparse.Namespace) -> int:
    return int(args._stage_run(args) or 0)
