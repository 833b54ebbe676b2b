"""``clip2scene prepare targets --config CFG``: run the frozen teacher once over a dataset and write
the pre-training targets to the on-disk cache (``target_cache.py``) that training then streams.

Resumable (samples already in the cache are skipped), parallel (``--workers`` processes, each with
its own dataset reader and teacher), with a progress bar; unreadable samples are skipped with a
warning and listed in the summary. The summary (last printed line, JSON) reports the cache's bytes
per sample and the seconds per prepared sample.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import sys
import time
from typing import Any

import torch

from clip2scene_training.config import PretrainConfig, load_config

HELP = "run the teacher once over a dataset and cache the pre-training targets (fp16, sharded, resumable)"
LOG = logging.getLogger("clip2scene.prepare")

_STATE: dict[str, Any] = {}  # the dataset, teacher and cache of this process (inherited by forked workers)


def _prepare_one(index: int) -> tuple[int, int, str | None]:
    """(index, bytes written, error or None)."""
    from clip2scene_training.streaming import READ_ERRORS
    from clip2scene_training.targets import teacher_targets

    dataset, teacher, text, cache = _STATE["dataset"], _STATE["teacher"], _STATE["text"], _STATE["cache"]
    try:
        sample = dataset[index]
        sweeps = teacher_targets(teacher, text, sample)
        size = cache.write(index, [sw.points for sw in sample.sweeps], sweeps, sample.token)
    except READ_ERRORS as e:
        return index, 0, f"{type(e).__name__}: {e}"
    return index, size, None


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def prepare_targets(cfg: PretrainConfig, workers: int | None = None, progress: bool = True) -> dict:
    from clip2scene_ros.datasets import create_dataset
    from clip2scene_training.pretrain import build_teacher, open_target_cache
    from clip2scene_training.trainer import seed_everything

    if not cfg.targets.cache_dir:
        raise ValueError("targets.cache_dir is null: name the directory for the targets (--set targets.cache_dir=DIR)")
    workers = cfg.targets.workers if workers is None else workers
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)  # as training does: a randomly initialised (test) teacher is the same one
    dataset = create_dataset(cfg.data.kind, cfg.data.pairing, **cfg.data.options)
    teacher, _, text = build_teacher(cfg.teacher, "cpu")
    cache = open_target_cache(cfg, teacher, text)
    assert cache is not None
    n = len(dataset)
    cache.set_count(n)
    todo = [i for i in range(n) if not cache.has(i)]
    _STATE.update(dataset=dataset, teacher=teacher, text=text, cache=cache)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, initial=n - len(todo), desc="prepare targets", unit="sample", dynamic_ncols=True)
    failed: dict[int, str] = {}
    t0 = time.time()
    written = 0
    if workers > 0 and len(todo) > 1:
        # fork: workers inherit the dataset reader and the teacher instead of rebuilding them
        pool = mp.get_context("fork").Pool(min(workers, len(todo)), initializer=_worker_init, initargs=(1,))
        results = pool.imap_unordered(_prepare_one, todo, chunksize=1)
    else:
        pool, results = None, map(_prepare_one, todo)
    for index, size, error in results:
        written += size
        if error:
            failed[index] = error
            LOG.warning("sample %d skipped: %s", index, error)
        if bar is not None:
            bar.update(1)
    if pool is not None:
        pool.close()
        pool.join()
    if bar is not None:
        bar.close()
    seconds = time.time() - t0
    total_bytes, files = cache.bytes_on_disk()
    prepared = len(todo) - len(failed)
    return {
        "stage": "prepare_targets",
        "cache": str(cache.dir),
        "samples": n,
        "already_done": n - len(todo),
        "prepared": prepared,
        "skipped": {"count": len(failed), "samples": {str(k): v for k, v in sorted(failed.items())}},
        "seconds": round(seconds, 2),
        "s_per_sample": round(seconds / prepared, 4) if prepared else None,
        "bytes_per_sample": round(total_bytes / files) if files else None,
        "cache_bytes": total_bytes,
        "workers": workers,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="pretrain_synthetic", help="the pre-training YAML (file or shipped name)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--workers", type=int, help="worker processes (default: targets.workers of the config)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(PretrainConfig, args.config, list(args.set))
    summary = prepare_targets(cfg, args.workers, progress=not args.no_progress)
    if summary["skipped"]["count"]:
        print(f"{summary['skipped']['count']} unreadable samples skipped: {summary['skipped']['samples']}",
              file=sys.stderr)  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clip2scene prepare targets", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
