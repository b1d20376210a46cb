"""Progressive shrinking (Once-for-All, Cai et al. ICLR 2020; mit-han-lab/once-for-all ``train_ofa_net.py``).

Consecutive phases enlarge the enabled choices: full network -> elastic kernel -> elastic depth (2 phases) ->
elastic expand ratio (2 phases). Each phase trains ``n_subnets`` uniformly sampled subnets per step from its enabled
choices on label-smoothed labels plus ``kd_ratio`` x distillation from a fixed teacher, the trained full network
(the first phase's result); the first phase has no teacher. At the start of a phase that enables new expand
ratios, middle channels are re-sorted by importance, keeping the widths trained so far nested
(OFA's ``re_organize_middle_weights``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from nas.train.choices import Choices
from nas.train.samplers.base import SAMPLERS, Phase, PhasedSampler
from nas.train.samplers.basic import UniformSampler
from search_spaces import SearchSpace

__all__ = ["ProgressiveShrinking", "OFA_PHASES"]

#: OFA's schedule as enabled choices (values scaled-down elsewhere: epochs and lr come from the config).
OFA_PHASES: tuple[dict[str, Any], ...] = (
    {"name": "full", "choices": {"ks": "max", "e": "max", "d": "max"}, "n_subnets": 1},
    {"name": "kernel", "choices": {"ks": "all", "e": "max", "d": "max"}, "n_subnets": 1},
    {"name": "depth_1", "choices": {"ks": "all", "e": "max", "d": "top2"}, "n_subnets": 2},
    {"name": "depth_2", "choices": {"ks": "all", "e": "max", "d": "all"}, "n_subnets": 2},
    {"name": "expand_1", "choices": {"ks": "all", "e": "top2", "d": "all"}, "n_subnets": 4},
    {"name": "expand_2", "choices": {"ks": "all", "e": "all", "d": "all"}, "n_subnets": 4},
)
_PHASE_KEYS = {"name", "choices", "epochs", "lr", "warmup_epochs", "n_subnets", "kd", "sort_channels"}


class ProgressiveShrinking(PhasedSampler):
    """Phases of uniform sampling from growing choice lists, fixed-teacher KD after the first phase."""

    def __init__(self, space: SearchSpace, *, phases: Sequence[Mapping[str, Any]] = OFA_PHASES, epochs: int = 1,
                 label_smoothing: float = 0.1, kd_ratio: float = 1.0, temperature: float = 1.0,
                 sort_group: str = "e", seed: int = 0) -> None:
        if not phases:
            raise ValueError("progressive shrinking needs at least one phase")
        self.space, self.sort_group = space, sort_group
        self._phases: list[Phase] = []
        self._sort: list[list[Any] | None] = []
        previous: list[Any] | None = None
        names: set[str] = set()
        for i, raw in enumerate(phases):
            p = dict(raw)
            unknown = sorted(set(p) - _PHASE_KEYS)
            name = str(p.get("name", f"phase{i}"))
            if unknown:
                raise ValueError(f"phase {name!r}: unknown keys {unknown}; allowed: {sorted(_PHASE_KEYS)}")
            if name in names:
                raise ValueError(f"phase names must be unique; {name!r} appears twice")
            names.add(name)
            choices = Choices(space, p.get("choices"), label=f"phase {name!r}")
            kd = bool(p.get("kd", i > 0)) and kd_ratio > 0
            if kd and i == 0:
                raise ValueError(f"phase {name!r} is first: its teacher (the first phase's result) does not exist yet")
            sampler = UniformSampler(space, choices=choices.to_dict(), n_subnets=int(p.get("n_subnets", 1)),
                                     label_smoothing=label_smoothing, kd_ratio=kd_ratio if kd else 0.0,
                                     temperature=temperature, seed=seed + i, label=f"phase {name!r}")
            n_epochs, lr, warmup = int(p.get("epochs", epochs)), p.get("lr"), p.get("warmup_epochs")
            if n_epochs < 1:
                raise ValueError(f"phase {name!r}: epochs must be >= 1, got {n_epochs}")
            if lr is not None and not float(lr) > 0:
                raise ValueError(f"phase {name!r}: lr must be > 0 (or omitted for the trainer's lr), got {lr}")
            if warmup is not None and not float(warmup) >= 0:
                raise ValueError(f"phase {name!r}: warmup_epochs must be >= 0, got {warmup}")
            self._phases.append(Phase(name, sampler, n_epochs, lr, warmup))
            self._sort.append(self._keep_widths(choices, previous, p.get("sort_channels")))
            previous = choices.values(sort_group) if sort_group in choices.groups else None

    def _keep_widths(self, choices: Choices, previous: list[Any] | None, flag: bool | None) -> list[Any] | None:
        """Expand ratios to keep nested when this phase sorts channels, or None when it does not sort."""
        if self.sort_group not in choices.groups or previous is None:
            return None
        grows = set(choices.values(self.sort_group)) > set(previous)
        return list(previous) if (grows if flag is None else flag) else None

    def phases(self) -> list[Phase]:
        return list(self._phases)

    def sorts_channels(self, index: int) -> bool:
        return self._sort[index] is not None

    def start_phase(self, index: int, model: nn.Module) -> None:
        keep = self._sort[index]
        if keep is None:
            return
        sort = getattr(model, "sort_channels", None)
        if not callable(sort):
            raise TypeError(f"phase {self._phases[index].name!r} re-sorts channels but {type(model).__name__} "
                            f"has no sort_channels(keep_expands=...)")
        sort(keep_expands=keep)


@SAMPLERS.register("progressive")
def progressive(**kwargs: Any) -> ProgressiveShrinking:
    """OFA progressive shrinking: phases of enabled choices, fixed full-network teacher, channel sorting."""
    return ProgressiveShrinking(**kwargs)
