"""Loss recipes: hard labels (label-smoothed cross-entropy), soft targets from a teacher (distillation), or both.

Cross-entropy with label smoothing is torch's ``F.cross_entropy(..., label_smoothing=...)`` (the same value as
timm's ``LabelSmoothingCrossEntropy``) computed per example so per-example loss weights can be applied.
Distillation is the KL divergence KL(p_teacher || p_student) * T^2: it has the same gradient as timm's
``SoftTargetCrossEntropy`` (OFA's "ce" KD, BigNAS/AttentiveNAS's ``KLLossSoft``) but is zero when student and
teacher agree. The teacher is either ``inplace`` (the detached logits of an earlier task of the same step, BigNAS)
or ``fixed`` (an external, frozen network, OFA's progressive shrinking).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossRecipe", "TEACHER_SOURCES", "distillation", "weighted_mean"]

TEACHER_SOURCES = ("inplace", "fixed")


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-example KL(softmax(teacher/T) || softmax(student/T)) * T^2; zero iff the distributions agree."""
    s = F.log_softmax(student.float() / temperature, dim=-1)
    t = F.log_softmax(teacher.detach().float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="none", log_target=True).sum(-1) * temperature**2


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None,
                  denominator: float | None = None) -> torch.Tensor:
    """Mean of per-example ``values``, weighted by ``weights`` (normalised to mean 1) when given.

    ``denominator`` replaces the weights' own sum (a process of a data-parallel run normalises its shard by the
    global batch's weight sum, see :mod:`nas.train.distributed`).
    """
    if weights is None:
        return values.mean()
    if denominator is not None:
        return (values * weights).sum() / denominator
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


@dataclass(frozen=True)
class LossRecipe:
    """``hard`` * CE(labels, label_smoothing) + ``soft`` * KD(teacher from ``source``, ``temperature``)."""

    hard: float = 1.0
    soft: float = 0.0
    label_smoothing: float = 0.0
    source: str = "inplace"
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.hard < 0 or self.soft < 0 or self.hard + self.soft <= 0:
            raise ValueError(f"loss weights must be >= 0 with a positive sum, got hard={self.hard}, soft={self.soft}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.source not in TEACHER_SOURCES:
            raise ValueError(f"teacher source {self.source!r} unknown; choose one of {list(TEACHER_SOURCES)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @property
    def needs_inplace_teacher(self) -> bool:
        return self.soft > 0 and self.source == "inplace"

    @property
    def needs_fixed_teacher(self) -> bool:
        return self.soft > 0 and self.source == "fixed"

    def per_example(self, logits: torch.Tensor, targets: torch.Tensor,
                    teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Unweighted per-example loss (N,)."""
        loss = torch.zeros(logits.size(0), device=logits.device, dtype=torch.float32)
        if self.hard > 0:
            ce = F.cross_entropy(logits.float(), targets, reduction="none", label_smoothing=self.label_smoothing)
            loss = loss + self.hard * ce
        if self.soft > 0:
            if teacher_logits is None:
                raise ValueError(f"recipe distils from a {self.source} teacher but no teacher logits were given")
            loss = loss + self.soft * distillation(logits, teacher_logits, self.temperature)
        return loss
