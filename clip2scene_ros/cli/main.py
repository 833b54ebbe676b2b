"""``clip2scene``: one command, one subcommand module each.

A subcommand module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when present, so a subcommand that does not exist
yet is simply absent from ``--help``. ``main(argv)`` is callable in-process for tests.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from clip2scene_ros import __version__
from clip2scene_ros.resources import configure_ros_environment

# Order shown in --help. `train` and `evaluate` import clip2scene_training lazily.
SUBCOMMANDS = (
    "sim", "prepare", "train", "evaluate", "export", "convert-torchsparse", "segment", "replay", "query", "demo",
)  # fmt: skip


def _module(name: str) -> str:
    return f"clip2scene_ros.cli.{name.replace('-', '_')}"


def _available() -> list[str]:
    return [n for n in SUBCOMMANDS if importlib.util.find_spec(_module(n)) is not None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clip2scene",
        description="CLIP2Scene for ROS 2: simulate, train, evaluate, export, segment, replay, query.",
    )
    parser.add_argument("--version", action="version", version=f"clip2scene {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _available():
        module = importlib.import_module(_module(name))
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_ros_environment()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0 if argv is None and len(sys.argv) == 1 else 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
