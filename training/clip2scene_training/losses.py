"""CLIP2Scene losses: the paper's Eq. 1 and Eq. 2-4 (defaults) and the released code's variants.

Shapes: ``P`` paired points, ``D`` embedding size, ``C`` classes. Pseudo-labels ``y`` index the
text matrix ``T`` [C, D] (0-based here; the dataset's ignore id is handled by the caller).
Point features are L2-normalised before the dot product D(.,.) for the paper variants, so the
temperatures (tau = 0.5, lambda = 1) act on cosines, as with CLIP's normalised embeddings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "SEMANTIC_LOSSES",
    "SPATIAL_TEMPORAL_LOSSES",
    "classwise_nce_loss",
    "ce_text_anchor_loss",
    "semantic_loss",
    "grid_consistency_loss",
    "direct_cosine_loss",
    "spatial_temporal_loss",
    "lovasz_softmax",
]

SEMANTIC_LOSSES = ("paper_classwise_nce", "ce_text_anchor")
SPATIAL_TEMPORAL_LOSSES = ("paper_pixel_point", "point_only", "direct_cosine", "none")


def classwise_nce_loss(
    points: torch.Tensor,
    text: torch.Tensor,
    labels: torch.Tensor,
    tau: float = 0.5,
    denominator: str = "negatives",
    reduction: str = "sum",
) -> torch.Tensor:
    """Paper Eq. 1: for each pseudo-class c present, with s_i = D(t_c, p_i) / tau,

        l_c = -log( sum_{i in c} exp(s_i) / sum_{j not in c} exp(s_j) )       (denominator="negatives")

    as printed (negatives only: same-class points are never pushed apart). ``denominator="all"``
    adds the positives to the denominator (the usual bounded InfoNCE form). Classes with no
    negatives in the batch are skipped (the ratio is undefined). ``reduction``: sum (the paper) or
    mean over the classes present. The sum matters for training: with the mean, each class's
    gradient is divided by the number of classes present (~10), which with the paper's SGD lr 0.1
    left the synthetic student far from fitting its own training pseudo-labels.
    """
    if denominator not in ("negatives", "all"):
        raise ValueError(f"denominator must be 'negatives' or 'all', got {denominator!r}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    p = F.normalize(points.float(), dim=-1)
    t = F.normalize(text.float(), dim=-1)
    present = torch.unique(labels)
    if present.numel() < 2:
        return p.sum() * 0.0  # one class only: no negatives, nothing to contrast
    s = (t[present] @ p.T) / tau  # [C', P]
    pos = labels[None, :] == present[:, None]
    neg_inf = torch.finfo(s.dtype).min
    lse_pos = torch.logsumexp(s.masked_fill(~pos, neg_inf), dim=1)
    den_mask = ~pos if denominator == "negatives" else torch.ones_like(pos)
    lse_den = torch.logsumexp(s.masked_fill(~den_mask, neg_inf), dim=1)
    per_class = lse_den - lse_pos
    return per_class.mean() if reduction == "mean" else per_class.sum()


def ce_text_anchor_loss(
    points: torch.Tensor,
    text: torch.Tensor,
    labels: torch.Tensor,
    tau: float = 1.0,
    normalize_points: bool = False,
) -> torch.Tensor:
    """Released-code semantic term: cross-entropy over logits p_i . T^T / tau (tau = 1, raw point
    features, normalised text) with the pixel pseudo-labels as targets."""
    p = F.normalize(points.float(), dim=-1) if normalize_points else points.float()
    logits = p @ F.normalize(text.float(), dim=-1).T / tau
    return F.cross_entropy(logits, labels)


def semantic_loss(
    kind: str,
    points: torch.Tensor,
    text: torch.Tensor,
    labels: torch.Tensor,
    tau: float = 0.5,
    denominator: str = "negatives",
    reduction: str = "sum",
) -> torch.Tensor:
    """``reduction`` (Eq. 1 only): ``sum`` over the pseudo-classes present, as in the paper, or ``mean``."""
    if kind == "paper_classwise_nce":
        return classwise_nce_loss(points, text, labels, tau=tau, denominator=denominator, reduction=reduction)
    if kind == "ce_text_anchor":
        return ce_text_anchor_loss(points, text, labels, tau=tau)
    raise ValueError(f"semantic loss must be one of {SEMANTIC_LOSSES}, got {kind!r}")


def _segment_softmax(scores: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Softmax of ``scores`` [N] within each group id of ``groups`` [N]."""
    gmax = torch.full((num_groups,), float("-inf"), dtype=scores.dtype, device=scores.device)
    gmax = gmax.scatter_reduce(0, groups, scores.detach(), reduce="amax", include_self=True)
    e = torch.exp(scores - gmax[groups])
    z = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device).index_add(0, groups, e)
    return e / z[groups]


