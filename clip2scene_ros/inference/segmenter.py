"""ROS-free online segmentation: points (+ optional camera images) -> labels, scores, features.

The 3D model (``inference.backends``) maps points to per-point features in the text space of the
CLIP teacher; a class is the argmax of the cosine similarity against the vocabulary's text
embeddings (the paper's annotation-free inference). Free-text queries reuse the features of the
last frame, so a query costs one text encoding plus a matrix-vector product.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clip2scene_ros.geometry import CameraModel, PairingConfig, as_transform
from clip2scene_ros.models import ModelConfig
from clip2scene_ros.models.inputs import InputSpec
from clip2scene_ros.resources import VectorLRU
from clip2scene_ros.teacher.vocabulary import Vocabulary, VocabularyError
from clip2scene_ros.teacher.vocabulary import load_vocabulary as load_vocabulary_file

from .backends import CLASS_COSINE, CLASS_INDEX, INV_NORM, VocabularyHead, classify_numpy
from .registry import BACKENDS, PRECISIONS
from .relevance import (
    DEFAULT_TEMPERATURE,
    GENERIC_PHRASES,
    Canonicals,
    PhraseRateLimiter,
    relevance_from_cosines,
)
from .text_space import check_text_space

log = logging.getLogger(__name__)

TextEncoder = Callable[[list[str]], np.ndarray]  # texts -> [T, D] float32, L2-normalised
DenseFeatures = Callable[[np.ndarray], np.ndarray]  # uint8 [1, H, W, 3] -> [1, D, h, w]
Backend = Callable[[np.ndarray], dict]  # [P, 3+F] float32 -> {head: [P, D]}


# ---- vocabulary ----------------------------------------------------------------------------


def load_vocabulary(spec: str | Sequence[str]) -> Vocabulary:
    """A vocabulary from a name (``config/vocab/<name>.yaml``), a YAML path, or a list of classes.

    In a list each entry is one class; ``"car|sedan|automobile"`` gives synonyms. Files are read by
    the teacher's vocabulary loader, so the node, training and evaluation share one format.
    """
    if isinstance(spec, str):
        return load_vocabulary_file(spec)
    items = [s.strip() for s in spec if s and s.strip()]
    if not items:
        raise VocabularyError("the vocabulary is empty; give a vocabulary name/path or at least one class")
    return Vocabulary.from_names([[n.strip() for n in item.split("|") if n.strip()] for item in items])


def palette(n: int) -> np.ndarray:
    """Distinct uint8 RGB colours for labels 0..n (0 = unlabelled, grey)."""
    base = np.array(
        [
            [128, 64, 128], [244, 35, 232], [152, 251, 152], [70, 70, 70], [107, 142, 35],
            [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 0, 230], [119, 11, 32],
            [220, 20, 60], [153, 153, 153], [220, 220, 0], [255, 120, 0], [190, 153, 153],
            [250, 170, 30], [0, 80, 100], [102, 102, 156], [70, 130, 180], [255, 0, 255],
        ],
        dtype=np.uint8,
    )  # fmt: skip
    out = np.zeros((n + 1, 3), dtype=np.uint8)
    out[0] = (90, 90, 90)
    for i in range(1, n + 1):
        if i - 1 < len(base):
            out[i] = base[i - 1]
        else:  # golden-ratio hue walk for large vocabularies
            h = ((i * 0.618034) % 1.0) * 6
            x = int(255 * (1 - abs(h % 2 - 1)))
            out[i] = [(255, x, 0), (x, 255, 0), (0, 255, x), (0, x, 255), (x, 0, 255), (255, 0, x)][int(h) % 6]
    return out


# ---- results -------------------------------------------------------------------------------


@dataclass
class CameraInput:
    """One synchronised camera image with the calibration that maps LiDAR points into it."""

    name: str
    image: np.ndarray  # uint8 [H, W, 3] RGB
    K: np.ndarray  # 3x3 intrinsics
    cam_from_lidar: np.ndarray  # 4x4: points in the LiDAR frame -> camera optical frame


@dataclass
class SegmentResult:
    labels: np.ndarray  # uint16 [P]; 0 for invalid / out-of-range / not processed points
    scores: np.ndarray  # float32 [P]; cosine similarity of the point to its class, 0 where label is 0
    features: np.ndarray  # float32 [R, D] feature rows (not normalised): per voxel, or per point
    indices: np.ndarray  # int64 [K] indices (into the input) of the processed points
    num_points: int
    num_invalid: int = 0  # NaN/Inf coordinates
    num_out_of_range: int = 0  # outside [range_min, range_max]
    num_skipped: int = 0  # valid points left out because the cloud exceeded max_points
    num_fused: int = 0  # points that received camera features
    timings_ms: dict[str, float] = field(default_factory=dict)
    inv_norm: np.ndarray | None = None  # float32 [R] 1 / |feature row| (None: rows are unit length)
    rows: np.ndarray | None = None  # int64 [K] feature row of each processed point (None: row i = point i)
    num_unhashable: int = 0  # beyond the voxel hash range (|coordinate| > limit): label 0
    num_over_capacity: int = 0  # left out to fit the engine's voxel profile: label 0

    def similarity(self, text_embedding: np.ndarray) -> np.ndarray:
        """float32 [P] cosine similarity per point; -1 for points that were not processed."""
        return self.to_points(self.row_cosines(text_embedding[None])[:, 0], -1.0)

    def row_cosines(self, text_embeddings: np.ndarray) -> np.ndarray:
        """float32 [R, T] cosine of every feature row to unit text embeddings [T, D]."""
        cos = self.features @ np.asarray(text_embeddings, np.float32).T
        return cos * self.inv_norm[:, None] if self.inv_norm is not None else cos

    def to_points(self, row_values: np.ndarray, fill: float) -> np.ndarray:
        """float32 [P] per-point values from per-row ones; ``fill`` where a point was not processed."""
        out = np.full(self.num_points, fill, dtype=np.float32)
        if self.indices.size:
            out[self.indices] = row_values if self.rows is None else _gather_rows(row_values, self.rows, fill)
        return out

    def unit_features(self) -> np.ndarray:
        """[K, D] L2-normalised features of the processed points."""
        f = self.features if self.inv_norm is None else self.features * self.inv_norm[:, None]
        return f if self.rows is None else _gather_rows(f, self.rows, 0.0)


@dataclass(frozen=True)
class _VocabularyState:
    """Everything derived from one vocabulary, swapped as a unit."""

    vocabulary: Vocabulary
    text_embeddings: np.ndarray  # float32 [C, D]
    label_ids: np.ndarray  # uint16 [C]
    head: VocabularyHead
    canonicals: Canonicals


@dataclass
class SegmenterConfig:
    checkpoint: str
    vocabulary: str | list[str] = "synthetic"
    teacher: str | None = None  # None = the shipped default teacher
    backend: str = "torch"
    device: str = "cpu"
    precision: str = "auto"
    head: str = "global"
    max_points: int = 300_000
    range_min: float = 0.0
    range_max: float = 200.0  # beyond any automotive LiDAR's returns; 0 = unlimited (up to the voxel hash range)
    fusion: bool = False
    fusion_weight: float = 0.5
    voxel_size: float = 0.0  # 0 = the checkpoint's own
    point_features: list[str] = field(default_factory=list)  # cloud fields after x, y, z; [] = the checkpoint's
    intensity_scale: float = 0.0  # factor on the cloud's intensity field; 0 = the checkpoint's
    lidar_pose: list[float] = field(default_factory=list)  # base_from_sensor x y z roll pitch yaw; [] = none
    fusion_min_depth: float = 1.0  # camera fusion pairs points as training does (geometry.projection)
    fusion_occlusion: str = "auto"  # auto (= zbuffer online) | zbuffer | none
    threads: int = 0  # intra-op threads of the onnxruntime backend; 0 = its default
    text_cache_dir: str = ""  # "" = $CLIP2SCENE_CACHE_DIR/text or ~/.cache/clip2scene/text
    text_cache_entries: int = 1024  # phrases kept in memory (LRU)
    text_cache_disk_mb: float = 16.0  # quota of the on-disk phrase cache; 0 = memory only
    new_phrases_per_s: float = 5.0  # new (uncached) query phrases accepted per second ...
    new_phrases_burst: int = 20  # ... and in a burst
    text_encode_share: float = 0.25  # share of wall time new-phrase encoding may take

    def validate(self) -> None:
        errors = []
        if self.text_cache_entries < 1:
            errors.append(f"text_cache_entries must be >= 1, got {self.text_cache_entries}")
        if self.text_cache_disk_mb < 0:
            errors.append(f"text_cache_disk_mb must be >= 0 (0 = memory only), got {self.text_cache_disk_mb}")
        if not 0 < self.text_encode_share <= 1:
            errors.append(f"text_encode_share must be in (0, 1], got {self.text_encode_share}")
        if not self.new_phrases_per_s > 0 or self.new_phrases_burst < 1:
            errors.append(
                f"new_phrases_per_s must be > 0 and new_phrases_burst >= 1, got "
                f"{self.new_phrases_per_s} and {self.new_phrases_burst}"
            )
        if not self.checkpoint:
            errors.append("checkpoint is empty: give a checkpoint directory (model.safetensors + model.json)")
        elif not Path(self.checkpoint).expanduser().exists():
            errors.append(f"checkpoint '{self.checkpoint}' does not exist")
        if self.backend not in BACKENDS:
            errors.append(f"backend '{self.backend}' is not one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            errors.append(f"precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.max_points < 1:
            errors.append(f"max_points must be >= 1, got {self.max_points}")
        if self.range_min < 0 or self.range_max < 0 or (self.range_max and self.range_max <= self.range_min):
            errors.append(
                f"range [{self.range_min}, {self.range_max}] is invalid: need 0 <= range_min < range_max "
                "(range_max 0 = unlimited)"
            )
        if self.voxel_size < 0:
            errors.append(f"voxel_size must be >= 0 (0 = checkpoint's), got {self.voxel_size}")
        if not self.intensity_scale >= 0:
            errors.append(f"intensity_scale must be >= 0 (0 = checkpoint's), got {self.intensity_scale}")
        if self.lidar_pose and (len(self.lidar_pose) != 6 or not np.isfinite(self.lidar_pose).all()):
            errors.append(f"lidar_pose needs 6 finite numbers (x y z roll pitch yaw) or none, got {self.lidar_pose}")
        if self.fusion_occlusion not in ("auto", "zbuffer", "none"):
            errors.append(f"fusion_occlusion '{self.fusion_occlusion}' is not one of auto, zbuffer, none")
        if not self.fusion_min_depth >= 0:
            errors.append(f"fusion_min_depth must be >= 0, got {self.fusion_min_depth}")
        if not 0 <= self.fusion_weight <= 10:
            errors.append(f"fusion_weight must be in [0, 10], got {self.fusion_weight}")
        if errors:
            raise ValueError("invalid segmenter configuration:\n  - " + "\n  - ".join(errors))


# ---- the segmenter -------------------------------------------------------------------------


class Segmenter:
    """Points (+ cameras) -> labels/scores/features; text -> per-point similarity. Thread-safe."""

    def __init__(
        self,
        backend: Backend,
        encode_text: TextEncoder,
        vocabulary: Vocabulary | str | Sequence[str] = "synthetic",
        *,
        head: str = "global",
        max_points: int = 300_000,
        range_min: float = 0.0,
        range_max: float = 0.0,
        feature_fields: tuple[str, ...] | None = None,
        input_spec: InputSpec | None = None,
        base_from_sensor: np.ndarray | Sequence[float] | None = None,
        dense_features: DenseFeatures | None = None,
        fusion_weight: float = 0.5,
        pairing: PairingConfig | None = None,
        text_cache_size: int = 256,
        seed: int = 0,
        query_temperature: float = DEFAULT_TEMPERATURE,
        generic_phrases: Sequence[str] = GENERIC_PHRASES,
        phrase_limiter: PhraseRateLimiter | None = None,
    ) -> None:
        self.backend = backend
        self._encode_text = encode_text
        self.head = head
        self.max_points = int(max_points)
        self.range_min, self.range_max = float(range_min), float(range_max)
        # how clouds become model inputs (fields, intensity scale, frame): from the checkpoint
        self.input = input_spec if input_spec is not None else _backend_input_spec(backend)
        if feature_fields is not None:
            self.feature_fields = feature_fields
        # the sensor's mounting; None: clouds arrive in the model's frame already
        self.base_from_sensor = None if base_from_sensor is None else as_transform(base_from_sensor)
        self.dense_features = dense_features
        self.fusion_weight = float(fusion_weight)
        self.pairing = pairing or PairingConfig()
        self._text_cache = VectorLRU(text_cache_size)  # preallocated rows: no heap fragmentation per phrase
        self._text_lock = threading.Lock()  # text encoders (torch modules) are not re-entrant
        self._vocab_lock = threading.Lock()  # one vocabulary change at a time, last call wins
        self._rng = np.random.default_rng(seed)
        self.query_temperature = float(query_temperature)
        self.phrase_limiter = phrase_limiter  # None: new query phrases are not rate-limited
        self.generic_phrases = tuple(generic_phrases)
        self._state: _VocabularyState | None = None
        self.vocabulary_encodings = 0  # how often a vocabulary was encoded (for tests/diagnostics)
        self.set_vocabulary(vocabulary)

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: SegmenterConfig) -> Segmenter:
        """Build the model backend and the teacher's text encoder, then check they fit together."""
        cfg.validate()
        from clip2scene_ros.teacher import create_teacher
        from clip2scene_ros.teacher.text_cache import TextEmbeddingCache

        backend = _create_backend(cfg)
        spec = _input_spec(cfg, backend)
        text_cache = TextEmbeddingCache(
            cfg.text_cache_dir or None,
            max_entries=cfg.text_cache_entries,
            max_disk_bytes=int(cfg.text_cache_disk_mb * 1024 * 1024),
        )
        teacher = _create_teacher(create_teacher, cfg.teacher, cfg.device, text_cache)
        check_text_space(
            Path(cfg.checkpoint).expanduser(),
            cfg.teacher or "default",
            teacher.model_id,
            lambda vocab: _to_numpy(teacher.encode_vocabulary(vocab)),
        )

        def encode_text(texts: list[str]) -> np.ndarray:
            emb = teacher.encode_text(list(texts))
            return _to_numpy(emb)

        dense = None
        if cfg.fusion:
            # Online fusion runs the teacher once per image: the offline test-time averaging
            # (shifted tile grid, mirrored image) would cost 2.7-5.5x the latency per camera.
            single_pass = teacher.with_config(tile_overlap=False, flip_average=False)

            def dense(images: np.ndarray) -> np.ndarray:
                return _to_numpy(single_pass.dense_features(images))

        seg = cls(
            backend,
            encode_text,
            cfg.vocabulary,
            head=cfg.head,
            max_points=cfg.max_points,
            range_min=cfg.range_min,
            range_max=cfg.range_max,
            input_spec=spec,
            base_from_sensor=cfg.lidar_pose or None,
            dense_features=dense,
            fusion_weight=cfg.fusion_weight,
            pairing=PairingConfig(min_depth=cfg.fusion_min_depth, occlusion=cfg.fusion_occlusion),
            text_cache_size=cfg.text_cache_entries,
            phrase_limiter=PhraseRateLimiter(cfg.new_phrases_per_s, cfg.new_phrases_burst, cfg.text_encode_share),
        )
        seg.warmup()
        return seg

    def warmup(self, num_points: int = 2048) -> None:
        """One forward on random points: loads lazy kernels and checks head name and dimension."""
        rng = np.random.default_rng(0)
        pts = np.zeros((num_points, 3 + len(self.feature_fields)), dtype=np.float32)
        pts[:, :3] = rng.uniform(-20, 20, (num_points, 3)) * [1, 1, 0.1]
        pts[:, 3:] = rng.uniform(0, 1, (num_points, len(self.feature_fields)))
        self.segment(pts)

    # -- input contract ------------------------------------------------------------------------

    @property
    def feature_fields(self) -> tuple[str, ...]:
        """Cloud fields the model reads after x, y, z (columns 3.. of ``segment``'s points)."""
        return self.input.fields

    @feature_fields.setter
    def feature_fields(self, fields: Sequence[str]) -> None:
        self.input = self.input.replace(fields=tuple(fields))

    def points_from_cloud(self, cloud: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """A structured cloud -> (float32 [P, 3 + F] for :meth:`segment`, missing field names)."""
        return self.input.points_from_cloud(cloud)

    # -- vocabulary ----------------------------------------------------------------------------

    @property
    def vocabulary(self) -> Vocabulary:
        return self._state.vocabulary

    @property
    def text_embeddings(self) -> np.ndarray:
        """float32 [C, D] unit class embeddings (synonyms averaged)."""
        return self._state.text_embeddings

    @property
    def label_ids(self) -> np.ndarray:
        return self._state.label_ids

    @property
    def canonicals(self) -> Canonicals:
        return self._state.canonicals

    @property
    def _classifier(self) -> tuple[VocabularyHead, np.ndarray]:
        """(vocabulary head, label ids) of the current vocabulary, read together."""
        state = self._state
        return state.head, state.label_ids

    def set_vocabulary(self, vocabulary: Vocabulary | str | Sequence[str]) -> bool:
        """Switch vocabulary; encodes its text once. Returns False if nothing changed.

        Safe to call from any thread while frames are segmented: the new classifier, label ids and
        query canonicals replace the old ones as one object, a frame in flight keeps the state it
        started with, and concurrent calls apply in call order (the last one wins).
        """
        vocab = vocabulary if isinstance(vocabulary, Vocabulary) else load_vocabulary(vocabulary)
        with self._vocab_lock:
            cur = self._state
            if cur is not None and (vocab.ids, vocab.prompt_names()) == (
                cur.vocabulary.ids,
                cur.vocabulary.prompt_names(),
            ):
                return False
            groups = vocab.prompt_names()  # synonyms per class; their embeddings are averaged
            emb = self.encode_text([n for g in groups for n in g] + list(self.generic_phrases))
            rows, start = [], 0
            for g in groups:
                v = emb[start : start + len(g)].mean(axis=0)
                rows.append(v / max(np.linalg.norm(v), 1e-12))
                start += len(g)
            text = np.stack(rows).astype(np.float32)
            label_ids = np.array(vocab.ids, dtype=np.uint16)
            canon = Canonicals.build(text, vocab.class_names, emb[start:], self.generic_phrases)
            head = VocabularyHead(self.head, np.ascontiguousarray(text.T))  # [D, C]
            self._state = _VocabularyState(vocab, text, label_ids, head, canon)
            self.vocabulary_encodings += 1
            return True

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """[T, D] float32 L2-normalised text embeddings (cached per string)."""
        with self._text_lock:
            found = {t: self._text_cache.get(t) for t in dict.fromkeys(texts)}
            missing = [t for t, e in found.items() if e is None]
            if missing:
                emb = np.asarray(self._encode_text(missing), dtype=np.float32)
                if emb.ndim != 2 or emb.shape[0] != len(missing):
                    raise ValueError(f"text encoder returned shape {emb.shape} for {len(missing)} texts")
                emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
                for t, e in zip(missing, emb, strict=True):
                    found[t] = e  # from the computed values: a batch larger than the cache evicts its own
                    self._text_cache.put(t, e)
            return np.stack([found[t] for t in texts])

    # -- segmentation --------------------------------------------------------------------------

    def segment(
        self,
        points: np.ndarray,
        cameras: Sequence[CameraInput] | None = None,
        base_from_sensor: np.ndarray | None = None,
    ) -> SegmentResult:
        """points: float32 [P, 3 + F] in the sensor's frame (F = len(feature_fields)).

        ``base_from_sensor`` (4x4; default: the configured ``lidar_pose``, else none) brings the
        points into the model's frame; without one they are taken to be in it already. Ranges are
        distances from the sensor; cameras project the points as given (``cam_from_lidar``).
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        points = np.asarray(points, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] < 3:
            raise ValueError(f"points must be [P, 3+F], got shape {points.shape}")
        P = points.shape[0]
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        # per-column tests: numpy is slow at reductions over rows of 3
        valid = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
        num_invalid = int(P - np.count_nonzero(valid))
        num_oor = 0
        if self.range_min > 0 or self.range_max > 0:
            with np.errstate(invalid="ignore", over="ignore"):
                r2 = x * x + y * y + z * z
                in_range = r2 >= self.range_min**2
                if self.range_max > 0:
                    in_range &= r2 <= self.range_max**2
            num_oor = int((valid & ~in_range).sum())
            valid &= in_range
        # Voxel keys hold a bounded coordinate range: one point beyond it would fail the whole frame.
        num_unhashable = 0
        limit = self.hash_limit_m()
        if limit is not None and (self.range_max <= 0 or self.range_max > limit):
            with np.errstate(invalid="ignore"):
                hashable = (np.abs(x) <= limit) & (np.abs(y) <= limit) & (np.abs(z) <= limit)
            num_unhashable = int((valid & ~hashable).sum())
            valid &= hashable
        idx = np.flatnonzero(valid)
        skipped = 0
        if idx.size > self.max_points:
            skipped = idx.size - self.max_points
            idx = np.sort(self._rng.choice(idx, self.max_points, replace=False))
        labels = np.zeros(P, dtype=np.uint16)
        scores = np.zeros(P, dtype=np.float32)
        D = self.text_embeddings.shape[1]
        timings["preprocess"] = (time.perf_counter() - t0) * 1e3
        if idx.size == 0:
            return SegmentResult(
                labels,
                scores,
                np.zeros((0, D), np.float32),
                idx,
                P,
                num_invalid,
                num_oor,
                skipped,
                0,
                timings,
                num_unhashable=num_unhashable,
            )
        state = self._state  # one consistent vocabulary for the whole frame
        vocabulary_head, label_ids = state.head, state.label_ids
        sub = points if idx.size == P else points[idx]  # the common all-valid case needs no copy
        if not np.isfinite(sub[:, 3:]).all():
            sub = sub.copy()
            sub[:, 3:] = np.nan_to_num(sub[:, 3:], nan=0.0, posinf=0.0, neginf=0.0)
        xyz_sensor = sub[:, :3]
        mounting = self.base_from_sensor if base_from_sensor is None else base_from_sensor
        sub = self.input.to_model_frame(sub, mounting)
        fuse = bool(cameras) and self.dense_features is not None and self.fusion_weight > 0
        # Without fusion every point of a voxel has that voxel's features: classify voxels, not
        # points (fewer rows), when the backend exposes them. Fusion mixes in per-point pixels.
        voxel_outputs = None if fuse else getattr(self.backend, "voxel_outputs", None)
        t1, c1 = time.perf_counter(), time.thread_time()
        rows = None
        if voxel_outputs is not None:
            out, rows = voxel_outputs(sub, vocabulary_head)  # the vocabulary head runs with the forward
            num_rows = len(next(iter(out.values()))) if out else 0
        else:
            out, num_rows = self.backend(sub), idx.size
        timings["inference"] = (time.perf_counter() - t1) * 1e3
        t2, c2 = time.perf_counter(), time.thread_time()
        # CPU time of this thread: overhead figures that do not depend on how loaded the machine is
        timings["inference_cpu"] = (c2 - c1) * 1e3
        feats = self._head_features(out, num_rows)
        num_fused = 0
        if fuse:
            feats, num_fused = self._fuse(xyz_sensor, feats, cameras)
            timings["fusion"] = (time.perf_counter() - t2) * 1e3
            timings["fusion_cpu"] = (time.thread_time() - c2) * 1e3
        t3, c3 = time.perf_counter(), time.thread_time()
        if CLASS_INDEX not in out:  # fused features or a per-point backend: classify here
            out.update(classify_numpy(feats, vocabulary_head.text_t))
        best_labels = label_ids[out[CLASS_INDEX]]
        best_cos, inv_norm = out[CLASS_COSINE], out[INV_NORM]
        if rows is not None:  # voxel rows -> points (a dropped point keeps label 0)
            best_labels = _gather_rows(best_labels, rows, 0)
            best_cos = _gather_rows(best_cos, rows, 0.0)
        if idx.size == P:  # no scatter needed
            labels, scores = best_labels, best_cos
        else:
            labels[idx] = best_labels
            scores[idx] = best_cos
        # labels: per-voxel classes/scores to points (plus the classification itself when fused)
        timings["labels"] = (time.perf_counter() - t3) * 1e3
        timings["labels_cpu"] = (time.thread_time() - c3) * 1e3
        return SegmentResult(
            labels,
            scores,
            feats,
            idx,
            P,
            num_invalid,
            num_oor,
            skipped,
            num_fused,
            timings,
            inv_norm,
            rows,
            num_unhashable,
            int(np.count_nonzero(rows < 0)) if rows is not None else 0,
        )

    def hash_limit_m(self) -> float | None:
        """Largest |coordinate| in metres the voxel keys can hold, with a margin for the padding and
        neighbour offsets of every level; None when the backend has no voxel size."""
        config = getattr(self.backend, "config", None)
        voxel = getattr(config, "voxel_size", None)
        if not voxel:
            return None
        from clip2scene_ros.sparse.voxelize import COORD_LIMIT

        return (COORD_LIMIT - 1024) * float(voxel)

    def _head_features(self, out: dict, n: int) -> np.ndarray:
        if self.head not in out:
            raise ValueError(f"model has no head '{self.head}'; its heads are: {', '.join(map(str, out))}")
        f = _to_numpy(out[self.head]).astype(np.float32, copy=False)
        D = self.text_embeddings.shape[1]
        if f.shape != (n, D):
            raise ValueError(
                f"head '{self.head}' gives features of shape {tuple(f.shape)} but the text encoder gives "
                f"{D}-d embeddings for {n} points: the checkpoint and the teacher do not belong together"
            )
        return f

    def _fuse(self, xyz: np.ndarray, feats: np.ndarray, cameras: Sequence[CameraInput]) -> tuple[np.ndarray, int]:
        """Ensemble each point's 3D feature with the teacher's pixel feature where a camera sees it.

        Points pair with pixels as in training (:class:`~clip2scene_ros.geometry.PairingConfig`:
        minimum depth, occlusion by the cloud's own z-buffer, one camera per point), so the pixel a
        point borrows is one the student learnt it from.
        """
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        acc = np.zeros_like(feats)
        hits = np.zeros(len(feats), dtype=np.int32)
        models = [CameraModel(c.name, c.K, c.cam_from_lidar, c.image.shape[1], c.image.shape[0]) for c in cameras]
        pairs = self.pairing.pair(xyz, models)
        for ci, cam in enumerate(cameras):
            sel = pairs.camera_index == ci
            if not sel.any():
                continue
            seen, uv = pairs.point_index[sel], pairs.uv[sel]
            dense = np.asarray(self.dense_features(cam.image[None]))[0]  # [D, h, w]
            if dense.shape[0] != feats.shape[1]:
                raise ValueError(f"teacher dense features are {dense.shape[0]}-d, the model's {feats.shape[1]}-d")
            H, W = cam.image.shape[:2]
            h, w = dense.shape[1:]
            cols = np.clip((uv[:, 0] * w / W).astype(np.int64), 0, w - 1)
            rows = np.clip((uv[:, 1] * h / H).astype(np.int64), 0, h - 1)
            pix = dense[:, rows, cols].T
            pix = pix / np.maximum(np.linalg.norm(pix, axis=1, keepdims=True), 1e-12)
            np.add.at(acc, seen, pix)
            np.add.at(hits, seen, 1)
        m = hits > 0
        if m.any():
            fused = feats[m] + self.fusion_weight * acc[m] / hits[m, None]
            feats = feats.copy()
            feats[m] = fused / np.maximum(np.linalg.norm(fused, axis=1, keepdims=True), 1e-12)
        return feats, int(m.sum())

    # -- queries -------------------------------------------------------------------------------

    def query(self, text: str, result: SegmentResult) -> np.ndarray:
        """float32 [P] cosine similarity of every point of ``result`` to ``text``."""
        return result.similarity(self.encode_query(text))

    def encode_query(self, text: str) -> np.ndarray:
        """[D] unit embedding of a query phrase; a new phrase first passes the rate limiter
        (``QueryRateLimited``, a ValueError, when too many new phrases arrive)."""
        if self.phrase_limiter is None:
            return self.encode_text([text])[0]
        with self._text_lock:
            known = text in self._text_cache
        if known:
            return self.encode_text([text])[0]
        self.phrase_limiter.acquire()
        t0 = time.perf_counter()
        emb = self.encode_text([text])[0]
        self.phrase_limiter.spend(time.perf_counter() - t0)
        return emb

    def relevance(self, text: str, result: SegmentResult) -> np.ndarray:
        """float32 [P] calibrated relevance of every point to ``text`` (``inference.relevance``).

        >= 0.5: no competing phrase (vocabulary class or generic background phrase) describes the
        point better; 0 for points that were not segmented.
        """
        query = self.encode_query(text)
        canon = self._state.canonicals
        comp = canon.embeddings[canon.competitors(query)]
        cos = result.row_cosines(np.concatenate([query[None], comp]))
        return result.to_points(relevance_from_cosines(cos[:, 0], cos[:, 1:], self.query_temperature), 0.0)


def group_instances(
    xyz: np.ndarray, radius: float = 0.5, min_points: int = 5, max_instances: int = 64
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Connected components of points on a grid of cell ``radius`` (26-neighbourhood).

    Returns [(centroid [3], box size [3], member indices)], largest first.
    """
    if len(xyz) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    cells = np.floor(xyz / radius).astype(np.int64)
    lo = cells.min(axis=0) - 1
    dims = cells.max(axis=0) - lo + 2  # a free cell on each side: a neighbour key never wraps
    # one int64 key per cell: a 1-D unique is several times faster than np.unique(axis=0)
    keys, inv = np.unique(_cell_keys(cells - lo, dims), return_inverse=True)
    inv = inv.reshape(-1)
    rows, cols = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                if (dx, dy, dz) == (0, 0, 0):
                    continue
                nk = keys + (dx * dims[1] + dy) * dims[2] + dz
                pos = np.minimum(np.searchsorted(keys, nk), len(keys) - 1)
                hit = keys[pos] == nk
                rows.append(np.flatnonzero(hit))
                cols.append(pos[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(len(keys), len(keys)))
    _, comp = connected_components(graph, directed=False)
    point_comp = comp[inv]
    counts = np.bincount(point_comp)
    by_comp = np.argsort(point_comp, kind="stable")  # members of each component, contiguous
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for k in np.argsort(-counts, kind="stable"):
        if counts[k] < min_points or len(out) >= max_instances:
            break
        members = by_comp[starts[k] : starts[k + 1]]
        p = xyz[members]
        lo_, hi_ = p.min(axis=0), p.max(axis=0)
        out.append(((lo_ + hi_) / 2, hi_ - lo_, members))
    return out


def _cell_keys(c: np.ndarray, dims: np.ndarray) -> np.ndarray:
    return (c[:, 0] * dims[1] + c[:, 1]) * dims[2] + c[:, 2]


def _gather_rows(values: np.ndarray, rows: np.ndarray, fill) -> np.ndarray:
    """``values[rows]`` with ``fill`` where a row is -1 (a point the voxelizer dropped)."""
    if len(values) == 0:
        return np.full((len(rows), *values.shape[1:]), fill, dtype=values.dtype)
    out = values[np.maximum(rows, 0)]
    if rows.size and rows.min() < 0:
        out[rows < 0] = fill
    return out


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _create_teacher(create_teacher, teacher: str | None, device: str, text_cache=None):  # noqa: ANN001
    """The teacher named by the config, or the shipped default ("default") when none is given."""
    return create_teacher(teacher or "default", device=device, text_cache=text_cache)


def _backend_input_spec(backend: Backend) -> InputSpec:
    """The input contract of a backend's model config (a bare callable: x, y, z, intensity)."""
    config = getattr(backend, "config", None)
    if isinstance(config, ModelConfig):
        return InputSpec.for_model(config)
    names = getattr(backend, "feature_names", None) or ("intensity",)
    return InputSpec(fields=tuple(n for n in names if n not in ("x", "y", "z")))


def _input_spec(cfg: SegmenterConfig, backend: Backend) -> InputSpec:
    """The checkpoint's input contract with the configuration's overrides (each logged)."""
    spec = InputSpec.from_checkpoint(Path(cfg.checkpoint).expanduser())
    changes: dict = {"voxel_size": backend.config.voxel_size}
    if cfg.point_features and tuple(cfg.point_features) != spec.fields:
        changes["fields"] = tuple(cfg.point_features)
    if cfg.intensity_scale > 0 and cfg.intensity_scale != spec.intensity_scale:
        changes["intensity_scale"] = cfg.intensity_scale
    for name, value in changes.items():
        if value != getattr(spec, name) and name != "voxel_size":  # voxel_size is logged where it is applied
            log.warning("%s %s overrides the checkpoint's %s", name, value, getattr(spec, name))
    spec = spec.replace(**changes)
    spec.check(backend.config)
    return spec


def _create_backend(cfg: SegmenterConfig) -> Backend:
    """The inference backend for the checkpoint (``inference.backends``), voxel size applied."""
    import dataclasses

    from clip2scene_ros.inference.backends import create_backend

    kwargs: dict = {"device": cfg.device, "precision": cfg.precision}
    if cfg.threads > 0 and cfg.backend == "onnxruntime":
        kwargs["threads"] = cfg.threads
    backend = create_backend(cfg.backend, str(Path(cfg.checkpoint).expanduser()), **kwargs)
    if cfg.voxel_size > 0 and cfg.voxel_size != backend.config.voxel_size:
        # voxelization and kernel maps are built outside the network from config.voxel_size
        log.warning("voxel_size %.3f overrides the checkpoint's %.3f", cfg.voxel_size, backend.config.voxel_size)
        backend.config = dataclasses.replace(backend.config, voxel_size=cfg.voxel_size)
    return backend
