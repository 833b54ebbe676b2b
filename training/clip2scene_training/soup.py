"""``clip2scene train soup``: average the weights of students trained from one start (a model soup).

Runs that warm-start from the same student and train on different drives or simulator settings end
in one basin but with different errors (one run finds far road, another keeps buildings). The
element-wise mean of their weights is one network of the same size and speed that usually keeps
the strengths of both (Wortsman et al., 2022, "Model soups"). Every member must have the same
architecture, input contract and text embeddings; BatchNorm statistics are averaged like the
weights. The result is an ordinary student directory (``model.safetensors``, ``model.json`` with
the members recorded under ``extra.soup``, ``text_embeddings.safetensors``).

    clip2scene train soup RUN_A/student RUN_B/student [--weights 0.5 0.5] --out runs/soup
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

HELP = "average the weights of students trained from one start (a model soup)"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
TEXT_FILE = "text_embeddings.safetensors"


def _meta(directory: Path) -> dict:
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a student checkpoint: {name} is missing")
    return json.loads((directory / CONFIG_FILE).read_text())


def average_students(members: list[str | Path], out: str | Path, weights: list[float] | None = None) -> Path:
    """Write the weighted mean of ``members``' weights to ``out`` (weights default to equal)."""
    dirs = [Path(m) for m in members]
    if len(dirs) < 2:
        raise ValueError("a soup needs at least two students")
    weights = [1.0] * len(dirs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(dirs) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"need one non-negative weight per student (with a positive sum), got {weights}")
    weights = [w / sum(weights) for w in weights]
    metas = [_meta(d) for d in dirs]
    for d, m in zip(dirs[1:], metas[1:]):
        for key in ("format", "config", "input", "bn_folded"):
            if m.get(key) != metas[0].get(key):
                raise ValueError(f"{d} differs from {dirs[0]} in '{key}': only students of one architecture mix")
    texts = [load_file(str(d / TEXT_FILE)) if (d / TEXT_FILE).is_file() else None for d in dirs]
    if any(t is not None for t in texts):
        if any(t is None or not torch.equal(t["text"], texts[0]["text"]) for t in texts):
            raise ValueError("the students were trained against different text embeddings (another teacher)")
    states = [load_file(str(d / WEIGHTS_FILE)) for d in dirs]
    soup = {}
    for name, first in states[0].items():
        if any(name not in s or s[name].shape != first.shape for s in states[1:]):
            raise ValueError(f"tensor '{name}' is missing or shaped differently in some student")
        if first.is_floating_point():
            mean = sum(w * s[name].double() for w, s in zip(weights, states))
            soup[name] = mean.to(first.dtype).contiguous()
        else:  # counters (BatchNorm's num_batches_tracked): the first member's
            soup[name] = first
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(soup, str(out / WEIGHTS_FILE))
    meta = dict(metas[0])
    meta["extra"] = {
        **metas[0].get("extra", {}),
        "soup": {"members": [str(d) for d in dirs], "weights": [round(w, 6) for w in weights]},
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    if texts[0] is not None:
        shutil.copyfile(dirs[0] / TEXT_FILE, out / TEXT_FILE)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("students", nargs="+", help="student directories (model.safetensors + model.json)")
    parser.add_argument("--out", required=True, help="directory for the averaged student")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per student (default: equal)")


def run(args: argparse.Namespace) -> int:
    out = average_students(args.students, args.out, args.weights)
    print(json.dumps({"stage": "soup", "students": args.students, "out": str(out)}))
    return 0
