"""What the CPU can do, read at run time: model name, instruction-set flags, native bf16.

bf16 matrix maths is only fast where the CPU has it in hardware (Intel AMX-BF16 or AVX512-BF16,
AMD Zen 4+ AVX512-BF16); elsewhere torch emulates it and a bf16 forward runs an order of magnitude
slower than fp32. ``precision="auto"`` therefore resolves through :func:`resolve_precision`,
which never picks bf16 on a CPU without those flags. ``CLIP2SCENE_CPU_FLAGS`` (space-separated
flags) replaces the flags read from ``/proc/cpuinfo``, to check a machine of another kind.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from dataclasses import dataclass

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# flags worth printing next to a timing (the rest of /proc/cpuinfo does not change our paths)
REPORTED_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8",
)  # fmt: skip
FLAGS_ENV = "CLIP2SCENE_CPU_FLAGS"
LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: int
    torch_capability: str = ""  # torch's dispatch level (DEFAULT, AVX2, AVX512, ...)
    flags_injected: bool = False

    @property
    def bf16_native(self) -> bool:
        """True when bf16 matmuls run in hardware (AMX-BF16 or AVX512-BF16)."""
        return any(f in self.flags for f in BF16_FLAGS)

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags

    def describe(self) -> str:
        shown = [f for f in REPORTED_FLAGS if f in self.flags]
        return (
            f"CPU: {self.model}, {self.cores} cores, torch capability {self.torch_capability or '?'}, "
            f"flags {' '.join(shown) or '(none of ' + ' '.join(REPORTED_FLAGS) + ')'}"
            f"{' [injected via ' + FLAGS_ENV + ']' if self.flags_injected else ''}; "
            f"bf16 {'native' if self.bf16_native else 'emulated (bf16 never chosen)'}"
        )

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "cores": self.cores,
            "torch_capability": self.torch_capability,
            "flags": [f for f in REPORTED_FLAGS if f in self.flags],
            "flags_injected": self.flags_injected,
            "bf16_native": self.bf16_native,
        }


def _read_cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:  # x86 / ARM spelling
                    flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def _torch_capability() -> str:
    try:
        import torch

        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - informational only
        return ""


def cpu_info(flags: str | None = None) -> CpuInfo:
    """This machine's CPU; ``flags`` (or ``$CLIP2SCENE_CPU_FLAGS``) replaces the real flag list."""
    if flags is None:
        flags = os.environ.get(FLAGS_ENV)
    model, real = _cached_cpuinfo()
    injected = flags is not None
    return CpuInfo(
        model=model,
        flags=frozenset(flags.split()) if injected else real,
        cores=os.cpu_count() or 1,
        torch_capability=_torch_capability(),
        flags_injected=injected,
    )


@functools.lru_cache(maxsize=1)
def _cached_cpuinfo() -> tuple[str, frozenset[str]]:
    return _read_cpuinfo()


def resolve_precision(precision: str, kind: str = "torch", device: str = "cpu", cpu: CpuInfo | None = None) -> str:
    """The concrete precision for ``precision`` ("auto", "fp32", "bf16" or "fp16") on this machine.

    ``auto``: bf16 for the torch backend on a CPU with native bf16 (its labels match fp32 on >= 99.5 %
    of real-scan points with the default student, tests/inference/test_precision.py), fp16 for
    TensorRT, fp32 everywhere else. An explicit bf16 on a CPU without native bf16 falls back to fp32
    with a warning: emulated bf16 runs about 14x slower than fp32.
    """
    on_cpu = not str(device).startswith("cuda")
    if precision == "auto":
        if kind == "tensorrt":
            return "fp16"
        if kind == "torch" and on_cpu:
            return "bf16" if (cpu or cpu_info()).bf16_native else "fp32"
        return "fp32"
    if precision == "bf16" and kind == "torch" and on_cpu:
        info = cpu or cpu_info()
        if not info.bf16_native:
            LOG.warning(
                "precision 'bf16' asked for, but %s has neither AMX-BF16 nor AVX512-BF16: bf16 would be emulated "
                "(~14x slower than fp32), running fp32 instead",
                info.model,
            )
            return "fp32"
    return precision


class CoreBudget:
    """How many of the requested threads a frame should use: the cores other processes leave idle.

    Threads that share work cost more than they give once another process holds a core: measured
    with the fused kernels under a load average of ~5 on 2 cores, 2 threads ran the node's forward
    in 125 ms p50 and 1 thread in 77 ms (a helper descheduled in the middle of its share stalls
    the layer). Other processes' demand is the 1-minute load average minus this process's own
    recent CPU use; ``threads`` rounds the idle cores (ours included) to the nearest whole core.
    """

    def __init__(self, cores: int | None = None, refresh_s: float = 1.0) -> None:
        self.cores = cores or os.cpu_count() or 1
        self.refresh_s = refresh_s
        self._t, self._cpu, self._own = time.monotonic(), time.process_time(), 0.0

    def threads(self, requested: int) -> int:
        if requested <= 1:
            return max(1, requested)
        now = time.monotonic()
        if now - self._t >= self.refresh_s:  # this process's CPU share since the last refresh
            cpu = time.process_time()
            self._own = (cpu - self._cpu) / (now - self._t)
            self._t, self._cpu = now, cpu
        others = max(0.0, os.getloadavg()[0] - self._own)
        return max(1, min(requested, int(self.cores - others + 0.5)))
