"""Distillation losses.

- KD (Hinton et al., 2015): KL(teacher ‖ student) on logits softened by temperature T, scaled
  by T² so its gradients keep their size as T changes.
- Cosine feature loss: ``scale · (1 − cos(proj(f_s), f_t))``, the cosine taken over channels at
  each spatial position and averaged; ``proj`` is a learnable 1×1 convolution where the student
  and teacher widths differ. When their spatial sizes differ, the larger map is average-pooled
  to the smaller one (a student may downsample on a different schedule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two feature maps to the spatial size of the smaller."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)


def cosine_feature_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, scale: float) -> torch.Tensor:
    """scale · mean(1 − cos) over positions; maps must have equal channels (project first)."""
    s, t = match_spatial(student_map, teacher_map)
    return scale * (1.0 - F.cosine_similarity(s, t, dim=1, eps=1e-8)).mean()


def projector(student_channels: int, teacher_channels: int) -> nn.Module:
    """A learnable 1×1 convolution from student to teacher width, or identity when they agree."""
    if student_channels == teacher_channels:
        return nn.Identity()
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