def grid_consistency_loss(
    point_feats: torch.Tensor,
    pixel_feats: torch.Tensor | None,
    text: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    lam: float = 1.0,
    use_pixels: bool = True,
    detach_center: bool = False,
) -> torch.Tensor:
    """Paper Eq. 2-4 over grid cells g_n of the registered sweeps (one row per paired point).

    a_i = exp(D(x_i, t_i)/lam) / Z_n, b_i = exp(D(p_i, t_i)/lam) / Z_n,
    f_n = sum_i a_i x_i + b_i p_i,    L = mean_i (1 - sigmoid(D(p_i, f_n))),
    with x_i the (frozen) pixel feature, p_i the point's local-head feature and t_i the text
    embedding of its pixel pseudo-class. ``use_pixels=False`` is the released nuScenes code
    (centre from point features only). Rows with group -1 (capped out) are ignored.
    """
    keep = groups >= 0
    p = F.normalize(point_feats[keep].float(), dim=-1)
    g = groups[keep]
    if p.shape[0] == 0:
        return point_feats.sum() * 0.0
    _, g = torch.unique(g, return_inverse=True)
    n = int(g.max()) + 1
    t = F.normalize(text.float(), dim=-1)[labels[keep]]
    p_c = p.detach() if detach_center else p
    if use_pixels:
        if pixel_feats is None:
            raise ValueError("paper_pixel_point needs pixel features; use spatial_temporal='point_only'")
        x = F.normalize(pixel_feats[keep].float(), dim=-1)
        scores = torch.cat([(x * t).sum(-1), (p_c * t).sum(-1)]) / lam
        w = _segment_softmax(scores, torch.cat([g, g]), n)  # Z_n spans pixel and point terms
        members = torch.cat([x, p_c])
        center = torch.zeros(n, p.shape[1], dtype=p.dtype, device=p.device).index_add(
            0, torch.cat([g, g]), w[:, None] * members
        )
    else:
        w = _segment_softmax((p_c * t).sum(-1) / lam, g, n)
        center = torch.zeros(n, p.shape[1], dtype=p.dtype, device=p.device).index_add(0, g, w[:, None] * p_c)
    return (1.0 - torch.sigmoid((p * center[g]).sum(-1))).mean()


def direct_cosine_loss(point_feats: torch.Tensor, pixel_feats: torch.Tensor) -> torch.Tensor:
    """Released ScanNet code: mean(1 - cos(pixel feature, point local feature)) over pairs."""
    return (1.0 - F.cosine_similarity(point_feats.float(), pixel_feats.float(), dim=-1)).mean()


def spatial_temporal_loss(
    kind: str,
    point_feats: torch.Tensor,
    pixel_feats: torch.Tensor | None,
    text: torch.Tensor,
    labels: torch.Tensor,
    groups: torch.Tensor,
    lam: float = 1.0,
    detach_center: bool = False,
) -> torch.Tensor:
    if kind == "paper_pixel_point":
        return grid_consistency_loss(point_feats, pixel_feats, text, labels, groups, lam, True, detach_center)
    if kind == "point_only":
        return grid_consistency_loss(point_feats, None, text, labels, groups, lam, False, detach_center)
    if kind == "direct_cosine":
        if pixel_feats is None:
            raise ValueError("direct_cosine needs pixel features")
        return direct_cosine_loss(point_feats, pixel_feats)
    if kind == "none":
        return point_feats.sum() * 0.0
    raise ValueError(f"spatial-temporal loss must be one of {SPATIAL_TEMPORAL_LOSSES}, got {kind!r}")


def lovasz_softmax(
    probs: torch.Tensor, labels: torch.Tensor, ignore_index: int | None = None
) -> torch.Tensor:
    """Lovasz-softmax loss (Berman et al., CVPR 2018) for probabilities [P, C] and labels [P],
    averaged over the classes present; the convex surrogate of per-class IoU used in fine-tuning."""
    if ignore_index is not None:
        valid = labels != ignore_index
        probs, labels = probs[valid], labels[valid]
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    losses = []
    for c in torch.unique(labels):
        fg = (labels == c).float()
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        fg_sorted = fg[perm]
        gts = fg_sorted.sum()
        intersection = gts - fg_sorted.cumsum(0)
        union = gts + (1.0 - fg_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])  # gradient of the Lovasz extension
        losses.append(torch.dot(errors_sorted, jaccard))
    return torch.stack(losses).mean()
