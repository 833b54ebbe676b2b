"""CLIP teacher: offline open_clip loading, MaskCLIP dense features, vocabularies and caches.

Typical use::

    from clip2scene_ros.teacher import create_teacher, load_vocabulary
    teacher = create_teacher("default")                 # the bundled tiny synthetic-world teacher
    teacher = create_teacher("ViT-B-16", weights="open_clip_pytorch_model.bin")  # a real CLIP
    feats = teacher.dense_features(images)              # [B, D, h, w], L2-normalised
    labels = teacher.predict(images, load_vocabulary("nuscenes"))
"""

from .dense import dense_tokens, key_smoothing, prompt_denoising, resize_grid_embedding
from .feature_cache import DenseFeatureCache
from .loading import TeacherLoadError, list_model_configs, load_open_clip
from .teacher import Teacher, TeacherConfig, as_vocabulary, create_teacher
from .text_cache import TextEmbeddingCache, default_cache_dir
from .vocabulary import Vocabulary, VocabularyError, load_templates, load_vocabulary

__all__ = [
    "DenseFeatureCache",
    "Teacher",
    "TeacherConfig",
    "TeacherLoadError",
    "TextEmbeddingCache",
    "Vocabulary",
    "VocabularyError",
    "as_vocabulary",
    "create_teacher",
    "default_cache_dir",
    "dense_tokens",
    "key_smoothing",
    "list_model_configs",
    "load_open_clip",
    "load_templates",
    "load_vocabulary",
    "prompt_denoising",
    "resize_grid_embedding",
]
