"""MLP accuracy predictors: Once-for-All's (Cai et al., ICLR 2020, ``ofa/nas/accuracy_predictor``) and a deep
ensemble of them (Lakshminarayanan et al., NeurIPS 2017) for uncertainty.

OFA's model is ``n -> 400 -> 400 -> 400 -> 1`` with ReLU on the depth-masked one-hot, with the mean accuracy as
output offset. Here targets are standardised and the output bias starts at 0, which is the same thing: the net
starts at the mean and only learns deviations. Training is Adam(W) with a one-cycle schedule on mini-batches; an
optional ranking term (``rank_loss="pairwise"``: RankNet's logistic loss on all ordered pairs of a batch;
``"listwise"``: ListNet's top-one cross-entropy) rewards getting the order right, which is what a search needs.
All randomness (initialisation, batch order) comes from a ``torch.Generator`` seeded by ``seed``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from predictors._threads import single_thread
from predictors.base import FeaturePredictor, ProbabilisticPredictor, register
from search_spaces import SearchSpace
from search_spaces.registry import Registry

__all__ = ["MLPPredictor", "MLPEnsemble", "RANK_LOSSES", "train_mlp"]


def _pairwise(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    dy = target[:, None] - target[None, :]
    mask = dy > 1e-12
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return nn.functional.softplus(-(pred[:, None] - pred[None, :])[mask]).mean()


def _listwise(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(torch.softmax(target, 0) * torch.log_softmax(pred, 0)).sum()


RANK_LOSSES: Registry[Any] = Registry("ranking loss")
RANK_LOSSES.add("pairwise", lambda: _pairwise)
RANK_LOSSES.add("listwise", lambda: _listwise)


def _build(n_in: int, hidden: int, layers: int, gen: torch.Generator) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(n_in if i == 0 else hidden, hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden if layers else n_in, 1))
    net = nn.Sequential(*mods)
    with torch.no_grad():  # PyTorch's default init, drawn from our generator instead of the global one
        for m in net:
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.copy_(torch.empty_like(m.weight).uniform_(-bound, bound, generator=gen))
                m.bias.copy_(torch.empty_like(m.bias).uniform_(-bound, bound, generator=gen))
        last = net[-1]
        assert isinstance(last, nn.Linear)
        last.bias.zero_()  # output starts at the (standardised) mean accuracy, as OFA's base_acc
    return net


def train_mlp(X: np.ndarray, t: np.ndarray, *, hidden: int, layers: int, steps: int, batch_size: int, lr: float,
              weight_decay: float, rank_loss: str, rank_weight: float, seed: int) -> nn.Sequential:
    """Train one MLP on standardised targets ``t``; deterministic for a given seed."""
    with single_thread():
        return _train(X, t, hidden=hidden, layers=layers, steps=steps, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, rank_loss=rank_loss, rank_weight=rank_weight, seed=seed)


def _train(X: np.ndarray, t: np.ndarray, *, hidden: int, layers: int, steps: int, batch_size: int, lr: float,
           weight_decay: float, rank_loss: str, rank_weight: float, seed: int) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    net = _build(X.shape[1], hidden, layers, gen)
    xt, yt = torch.from_numpy(X.astype(np.float32)), torch.from_numpy(t.astype(np.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    rank = RANK_LOSSES.create(rank_loss) if rank_loss != "none" else None
    bs, order, pos = min(batch_size, len(xt)), torch.randperm(len(xt), generator=gen), 0
    for _ in range(steps):
        if pos + bs > len(xt):
            order, pos = torch.randperm(len(xt), generator=gen), 0
        idx = order[pos : pos + bs]
        pos += bs
        pred = net(xt[idx]).squeeze(1)
        loss = nn.functional.mse_loss(pred, yt[idx])
        if rank is not None:
            loss = loss + rank_weight * rank(pred, yt[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


class _MLPBase(FeaturePredictor):
    def __init__(self, space: SearchSpace, *, features: str | Sequence[str], target: str, seed: int, members: int,
                 hidden: int, layers: int, steps: int, batch_size: int, lr: float, weight_decay: float,
                 rank_loss: str, rank_weight: float) -> None:
        super().__init__(space, features=features, target=target, seed=seed)
        if rank_loss != "none":
            RANK_LOSSES.get(rank_loss)  # unknown names raise, listing the options
        for key, val in (("hidden", hidden), ("steps", steps), ("batch_size", batch_size), ("members", members)):
            if val < 1:
                raise ValueError(f"{key} must be >= 1, got {val}")
        self.hidden, self.layers, self.steps, self.batch_size = int(hidden), int(layers), int(steps), int(batch_size)
        self.lr, self.weight_decay, self.rank_loss, self.rank_weight = float(lr), float(weight_decay), rank_loss, \
            float(rank_weight)
        self._members = int(members)
        self._nets: list[nn.Sequential] = []
        self._y = (0.0, 1.0)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> None:
        mu, sd = float(y.mean()), float(y.std())
        sd = sd if sd > 1e-12 else 1.0
        hp = dict(hidden=self.hidden, layers=self.layers, steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                  weight_decay=self.weight_decay, rank_loss=self.rank_loss, rank_weight=self.rank_weight)
        self._nets = [train_mlp(X, (y - mu) / sd, seed=self.seed * 1009 + k, **hp)  # type: ignore[arg-type]
                      for k in range(self._members)]
        self._y = (mu, sd)

    def _all(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad(), single_thread():
            xt = torch.from_numpy(np.asarray(X, dtype=np.float32))
            out = np.stack([net(xt).squeeze(1).numpy().astype(np.float64) for net in self._nets])
        return out * self._y[1] + self._y[0]

    def _predict(self, X: np.ndarray) -> np.ndarray:
        return self._all(X).mean(0)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {f"net{k}.{name}": p.detach().numpy().copy() for k, net in enumerate(self._nets)
                  for name, p in net.state_dict().items()}
        return {"y_mean": self._y[0], "y_std": self._y[1], "members": len(self._nets)}, arrays

    def _load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        n_in = next(v for k, v in arrays.items() if k.startswith("net0.") and k.endswith("weight")).shape[1]
        self._nets = []
        for k in range(int(meta["members"])):
            net = _build(n_in, self.hidden, self.layers, torch.Generator().manual_seed(0))
            prefix = f"net{k}."
            net.load_state_dict({n[len(prefix):]: torch.from_numpy(v) for n, v in arrays.items()
                                 if n.startswith(prefix)})
            self._nets.append(net.eval())
        self._y = (float(meta["y_mean"]), float(meta["y_std"]))


@register("mlp")
class MLPPredictor(_MLPBase):
    """OFA's accuracy predictor (3 x 400 ReLU, output offset at the mean); optional ranking loss.

    ``features=("onehot",), target="identity"`` is OFA's exact set-up; the defaults add the space's cost priors
    and rank-Gauss the targets when they have outliers.
    """

    def __init__(self, space: SearchSpace, *, features: str | Sequence[str] = "auto", target: str = "auto",
                 seed: int = 0, hidden: int = 400, layers: int = 3, steps: int = 500, batch_size: int = 128,
                 lr: float = 1e-3, weight_decay: float = 1e-4, rank_loss: str = "none",
                 rank_weight: float = 1.0) -> None:
        super().__init__(space, features=features, target=target, seed=seed, members=1, hidden=hidden,
                         layers=layers, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         rank_loss=rank_loss, rank_weight=rank_weight)


@register("mlp_ensemble")
class MLPEnsemble(_MLPBase, ProbabilisticPredictor):
    """Deep ensemble: ``members`` MLPs from different seeds; ``predict_std`` is their spread."""

    def __init__(self, space: SearchSpace, *, features: str | Sequence[str] = "auto", target: str = "auto",
                 seed: int = 0, members: int = 5, hidden: int = 200, layers: int = 2, steps: int = 400,
                 batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 1e-4, rank_loss: str = "none",
                 rank_weight: float = 1.0) -> None:
        super().__init__(space, features=features, target=target, seed=seed, members=members, hidden=hidden,
                         layers=layers, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         rank_loss=rank_loss, rank_weight=rank_weight)
        self.members = self._members

    def _predict_std_archs(self, archs: list[Any]) -> np.ndarray:
        return self._target_tf.inverse(self._all(self._features_of(archs))).std(0)
