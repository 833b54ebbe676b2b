"""clip2scene_training: offline pre-training, fine-tuning and evaluation."""

__all__: list[str] = []
