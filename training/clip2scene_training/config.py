"""Typed, validated run configurations loaded from YAML (``training/configs/*.yaml``).

Every section is a dataclass; unknown keys, wrong types and bad values raise
:class:`ConfigError` naming the key and the fix. ``--set a.b=value`` overrides any key.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from clip2scene_training.losses import SEMANTIC_LOSSES, SPATIAL_TEMPORAL_LOSSES

__all__ = [
    "ConfigError",
    "DataConfig",
    "TeacherSpec",
    "LossConfig",
    "OptimConfig",
    "LoopConfig",
    "RunConfig",
    "LoaderConfig",
    "TargetsConfig",
    "TeacherTrainConfig",
    "PretrainConfig",
    "FinetuneConfig",
    "EvaluateConfig",
    "load_config",
    "config_to_dict",
    "CONFIG_DIR",
]

def _config_dir() -> Path:
    """training/configs in a source tree or editable install; share/clip2scene_ros/... in a wheel."""
    source = Path(__file__).resolve().parent.parent / "configs"
    if source.is_dir():
        return source
    return Path(sys.prefix) / "share" / "clip2scene_ros" / "training" / "configs"


CONFIG_DIR = _config_dir()
T = TypeVar("T")


class ConfigError(ValueError):
    """A bad run configuration; the message names the key and what to write instead."""


@dataclass
class DataConfig:
    kind: str = "synthetic"  # synthetic | nuscenes | semantickitti | scannet
    options: dict = field(default_factory=dict)  # keyword arguments of the dataset adapter
    pairing: dict = field(default_factory=dict)  # PairingConfig fields

    def validate(self, where: str) -> None:
        from clip2scene_ros.datasets import DATASETS

        if self.kind not in DATASETS:
            raise ConfigError(f"{where}.kind={self.kind!r}: use one of {list(DATASETS)}")


@dataclass
class TeacherSpec:
    model: str = "default"  # create_teacher(): "default", an open_clip name, a JSON config or a directory
    weights: str | None = None
    random_init: bool = False  # only for tests: a teacher without weights gives meaningless targets
    vocabulary: str = "synthetic"  # config/vocab/<name>.yaml or a path
    details: bool = False  # OpenScene-style detailed class names
    options: dict = field(default_factory=dict)  # TeacherConfig overrides (input_size, tile, ...)


@dataclass
class LossConfig:
    semantic: str = "paper_classwise_nce"
    tau: float = 0.5  # Eq. 1 temperature (ce_text_anchor: 1.0 reproduces the released code)
    denominator: str = "negatives"  # Eq. 1 as printed; "all" = InfoNCE with positives in the denominator
    reduction: str = "sum"  # Eq. 1 summed over the pseudo-classes present (paper); "mean" divides by their number
    semantic_weight: float = 1.0
    semantic_on_sweeps: bool = True  # also apply Eq. 1 to the paired points of earlier sweeps
    spatial_temporal: str = "paper_pixel_point"
    lam: float = 1.0  # Eq. 3 attention temperature lambda
    spatial_temporal_weight: float = 1.0
    grid_size: float = 0.1  # edge of the grid cells g_n over the registered sweeps (m)
    max_per_grid: int = 8  # members kept per cell (upstream: 8)
    detach_center: bool = False
    self_training: bool = False  # S3T: after start epoch, with probability p use the student's own argmax
    self_training_start_epoch: int = 10
    self_training_prob: float = 0.5

    def validate(self, where: str) -> None:
        if self.semantic not in SEMANTIC_LOSSES:
            raise ConfigError(f"{where}.semantic={self.semantic!r}: use one of {list(SEMANTIC_LOSSES)}")
        if self.spatial_temporal not in SPATIAL_TEMPORAL_LOSSES:
            raise ConfigError(
                f"{where}.spatial_temporal={self.spatial_temporal!r}: use one of {list(SPATIAL_TEMPORAL_LOSSES)}"
            )
        if self.denominator not in ("negatives", "all"):
            raise ConfigError(f"{where}.denominator must be 'negatives' or 'all'")
        if self.reduction not in ("sum", "mean"):
            raise ConfigError(f"{where}.reduction must be 'sum' (paper) or 'mean'")
        if self.tau <= 0 or self.lam <= 0 or self.grid_size <= 0 or self.max_per_grid < 1:
            raise ConfigError(f"{where}: tau, lam, grid_size must be > 0 and max_per_grid >= 1")
        if not 0 <= self.self_training_prob <= 1:
            raise ConfigError(f"{where}.self_training_prob must be within [0, 1]")


@dataclass
class OptimConfig:
    optimizer: str = "sgd"  # sgd (paper: momentum 0.9, dampening 0.1, wd 1e-4) | adamw
    lr: float = 0.1
    head_lr: float | None = None  # fine-tuning: a separate lr for the new classifier (upstream 2.0)
    momentum: float = 0.9
    dampening: float = 0.1
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    grad_clip: float | None = None
    betas: list = field(default_factory=lambda: [0.9, 0.999])  # AdamW

    def validate(self, where: str) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"{where}.optimizer={self.optimizer!r}: use sgd or adamw")
        if self.schedule not in ("cosine", "constant"):
            raise ConfigError(f"{where}.schedule={self.schedule!r}: use cosine or constant")
        if self.lr <= 0:
            raise ConfigError(f"{where}.lr must be > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"{where}.min_lr_ratio must be within [0, 1]")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{where}.betas: give two numbers in [0, 1), e.g. [0.9, 0.98]")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"{where}.grad_clip must be > 0 or null")


@dataclass
class LoopConfig:
    """What the shared training loop reads: steps, accumulation, precision, checkpoints, logging."""

    out_dir: str = "runs/pretrain"
    batch_size: int = 1  # samples per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step; global batch = batch*accum*world
    epochs: int = 1
    max_steps: int | None = None  # stop early (and schedule over this many steps)
    seed: int = 0
    amp: str = "auto"  # auto (CUDA: fp16 + GradScaler; CPU: bf16 where native, else fp32) | off | bf16 | fp16
    device: str = "cpu"
    num_threads: int | None = None
    checkpoint_every: int = 50  # optimizer steps
    keep_checkpoints: int = 2
    log_every: int = 1
    progress: bool = True

    def validate_run(self, where: str) -> None:
        if self.batch_size < 1 or self.grad_accum < 1 or self.epochs < 1:
            raise ConfigError(f"{where}: batch_size, grad_accum and epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"{where}.max_steps must be >= 1 or null")
        if self.amp not in ("auto", "off", "bf16", "fp16"):
            raise ConfigError(f"{where}.amp={self.amp!r}: use auto, off, bf16 or fp16")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1:
            raise ConfigError(f"{where}: checkpoint_every, keep_checkpoints and log_every must be >= 1")


@dataclass
class LoaderConfig:
    """torch DataLoader settings: samples are read, paired and augmented in worker processes."""

    workers: int = 2  # 0: read in the training process
    prefetch: int = 2  # micro-batches each worker prepares ahead
    persistent_workers: bool = True
    pin_memory: str = "auto"  # auto (on with CUDA) | on | off

    def validate(self, where: str) -> None:
        if self.workers < 0 or self.prefetch < 1:
            raise ConfigError(f"{where}: workers must be >= 0 and prefetch >= 1")
        if self.pin_memory not in ("auto", "on", "off"):
            raise ConfigError(f"{where}.pin_memory={self.pin_memory!r}: use auto, on or off")


@dataclass
class TargetsConfig:
    """Where the teacher targets live (``clip2scene prepare targets`` fills it ahead of training)."""

    cache_dir: str | None = "runs/target_cache"  # null: run the teacher for every sample, every epoch
    write_through: bool = True  # samples missing from the cache are computed in the workers and added
    workers: int = 2  # processes of `clip2scene prepare targets`

    def validate(self, where: str) -> None:
        if self.workers < 0:
            raise ConfigError(f"{where}.workers must be >= 0")


@dataclass
class RunConfig(LoopConfig):
    """What the 3D stages share besides the loop: the student model and its input."""

    model: str = "minkunet18_tiny"  # clip2scene_ros.models config name or JSON path
    model_overrides: dict = field(default_factory=dict)
    voxel_size: float | None = None  # None: the model config's
    augment: bool = True  # random z-rotation and x/y flips (independently per sweep)
    augmentation: dict = field(default_factory=dict)  # augment.AugmentConfig keys (when augment is on)
    loader: LoaderConfig = field(default_factory=LoaderConfig)


@dataclass
class PretrainConfig(RunConfig):
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    init: str | None = None  # warm start from this student checkpoint (same architecture); None = random

    def validate(self) -> PretrainConfig:
        self.validate_run("pretrain")
        self.data.validate("data")
        self.loader.validate("loader")
        self.targets.validate("targets")
        self.loss.validate("loss")
        self.optim.validate("optim")
        return self


@dataclass
class FinetuneConfig(RunConfig):
    out_dir: str = "runs/finetune"
    data: DataConfig = field(default_factory=DataConfig)
    init: str | None = None  # a pre-trained student checkpoint directory; None = from scratch
    label_fraction: float = 0.01  # 1/5/10/25/100 %: keep every round(1/f)-th sample (SLidR convention)
    fraction_mode: str = "skip"  # skip | random
    linear_probe: bool = False  # freeze the backbone, train only the classifier
    classifier_init: str = "random"  # random | text (text embeddings of the classes, needs a teacher)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)  # only for classifier_init: text
    lovasz_weight: float = 1.0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=0.02, head_lr=2.0))

    def validate(self) -> FinetuneConfig:
        self.validate_run("finetune")
        self.data.validate("data")
        self.loader.validate("loader")
        self.optim.validate("optim")
        if not 0 < self.label_fraction <= 1:
            raise ConfigError(f"label_fraction={self.label_fraction}: use a fraction in (0, 1], e.g. 0.01 for 1%")
        if self.fraction_mode not in ("skip", "random"):
            raise ConfigError("fraction_mode must be skip or random")
        if self.classifier_init not in ("random", "text"):
            raise ConfigError("classifier_init must be random or text")
        return self


@dataclass
class TeacherTrainConfig(LoopConfig):
    """``clip2scene train teacher``: the tiny open_clip teacher on synthetic camera renders."""

    out_dir: str = "runs/teacher"
    model_config: str = "c2s-tiny-vit-p8"  # open_clip JSON config (clip2scene_ros/teacher/model_configs or a path)
    init: str | None = None  # start from this teacher directory (same architecture)
    transfer_from: str | None = None  # initialise a different model_config from this teacher directory
    data_dir: str | None = None  # where rendered splits are cached (npz)
    train_seeds: str | None = None  # scene seeds 'a:b' or 'a,b,c' (None: the teacher's train seeds)
    frames: list | None = None  # frame indices per scene (None: 0, 40, 80, 120)
    extra_data: list = field(default_factory=list)  # more pre-rendered .npz splits (images, labels)
    val_seeds: str | None = None  # held-out scene seeds of the final evaluation
    evaluate: bool = True  # evaluate on the held-out seeds at the end
    vocabulary: str = "synthetic"  # classes that caption the label images
    templates: str = "default"  # prompt template set (config/vocab/templates.yaml)
    max_steps: int | None = 2000
    max_minutes: float | None = 16.0  # the schedule is fitted to this budget after the first steps
    batch_size: int = 16
    class_balance: float = 0.5  # class weight = (pixel frequency)^-x; 0 = plain cross-entropy
    text_loss_weight: float = 1.0  # caption-vs-caption contrast that separates the classes' texts
    text_warmup_steps: int = 150  # text-only steps first: distinct anchors for the patch loss
    num_threads: int | None = 1
    checkpoint_every: int = 200
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            optimizer="adamw", lr=2e-3, weight_decay=0.05, warmup_steps=25, min_lr_ratio=0.03,
            grad_clip=1.0, betas=[0.9, 0.98],
        )
    )  # fmt: skip

    def validate(self) -> TeacherTrainConfig:
        self.validate_run("teacher")
        self.optim.validate("optim")
        if self.max_steps is None:
            raise ConfigError("teacher.max_steps: give the maximum number of optimizer steps")
        if self.init and self.transfer_from:
            raise ConfigError("init (same architecture) and transfer_from (another one) exclude each other")
        if self.text_warmup_steps < 0 or self.class_balance < 0:
            raise ConfigError("teacher: text_warmup_steps and class_balance must be >= 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError("teacher.max_minutes must be > 0 or null (no time budget)")
        if self.frames is not None and not all(isinstance(f, int) and f >= 0 for f in self.frames):
            raise ConfigError(f"teacher.frames={self.frames}: give frame indices, e.g. [0, 40, 80, 120]")
        return self


@dataclass
class EvaluateConfig:
    checkpoint: str = ""  # student checkpoint directory (pretrain or finetune output)
    data: DataConfig = field(default_factory=DataConfig)
    vocabulary: str | None = None  # None: the checkpoint's training vocabulary
    teacher: TeacherSpec | None = None  # text tower for a new vocabulary; also "teacher on points" metric
    class_map: str | None = None  # YAML mapping vocabulary classes -> dataset classes (cross-dataset)
    out_dir: str = "runs/evaluate"
    max_samples: int | None = None
    voxel_size: float | None = None
    device: str = "cpu"
    num_threads: int | None = None
    progress: bool = True
    seed: int = 0

    def validate(self) -> EvaluateConfig:
        if not self.checkpoint:
            raise ConfigError("checkpoint: give the student checkpoint directory (--checkpoint DIR)")
        self.data.validate("data")
        return self


# --- generic dataclass <- dict ---------------------------------------------------------------


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, where)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is str and isinstance(value, bool):
        raise ConfigError(f"{where}: expected a string, got {value!r}; YAML reads off/on/no/yes as booleans, quote it")
    if (tp is dict or origin is dict) and isinstance(value, dict):
        return dict(value)
    if (tp is list or origin is list) and isinstance(value, (list, tuple)):
        return list(value)
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{where}: expected {name}, got {value!r} ({type(value).__name__})")


def _from_dict(cls: type[T], data: Any, where: str) -> T:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _apply_override(data: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: write key.subkey=value")
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw)
    node = data
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p} is not a section")
    node[parts[-1]] = value


def resolve_config_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / f"{name_or_path}.yaml", CONFIG_DIR / str(name_or_path)):
        if cand.is_file():
            return cand
    shipped = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"config {name_or_path!r} not found; give a YAML path or one of {shipped}")


def load_config(cls: type[T], source: str | Path | dict | None = None, overrides: list[str] | None = None) -> T:
    """Build ``cls`` from a YAML file (path or shipped name), a dict, or defaults, plus overrides."""
    if source is None:
        data: dict = {}
        where = ""
    elif isinstance(source, dict):
        data, where = dict(source), ""
    else:
        path = resolve_config_path(source)
        data = yaml.safe_load(path.read_text()) or {}
        where = f"{path.name}:"
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    for a in overrides or []:
        _apply_override(data, a)
    try:
        cfg = _from_dict(cls, data, "")
        return cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{where} {e}".strip()) from None


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
