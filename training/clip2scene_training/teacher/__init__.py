"""Training and evaluation of the tiny CLIP teacher on the synthetic world (camera images only)."""
