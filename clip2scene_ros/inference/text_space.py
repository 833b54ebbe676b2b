"""Does a student checkpoint live in the text space of the teacher that encodes the node's phrases?

A student's features are only comparable with text embeddings of the teacher it was distilled from;
a different text encoder with the same embedding size would give silently wrong labels. A checkpoint
records its text space as the teacher's content fingerprint (``extra.text_space``); older ones are
checked by re-encoding their stored class embeddings (``text_embeddings.safetensors``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# Same weights re-encode the stored classes to within float noise (fp16 weights, other BLAS): far
# above this; another text encoder of the same size lands far below it.
MIN_STORED_COSINE = 0.98


class TextSpaceMismatch(ValueError):
    """The checkpoint was trained against another teacher than the one given."""


def checkpoint_text_space(checkpoint: str | Path) -> tuple[str | None, str]:
    """(recorded teacher fingerprint or None, a readable name of the checkpoint's teacher)."""
    meta_path = Path(checkpoint) / "model.json"
    try:
        extra = json.loads(meta_path.read_text()).get("extra", {}) or {}
    except (OSError, ValueError):
        return None, "unknown"
    teacher = extra.get("teacher") or {}
    name = teacher.get("model", "unknown") if isinstance(teacher, dict) else str(teacher)
    return extra.get("text_space"), str(name)


def check_text_space(checkpoint: str | Path, teacher_name: str, teacher_id: str, encode_vocabulary=None) -> None:  # noqa: ANN001
    """Raise :class:`TextSpaceMismatch` naming both teachers when they differ.

    ``encode_vocabulary(name) -> [C, D]`` re-encodes the checkpoint's training vocabulary for
    checkpoints without a recorded fingerprint (skipped when None or the files are absent).
    """
    recorded, trained_with = checkpoint_text_space(checkpoint)
    hint = (
        "give the teacher the checkpoint was distilled from (parameter 'teacher'), or a checkpoint "
        "distilled from this teacher"
    )
    if recorded is not None:
        if recorded != teacher_id:
            raise TextSpaceMismatch(
                f"checkpoint {checkpoint} was trained in the text space of teacher '{trained_with}' "
                f"(fingerprint {recorded}), but the given teacher '{teacher_name}' has fingerprint "
                f"{teacher_id}; {hint}"
            )
        return
    stored_path = Path(checkpoint) / "text_embeddings.safetensors"
    if encode_vocabulary is None or not stored_path.is_file():
        return
    from safetensors.numpy import load_file

    meta = json.loads((Path(checkpoint) / "model.json").read_text()).get("extra", {}) or {}
    vocab = meta.get("vocabulary")
    if not vocab:
        return
    try:
        stored = load_file(str(stored_path))["text"].astype(np.float32)
        fresh = np.asarray(encode_vocabulary(vocab), dtype=np.float32)
    except Exception:  # noqa: BLE001 - a vocabulary not available here: nothing to compare
        return
    if stored.shape != fresh.shape:
        return  # the embedding sizes differ: the dimension check names that problem
    cos = np.sum(stored * fresh, axis=1) / np.maximum(
        np.linalg.norm(stored, axis=1) * np.linalg.norm(fresh, axis=1), 1e-12
    )
    if float(cos.min()) < MIN_STORED_COSINE:
        raise TextSpaceMismatch(
            f"checkpoint {checkpoint} was trained in the text space of teacher '{trained_with}', but the "
            f"given teacher '{teacher_name}' (fingerprint {teacher_id}) encodes its classes differently "
            f"(cosine to the stored class embeddings down to {float(cos.min()):.2f}); {hint}"
        )
