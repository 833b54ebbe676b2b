"""Stage registry shared by ``clip2scene train`` and ``clip2scene evaluate``.

Each stage lives in a ``clip2scene_training`` module that defines ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Building the command's parser imports none of
them (the one-line help is written here), so ``clip2scene --help`` stays fast and a robot install
without the training package still runs; the chosen stage's module is imported when it runs and
parses its own options.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

# kind -> stage -> (module, one-line help)
STAGES: dict[str, dict[str, tuple[str, str]]] = {
    "train": {
        "teacher": ("clip2scene_training.teacher.train", "train the tiny CLIP teacher on synthetic renders"),
        "pretrain": ("clip2scene_training.pretrain", "CLIP2Scene pre-training from a frozen CLIP teacher"),
        "finetune": ("clip2scene_training.finetune", "fine-tune a student on a fraction of labelled scans"),
        "soup": ("clip2scene_training.soup", "average the weights of students trained from one start"),
    },
    "evaluate": {
        "teacher": ("clip2scene_training.teacher.evaluate", "pixel mIoU of a CLIP teacher on synthetic images"),
        "student": ("clip2scene_training.evaluate", "annotation-free or fine-tuned 3D mIoU of a student"),
        "scans": ("clip2scene_ros.evaluation.scans", "mIoU of a student on labelled real LiDAR scans"),
    },
}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def add_stage_parsers(parser: argparse.ArgumentParser, kind: str) -> None:
    stages = STAGES[kind]
    lines = [f"  {name:<10} {text}" for name, (_, text) in stages.items()]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "stages:\n" + "\n".join(lines) + f"\n\n`clip2scene {kind} STAGE --help` lists a stage's options."
    parser.add_argument("stage", choices=list(stages), metavar="STAGE", help=", ".join(stages))
    parser.add_argument("stage_args", nargs=argparse.REMAINDER, help="the stage's options")
    parser.set_defaults(_stage_kind=kind)


def run_stage(args: argparse.Namespace) -> int:
    kind, stage = args._stage_kind, args.stage
    module_name, text = STAGES[kind][stage]
    if not _exists(module_name):
        raise SystemExit(
            f"clip2scene {kind} {stage} needs the training package {module_name.split('.')[0]} "
            "(install the repository with `pip install -e .`)"
        )
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"clip2scene {kind} {stage}", description=getattr(module, "HELP", text))
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(args.stage_args)) or 0)
