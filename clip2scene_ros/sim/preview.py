"""A contact sheet of one frame for people: camera images, their label images and a bird's-eye view."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from clip2scene_ros.sim import taxonomy as C
from clip2scene_ros.sim.frame import Frame

# one colour per synthetic id (0 = sky/unlabelled = black), loosely the SemanticKITTI palette
PALETTE = np.array(
    [[0, 0, 0], [255, 0, 255], [75, 0, 75], [150, 240, 80], [255, 200, 0], [0, 175, 0], [100, 150, 245],
     [80, 30, 180], [0, 60, 255], [30, 60, 150], [100, 230, 245], [255, 30, 30], [255, 240, 150],
     [255, 120, 50], [255, 255, 255], [112, 128, 144]],
    dtype=np.uint8,
)  # fmt: skip


def colorize(labels: np.ndarray) -> np.ndarray:
    """uint8 label ids -> RGB."""
    return PALETTE[np.clip(labels, 0, len(PALETTE) - 1)]


def bev(frame: Frame, size: int = 400, metres: float = 50.0) -> np.ndarray:
    """Top view of the LiDAR points (LiDAR frame, forward = up) coloured by label."""
    img = np.zeros((size, size, 3), np.uint8)
    scale = size / (2 * metres)
    u = (size / 2 + frame.points[:, 0] * scale).astype(int)
    v = (size / 2 - frame.points[:, 1] * scale).astype(int)
    ok = (u >= 0) & (u < size) & (v >= 0) & (v < size)
    img[v[ok], u[ok]] = colorize(frame.labels[ok])
    return img


def contact_sheet(frame: Frame, tile_width: int = 320) -> np.ndarray:
    """RGB image: a row of camera images, a row of their label images, the BEV and a legend."""
    tiles, labels = [], []
    for cam in frame.cameras:
        h = max(1, round(cam.height * tile_width / cam.width))
        tiles.append(cv2.resize(cam.image, (tile_width, h), interpolation=cv2.INTER_AREA))
        labels.append(cv2.resize(colorize(cam.labels), (tile_width, h), interpolation=cv2.INTER_NEAREST))
        cv2.putText(tiles[-1], cam.name, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    rows = [np.concatenate(tiles, 1), np.concatenate(labels, 1)] if tiles else []
    width = rows[0].shape[1] if rows else 2 * 400
    bottom = np.zeros((400, max(width, 600), 3), np.uint8)
    bottom[:, :400] = bev(frame)
    for i, name in enumerate(C.CLASS_NAMES):
        y = 18 + i * 24
        cv2.rectangle(bottom, (420, y - 12), (440, y + 4), tuple(int(c) for c in PALETTE[i]), -1)
        cv2.putText(bottom, f"{i} {name}", (448, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    rows = [np.pad(r, ((0, 0), (0, bottom.shape[1] - r.shape[1]), (0, 0))) for r in rows] + [bottom[:, :width]
            if width >= 600 else bottom]  # fmt: skip
    return np.concatenate(rows, 0)


def save_contact_sheet(frame: Frame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), contact_sheet(frame)[..., ::-1]):
        raise OSError(f"could not write {path}")
    return path
