"""What segment_node reports about itself: rates, rolling latency percentiles, warnings, health.

Plain Python (no rclpy): the node turns ``PipelineMonitor.report`` into a /diagnostics message.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class RateMeter:
    """Message rate over a sliding window of arrival times (monotonic seconds)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._times: deque[float] = deque()
        self._window = window_s
        self.count = 0

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        self.count += 1
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0


@dataclass
class LatencyStats:
    """Rolling window of per-frame figures (ms) for diagnostics and the benchmark."""

    window: int = 200
    values: dict[str, deque] = field(default_factory=dict)

    def add(self, name: str, value_ms: float) -> None:
        self.values.setdefault(name, deque(maxlen=self.window)).append(value_ms)

    def percentile(self, name: str, q: float) -> float:
        v = self.values.get(name)
        return float(np.percentile(np.fromiter(v, float), q)) if v else float("nan")


class WarningLog:
    """Counts warnings, keeps the last one for /diagnostics, and throttles repeats.

    rclpy throttles per call site; here the key is the message start, so distinct problems all show.
    """

    def __init__(self, emit: Callable[[str], None], throttle_s: float = 2.0) -> None:
        self.emit = emit
        self.throttle_s = throttle_s
        self.count = 0
        self.last = ""
        self._last_at: dict[str, float] = {}

    def warn(self, message: str, throttle: bool = False) -> None:
        self.count += 1
        self.last = message
        if throttle:
            key, now = message[:40], time.monotonic()
            last = self._last_at.get(key)
            if last is not None and now - last < self.throttle_s:
                return
            self._last_at[key] = now
        self.emit(message)


OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


