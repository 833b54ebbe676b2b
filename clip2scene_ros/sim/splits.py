"""Fixed train/val/test splits of scene seeds (``config/sim/splits.yaml``)."""

from __future__ import annotations

from functools import lru_cache

import yaml

SPLITS = ("train", "val", "test")


@lru_cache(maxsize=1)
def _table() -> dict[str, tuple[int, int]]:
    from clip2scene_ros.resources import config_path

    with open(config_path("sim", "splits.yaml")) as f:
        data = yaml.safe_load(f)
    table = {k: (int(v["start"]), int(v["count"])) for k, v in data.items()}
    spans = sorted(table.values())
    for (a0, n0), (a1, _) in zip(spans, spans[1:], strict=False):
        if a0 + n0 > a1:
            raise ValueError("config/sim/splits.yaml: seed ranges overlap")
    return table


def split_seeds(split: str, count: int | None = None) -> list[int]:
    """The first ``count`` seeds (all when None) of ``split`` ('train', 'val' or 'test')."""
    table = _table()
    if split not in table:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(table)}")
    start, n = table[split]
    if count is not None:
        if not 0 <= count <= n:
            raise ValueError(f"split {split!r} has {n} seeds; asked for {count}")
        n = count
    return list(range(start, start + n))


def split_of(seed: int) -> str | None:
    """Which split a seed belongs to (None if it is in none)."""
    for name, (start, n) in _table().items():
        if start <= seed < start + n:
            return name
    return None
