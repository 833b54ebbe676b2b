"""How fast is our sparse MinkUNet on CPU against spconv, and what does bf16 cost in labels?

Same MinkUNet weights on the real nuScenes keyframe (0.1 m) and the real KITTI frame (0.05 m)
from ../shared/data/real (LiDAR-like synthetic frames of similar size when absent). Paths:
ours eager fp32 / bf16 (1 and 2 threads; bf16 only on CPUs with native bf16, as precision "auto"
would), ours fused fp32 (the g++-built kernels and their pair maps, what the torch backend runs on
CPU; 2 threads = the kernels' barrier-free sharing, torch's own operators on one), ours exported
ONNX on ONNX Runtime (1 and 2 threads, the backend's session options; its
time includes building the padded map inputs the way the backend does: from the fused kernels'
neighbour tables where they are built), spconv 2.x CPU (1 thread: its CPU
scatter-add is wrong with more threads) and, when installed, torchsparse 1.4 CPU (1 thread; the same
weights in its SpVNAS layout: a second numerical reference). The ONNX Runtime / eager fp32 ratio at the same thread
count is the deployment graph's overhead (target <= 1.0); ONNX Runtime / fused compares it with
the fused path. The CPU model and flags are printed.
Each timing covers kernel-map building + forward from voxel features (spconv and torchsparse
build their maps inside their forward); voxelization is shared and excluded. Paths run interleaved (one call each
per round) so that load from other processes affects them alike. Prints medians, ratios against
spconv at 1 thread, label agreement with our fp32 (argmax against 16 random class embeddings) and
the largest difference from it, peak RSS growth per path, the load average; the last line is one JSON object.

    .venv/bin/python benchmarks/sparse_forward.py [--model minkunet18] [--runs 5] [--frames nuscenes kitti]
        [--checkpoint clip2scene_ros/assets/student]   # trained weights instead of random ones
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "sparse"))
sys.path.insert(0, str(REPO / "tests" / "models"))

from clip2scene_ros.inference.backends import session_options  # noqa: E402
from clip2scene_ros.inference.cpu import cpu_info  # noqa: E402
from clip2scene_ros.inference.export import export_onnx  # noqa: E402
from clip2scene_ros.models import create_model, load_checkpoint  # noqa: E402
from clip2scene_ros.models.inputs import prepare_inputs  # noqa: E402
from clip2scene_ros.sparse import native, padded_tensors, padded_tensors_from_tables  # noqa: E402
from clip2scene_ros.sparse.samples import lidar_like_scene, load_real_frame  # noqa: E402

REAL = Path(os.environ.get("CLIP2SCENE_REAL_DATA", REPO.parent / "shared" / "data" / "real"))
FRAMES = {"nuscenes": 0.1, "kitti": 0.05}


class PeakRSS:
    """Peak resident set size growth (MB) while the block runs, sampled every 2 ms."""

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self._rss()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.mb = (self.peak - self.base) / 2**20  # growth over the RSS before the path ran


def load_frame(name: str) -> tuple[np.ndarray, str]:
    if REAL.is_dir():
        return load_real_frame(REAL, name), "real"
    # synthetic stand-ins of similar voxel counts
    beams, steps = (32, 1100) if name == "nuscenes" else (64, 2000)
    return lidar_like_scene(1, beams=beams, azimuth_steps=steps), "synthetic"


def _release_memory() -> None:
    """Return freed heap pages to the OS so the next path's peak RSS growth is its own."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def run_interleaved(paths: dict, runs: int) -> dict:
    """Time every path once per round, rounds interleaved, so machine load hits all paths alike.

    ``paths``: name -> (threads, fn). Round 0 is a warm-up whose peak RSS growth is recorded.
    Returns name -> (median ms, last output, peak MB).
    """
    times: dict[str, list[float]] = {k: [] for k in paths}
    outs, peaks = {}, {}
    for r in range(runs + 1):
        for name, (threads, fn) in paths.items():
            torch.set_num_threads(threads)
            if r == 0:
                _release_memory()
                with PeakRSS() as mem:
                    outs[name] = fn()
                peaks[name] = mem.mb
                continue
            t = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t)
    torch.set_num_threads(1)
    return {k: (statistics.median(times[k]) * 1000, outs[k], peaks[k]) for k in paths}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minkunet18")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--frames", nargs="+", default=list(FRAMES), choices=list(FRAMES))
    ap.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime path")
    ap.add_argument("--no-torchsparse", action="store_true", help="skip the torchsparse path (about 5 s a forward)")
    ap.add_argument("--checkpoint", help="trained checkpoint (its architecture and weights; head 'global')")
    args = ap.parse_args()
    cpu = cpu_info()
    print(cpu.describe(), f"| load average {os.getloadavg()[0]:.1f}")

    import spconv_reference  # tests/sparse: the same network through spconv

    torch.manual_seed(0)
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint)[0].eval()
        args.model, args.width = model.config.name, model.config.width
    else:
        model = create_model(args.model, width=args.width, heads=["global"], embed_dim=512).eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    folded = create_model(model.config)
    folded.load_state_dict(model.state_dict())
    folded.fold_bn()
    bf16 = create_model(model.config)
    bf16.load_state_dict(model.state_dict())
    bf16.fold_bn().to(torch.bfloat16)
    classes = torch.randn(model.config.embed_dim, 16, generator=torch.Generator().manual_seed(1))
    params = sum(p.numel() for p in model.parameters())

    ts_model = None
    if not args.no_torchsparse:
        try:
            import torchsparse_reference as tsr  # tests/models: torchsparse 1.x networks, SpVNAS layout
        except ImportError as e:
            print(f"torchsparse path skipped: {e}")
        else:
            from clip2scene_ros.models import export_torchsparse

            ts_model = tsr.TorchsparseMinkUNet(model.config, model.config.embed_dim)
            ts_model.load_state_dict(export_torchsparse(model, "global"))
            ts_model.eval()

    sess = {}
    if not args.no_onnx:
        import onnxruntime as ort

        tmp = Path(tempfile.mkdtemp())
        t = time.perf_counter()
        export_onnx(model, tmp / "model.onnx")
        export_s = time.perf_counter() - t
        t = time.perf_counter()
        for th in (1, 2):
            sess[th] = ort.InferenceSession(
                str(tmp / "model.onnx"), session_options(th), providers=["CPUExecutionProvider"]
            )
        print(f"ONNX export {export_s:.1f} s, two ONNX Runtime sessions {time.perf_counter() - t:.1f} s")

    results = {}
    for frame in args.frames:
        pts, source = load_frame(frame)
        vs = FRAMES[frame]
        cfg = model.config
        cfg.voxel_size = vs
        prep = prepare_inputs(cfg, pts, vs)
        coords = prep.maps.coords[0]
        feats = prep.feats
        n = prep.num_voxels
        avg_nbr = (prep.maps.subm_map(0).num_pairs + n) / n
        row = {"source": source, "points": len(pts), "voxels": n, "avg_neighbours": round(avg_nbr, 2)}

        def ours(m, dtype, _c=coords, _f=feats):
            with torch.no_grad():
                maps = m.build_maps(_c)
                return m(_f.to(dtype), maps)["global"].float()

        fused_in = prepare_inputs(cfg, pts, vs, table_maps=True) if native.available() else None

        def fused(threads, _in=fused_in, _order=prep.maps.input_order, _k=cfg.kernel_sizes):
            with torch.no_grad(), native.kernel_threads(threads):
                maps = native.build_table_maps(_in.maps.coords[0], folded.num_levels, _k)
                # rows back in the level order of the other paths (the fused maps keep voxelize's)
                return folded(_in.feats, maps)["global"][_order]

        def spc(_c=coords, _f=feats):
            return spconv_reference.spconv_minkunet(model, _c, _f)["global"]

        def torchsparse_run(_c=coords, _f=feats):
            return tsr.run_minkunet(ts_model, _c, _f)

        def onnx_run(threads, _c=coords, _f=feats, _in=fused_in, _order=prep.maps.input_order):
            # the backends' path (prepare_graph_inputs): padded maps from the fused kernels' tables
            # where they are built, else from KernelMaps
            s = sess[threads]
            names = [i.name for i in s.get_inputs()][1:]
            if _in is None:
                with torch.no_grad():
                    maps = model.build_maps(_c)
                feeds = {"feats": _f.numpy(), **{k: v.numpy() for k, v in zip(names, padded_tensors(maps))}}
                return torch.from_numpy(s.run(None, feeds)[0])
            tensors, rank = padded_tensors_from_tables(native.build_table_maps(_in.maps.coords[0], folded.num_levels))
            order = torch.empty_like(rank)
            order[rank] = torch.arange(len(rank))
            feeds = {"feats": _in.feats.index_select(0, order).numpy()}
            feeds.update({k: v.numpy() for k, v in zip(names, tensors)})
            out = torch.from_numpy(s.run(None, feeds)[0])
            return out.index_select(0, rank)[_order]  # key order, then the other paths' level order

        todo = {"spconv_1t": (1, spc), "ours_fp32_1t": (1, lambda: ours(folded, torch.float32))}
        if fused_in is not None:
            todo["ours_fused_1t"] = (1, lambda: fused(1))
        if cpu.bf16_native:
            todo["ours_bf16_1t"] = (1, lambda: ours(bf16, torch.bfloat16))
        if ts_model is not None:
            todo["torchsparse_1t"] = (1, torchsparse_run)
        if sess:
            todo["onnxruntime_1t"] = (1, lambda: onnx_run(1))
        todo["ours_fp32_2t"] = (2, lambda: ours(folded, torch.float32))
        if fused_in is not None:
            todo["ours_fused_2t"] = (2, lambda: fused(2))
        if cpu.bf16_native:
            todo["ours_bf16_2t"] = (2, lambda: ours(bf16, torch.bfloat16))
        if sess:
            todo["onnxruntime_2t"] = (2, lambda: onnx_run(2))
        paths = run_interleaved(todo, args.runs)
        t = time.perf_counter()
        for _ in range(3):
            model.build_maps(coords)
        row["map_build_ms"] = round((time.perf_counter() - t) / 3 * 1000, 1)

        ref = paths["ours_fp32_1t"][1]
        ref_labels = (ref @ classes).argmax(1)
        spconv_ms = paths["spconv_1t"][0]
        print(
            f"\n{frame} ({source}): {len(pts)} points, {n} voxels, {avg_nbr:.2f} neighbours/voxel, "
            f"maps {row['map_build_ms']} ms"
        )
        print(f"{'path':<16}{'median ms':>11}{'vs spconv':>11}{'labels = fp32':>15}{'max |diff|':>12}{'peak MB':>9}")
        for name, (ms, out, mb) in paths.items():
            agree = float(((out @ classes).argmax(1) == ref_labels).float().mean())
            diff = float((out - ref).abs().max())
            row[name] = {
                "ms": round(ms, 1),
                "ratio_vs_spconv_1t": round(ms / spconv_ms, 3),
                "label_agreement": round(agree, 5),
                "max_abs_diff": diff,
                "peak_rss_mb": round(mb, 1),
            }
            print(f"{name:<16}{ms:>11.1f}{ms / spconv_ms:>11.3f}{agree:>15.4f}{diff:>12.2e}{mb:>9.1f}")
        best = min((v["ms"], k) for k, v in row.items() if isinstance(v, dict) and k.startswith("ours"))
        row["best_ours"] = {"path": best[1], "ratio_vs_spconv_1t": round(best[0] / spconv_ms, 3)}
        if sess:
            row["onnxruntime_vs_eager_fp32"] = {
                f"{t}t": round(paths[f"onnxruntime_{t}t"][0] / paths[f"ours_fp32_{t}t"][0], 3) for t in (1, 2)
            }
            print(f"ONNX Runtime / eager fp32 (target <= 1.0): {row['onnxruntime_vs_eager_fp32']}")
            if fused_in is not None:
                row["onnxruntime_vs_fused"] = {
                    f"{t}t": round(paths[f"onnxruntime_{t}t"][0] / paths[f"ours_fused_{t}t"][0], 3) for t in (1, 2)
                }
                print(f"ONNX Runtime / fused fp32: {row['onnxruntime_vs_fused']}")
        row["load_average"] = round(os.getloadavg()[0], 2)
        results[frame] = row

    summary = {
        "benchmark": "sparse_forward",
        "model": args.model,
        "width": args.width,
        "params": params,
        "runs": args.runs,
        "torch": torch.__version__,
        "cpu": cpu.as_dict(),
        "weights": args.checkpoint or "random",
        "frames": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