class PipelineMonitor:
    """Rates, per-frame timings and failure counts of the node, summarised for /diagnostics."""

    def __init__(self, cameras: Iterable[str]) -> None:
        self.stats = LatencyStats()
        self.cloud_rate = RateMeter()
        self.out_rate = RateMeter()
        self.cam_rates = {c: RateMeter() for c in cameras}
        self.frames_done = 0
        self.failures = 0
        self._failures_reported = 0
        self.skipped_no_tf = 0  # clouds whose transform into the base frame did not come in time
        self._skipped_reported = 0
        self._last_stamp_ns: int | None = None
        self.last_fusion = (0, 0)  # (camera images, points) fused into the last frame
        # points given label 0 since start, by reason (shown in /diagnostics)
        self.points_dropped = {"invalid": 0, "out_of_range": 0, "beyond_hash_range": 0, "over_engine_profile": 0}

    def record_frame(
        self, marks: Sequence[tuple[str, float]], model_ms: dict[str, float], latency_ms: float, age_ms: float,
        cpu_ms: float,
    ) -> dict[str, float]:  # fmt: skip
        """Add one frame. ``marks``: (stage that just ended, perf_counter seconds), the first being
        ("start", t0); the model's own stages come from ``model_ms``. Returns the stage times (ms)."""
        stages: dict[str, float] = {}
        prev = marks[0][1]
        model_stages = {k: v for k, v in model_ms.items() if not k.endswith("_cpu")}
        for name, t in marks[1:]:
            if name == "segment":
                stages.update(model_stages)
            else:
                stages[name] = (t - prev) * 1e3
            prev = t
        total = (marks[-1][1] - marks[0][1]) * 1e3
        model = model_ms.get("inference", 0.0) + model_ms.get("fusion", 0.0)
        model_cpu = model_ms.get("inference_cpu", 0.0) + model_ms.get("fusion_cpu", 0.0)
        for name, value in (("latency", latency_ms), ("age", age_ms), ("overhead", total - model),
                            ("overhead_cpu", cpu_ms - model_cpu), ("processing", total)):  # fmt: skip
            self.stats.add(name, value)
        for k, v in stages.items():
            self.stats.add(f"stage.{k}", v)
        self.out_rate.tick()
        self.frames_done += 1
        return stages

    def stamp_jump(self, stamp_ns: int) -> float | None:
        """Seconds the cloud stamps went backwards (bag loop, clock reset), else None."""
        last, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        return (last - stamp_ns) / 1e9 if last is not None and stamp_ns < last else None

    def count_dropped_points(self, result: Any, hash_limit_m: Callable[[], float]) -> list[str]:
        """Count the points a SegmentResult left unlabelled, by reason; warnings for the unusual ones."""
        d = self.points_dropped
        d["invalid"] += result.num_invalid
        d["out_of_range"] += result.num_out_of_range
        d["beyond_hash_range"] += result.num_unhashable
        d["over_engine_profile"] += result.num_over_capacity
        n, out = result.num_points, []
        if result.num_invalid:
            out.append(f"{result.num_invalid} of {n} points have NaN/Inf coordinates; they get label 0")
        if result.num_unhashable:
            out.append(f"{result.num_unhashable} of {n} points lie beyond the voxel hash range "
                       f"(|coordinate| > {hash_limit_m():.0f} m); they get label 0 (set range_max)")  # fmt: skip
        if result.num_over_capacity:
            out.append(f"{result.num_over_capacity} of {n} points fell in voxels beyond the inference engine's "
                       "profile; they get label 0 (widen the engine profile or lower max_points)")  # fmt: skip
        return out

    def report(
        self, now: float, queue: Any, worker_alive: bool, camera_problems: list[str], max_latency_ms: float,
        warnings: WarningLog,
    ) -> tuple[int, list[str], dict[str, str]]:  # fmt: skip
        """(level OK/WARN/ERROR, problems, key/values) for one /diagnostics status."""
        level, problems = OK, []
        if not worker_alive:
            level, problems = ERROR, ["inference worker stopped"]
        if self.failures > self._failures_reported:
            problems.append(f"{self.failures - self._failures_reported} frames failed (see log)")
            self._failures_reported = self.failures
        if self.skipped_no_tf > self._skipped_reported:
            problems.append(f"{self.skipped_no_tf - self._skipped_reported} clouds skipped: no transform into the "
                            "base frame in time (see log)")  # fmt: skip
            self._skipped_reported = self.skipped_no_tf
        problems += camera_problems
        lat_p50 = self.stats.percentile("latency", 50)
        if lat_p50 > max_latency_ms:
            problems.append(f"latency {lat_p50:.0f} ms > max_latency_ms")
        if problems and level == OK:
            level = WARN
        kv = {
            "input_rate_hz": f"{self.cloud_rate.rate(now):.2f}",
            "output_rate_hz": f"{self.out_rate.rate(now):.2f}",
            "frames_in": str(self.cloud_rate.count),
            "frames_out": str(self.frames_done),
            "drops": str(queue.dropped),
            "frames_failed": str(self.failures),
            "frames_skipped_no_tf": str(self.skipped_no_tf),
            "queue": str(len(queue)),
            "latency_ms_p50": f"{lat_p50:.1f}",
            "latency_ms_p95": f"{self.stats.percentile('latency', 95):.1f}",
            "stamp_age_ms_p50": f"{self.stats.percentile('age', 50):.1f}",
            "overhead_ms_p50": f"{self.stats.percentile('overhead', 50):.2f}",
            "cameras_fused_last": str(self.last_fusion[0]),
            "points_fused_last": str(self.last_fusion[1]),
            "warnings": str(warnings.count),
            "last_warning": warnings.last,
        }
        kv.update({f"points_dropped.{why}": str(n) for why, n in self.points_dropped.items()})
        kv.update({f"camera_rate_hz.{cam}": f"{m.rate(now):.2f}" for cam, m in self.cam_rates.items()})
        return level, problems, kv

    def summary(self, dropped: int) -> dict[str, float]:
        """Latency/overhead percentiles and counters (used by the benchmark)."""
        out: dict[str, float] = {"frames_out": self.frames_done, "drops": dropped}
        for name in self.stats.values:
            out[f"{name}_ms_p50"] = self.stats.percentile(name, 50)
            out[f"{name}_ms_p95"] = self.stats.percentile(name, 95)
        return out
