"""Differentiable architecture search on the engine's supernets (library of ``python -m nas.dnas``).

One driver for DARTS (first and second order), FBNet, PC-DARTS and TangleNAS (:mod:`supernets.mixture`): the
training split is cut (seeded) into a weight part and an architecture part; each step first updates the logits on
an architecture batch (Adam), then the weights on a weight batch (SGD, cosine lr, grad clip), as DARTS' reference
code does. The logits stay frozen during ``warmup_epochs`` (PC-DARTS, FBNet). FBNet's Gumbel temperature is
``tau0 * exp(-tau_decay * epochs after warm-up)`` and its architecture loss CE * a * log(LAT)^b uses the expected
latency of a hardware profile (:mod:`nas.search.dnas_latency`); the weights always train on plain CE. FBNet's
factor only pushes latency down; with ``lat_target=T`` (the profile's units) the architecture loss is instead
TuNAS' absolute reward CE + lat_weight * |LAT / T - 1| (Bender et al., CVPR 2020), which pulls the expected latency
to T from either side, in any mode; each epoch records the derived architecture's own price next to the target.

After every epoch the run appends the entropy of the logits and the argmax architecture to its history and writes
an atomic checkpoint (weights, logits, both optimizers, schedule, every RNG state); a run killed at any instant and
resumed from it ends exactly where an uninterrupted run ends. At the end the argmax architecture is evaluated
(BN recalibrated) and written as a results directory in the format of ``nas.search`` (``front_ranked.json``,
``config.yaml`` naming the trained supernet), so ``python -m nas.export results=<dir> rank=0`` exports it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nas.checkpoints import load_checkpoint, rng_state, save_checkpoint, save_weights, set_rng_state
from nas.data import DataModule
from nas.evaluation import EvalSet, evaluate_arch
from nas.search.dnas_derive import derive_near_target
from nas.search.dnas_latency import ExpectedLatency
from nas.search.results import SearchResult, atomic_write_text
from nas.train.resize import resize_to
from supernets import Supernet
from supernets.mixture import ArchParameters, MixtureError, SoftArch, check_mode, fbnet_loss, gumbel_temperature

__all__ = ["DnasSettings", "DnasResult", "run_dnas", "split_for_dnas"]

CHECKPOINT = "checkpoint.pt"
DERIVE_MODES = ("auto", "argmax", "target")


@dataclass(frozen=True)
class DnasSettings:
    """Search hyper-parameters (defaults: DARTS' NB201 recipe; FBNet's alpha optimiser via :meth:`for_mode`)."""

    mode: str = "darts"
    order: int = 1
    epochs: int = 10
    warmup_epochs: int = 0
    batch_size: int = 64
    train_portion: float = 0.5
    steps_per_epoch: int | None = None
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_wd: float = 3e-4
    grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_betas: tuple[float, float] = (0.5, 0.999)
    a_wd: float = 1e-3
    tau0: float = 5.0
    tau_decay: float = 0.045
    partial: int = 4
    lat_alpha: float = 0.2
    lat_beta: float = 0.6
    lat_target: float | None = None
    lat_weight: float = 1.0
    derive: str = "auto"
    lat_tolerance: float = 0.05
    eval_images: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.order not in (1, 2) or (self.order == 2 and self.mode != "darts"):
            raise MixtureError(f"order={self.order}: 1, or 2 (second order) with mode=darts only; got mode "
                               f"{self.mode!r}")
        if not self.tau0 > 0:
            raise MixtureError(f"tau0: the Gumbel temperature must be > 0, got {self.tau0}")
        if self.epochs < 1 or not 0 <= self.warmup_epochs or self.batch_size < 1:
            raise MixtureError(f"epochs >= 1, warmup_epochs >= 0 and batch_size >= 1 must hold; got epochs="
                               f"{self.epochs}, warmup_epochs={self.warmup_epochs}, batch_size={self.batch_size}")
        if self.lat_target is not None and not float(self.lat_target) > 0:
            raise MixtureError(f"lat_target must be a latency > 0 in the hardware profile's units, got "
                               f"{self.lat_target}")
        if self.derive not in DERIVE_MODES:
            raise MixtureError(f"derive={self.derive!r}: one of {list(DERIVE_MODES)} (auto = target with lat_target, "
                               "else argmax)")
        if self.derive == "target" and self.lat_target is None:
            raise MixtureError("derive=target needs lat_target=<latency in the hardware profile's units>")
        if not 0 < self.lat_tolerance < 1:
            raise MixtureError(f"lat_tolerance must be a fraction in (0, 1), got {self.lat_tolerance}")
        if not self.lat_weight >= 0:
            raise MixtureError(f"lat_weight must be >= 0, got {self.lat_weight}")
        object.__setattr__(self, "a_betas", tuple(self.a_betas))

    @classmethod
    def for_mode(cls, mode: str, **overrides: Any) -> DnasSettings:
        """FBNet's architecture optimiser (Adam lr 0.01, wd 5e-4, default betas) unless overridden."""
        base: dict[str, Any] = {"mode": mode}
        if mode == "fbnet":
            base.update(a_lr=0.01, a_wd=5e-4, a_betas=(0.9, 0.999))
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass
class DnasResult:
    arch: Any
    history: list[dict[str, Any]]
    top1: float
    out_dir: Path
    seconds: float


def split_for_dnas(n: int, portion: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint (weight, architecture) index sets of the ``n`` training examples."""
    n_w = int(round(portion * n))
    if not 0 < n_w < n:
        raise MixtureError(f"train_portion={portion} leaves {n_w} of {n} training examples for the weights and "
                           f"{n - n_w} for the architecture; both sides need at least one (0 < portion < 1)")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_w]), np.sort(perm[n_w:])


class _Search:
    def __init__(self, net: Supernet, data: DataModule, s: DnasSettings, out: Path, *,
                 latency: ExpectedLatency | None, resolution: int, device: torch.device) -> None:
        self.net, self.data, self.s, self.out, self.latency = net.to(device), data, s, out, latency
        self.r, self.device = resolution, device
        gen = torch.Generator().manual_seed(s.seed)
        self.ap = ArchParameters(net.mixture_choices(s.mode), edges=net.mixture_edges(s.mode), generator=gen)
        self.ap.to(device)
        self.w_opt = torch.optim.SGD(net.parameters(), lr=s.w_lr, momentum=s.w_momentum, weight_decay=s.w_wd)
        self.a_opt = torch.optim.Adam(self.ap.arch_parameters(), lr=s.a_lr, betas=s.a_betas, weight_decay=s.a_wd)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, s.epochs, eta_min=s.w_lr_min)
        self.w_idx, self.a_idx = split_for_dnas(data.split_size("train"), s.train_portion, s.seed)
        self.steps = min(len(self.w_idx), len(self.a_idx)) // s.batch_size
        if self.steps < 1:
            raise MixtureError(f"batch_size={s.batch_size} is larger than the smaller side of the split "
                               f"({min(len(self.w_idx), len(self.a_idx))} examples); no step fits in an epoch")
        if s.steps_per_epoch:
            self.steps = min(self.steps, int(s.steps_per_epoch))
        self.epoch, self.history = 0, []

    # -- state ----------------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"spec": self.net.full_spec(), "settings": self.s.to_dict(), "model": self.net.state_dict(),
                "arch": self.ap.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "sched": self.sched.state_dict(), "epoch": self.epoch, "history": json.dumps(self.history),
                "rng": rng_state()}

    def load(self, st: dict[str, Any]) -> None:
        if st.get("settings") != self.s.to_dict() or json.dumps(st.get("spec"), sort_keys=True) != json.dumps(
                self.net.full_spec(), sort_keys=True):
            raise MixtureError(f"{self.out / CHECKPOINT} was written by a different search (settings or supernet "
                               "differ); use a new out_dir or resume=false")
        self.net.load_state_dict(st["model"])
        self.ap.load_state_dict(st["arch"])
        self.w_opt.load_state_dict(st["w_opt"])
        self.a_opt.load_state_dict(st["a_opt"])
        self.sched.load_state_dict(st["sched"])
        self.epoch, self.history = int(st["epoch"]), json.loads(st["history"])
        set_rng_state(st["rng"])

    # -- steps ----------------------------------------------------------------------------------------------------
    def tau(self) -> float:
        return gumbel_temperature(self.epoch - self.s.warmup_epochs, tau0=self.s.tau0, decay=self.s.tau_decay)

    def soft(self) -> SoftArch:
        return self.ap.soft(self.s.mode, tau=self.tau(), partial=self.s.partial)

    def batch(self, idx: np.ndarray, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        order = np.random.default_rng([self.s.seed, self.epoch, len(idx)]).permutation(idx)
        part = order[step * self.s.batch_size:(step + 1) * self.s.batch_size]
        x, y = self.data.get("train", part)
        gen = torch.Generator().manual_seed(int(np.random.default_rng([self.s.seed, self.epoch, step]).integers(2**62)))
        x = resize_to(self.data.augment(x, gen), self.r)
        return x.to(self.device), y.to(self.device)

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor, soft: SoftArch,
                  params: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, float]:
        with self.net.mixed(soft):
            logits = self.net(x) if params is None else functional_call(self.net, params, (x,))
        ce = F.cross_entropy(logits, y)
        if self.latency is None:
            return ce, float("nan")
        lat = self.latency(soft)
        if self.s.lat_target is not None:
            return ce + self.s.lat_weight * (lat / float(self.s.lat_target) - 1.0).abs(), float(lat.detach())
        return fbnet_loss(ce, lat, alpha=self.s.lat_alpha, beta=self.s.lat_beta), float(lat.detach())

    def alpha_step(self, xa: torch.Tensor, ya: torch.Tensor, xw: torch.Tensor, yw: torch.Tensor) -> tuple[float, float]:
        self.a_opt.zero_grad(set_to_none=True)
        if self.s.order == 2:
            loss, lat = self.second_order(xa, ya, xw, yw)
        else:
            loss_t, lat = self.arch_loss(xa, ya, self.soft())
            loss_t.backward()
            loss = float(loss_t.detach())
        self.a_opt.step()
        return loss, lat

    def second_order(self, xa: torch.Tensor, ya: torch.Tensor, xw: torch.Tensor,
                     yw: torch.Tensor) -> tuple[float, float]:
        """DARTS-V2: grad_a L_val(w', a) - xi [grad_a L_train(w+) - grad_a L_train(w-)] / 2eps, w' one SGD step."""
        names, params = zip(*[(n, p) for n, p in self.net.named_parameters()])
        xi, alphas = self.w_opt.param_groups[0]["lr"], self.ap.arch_parameters()
        soft = self.soft()
        with self.net.mixed(_detached(soft)):
            gw = torch.autograd.grad(F.cross_entropy(self.net(xw), yw), params, allow_unused=True)
        virtual = {}
        for n, p, g in zip(names, params, gw):
            buf = self.w_opt.state.get(p, {}).get("momentum_buffer")
            step = (0 if g is None else g) + self.s.w_wd * p.detach()
            step = step + (0 if buf is None else self.s.w_momentum * buf)
            virtual[n] = (p.detach() - xi * step).requires_grad_()
        loss, lat = self.arch_loss(xa, ya, soft, virtual)
        grads = torch.autograd.grad(loss, [*alphas, *virtual.values()], allow_unused=True)
        da, dw = grads[:len(alphas)], [torch.zeros_like(v) if g is None else g for v, g in
                                       zip(virtual.values(), grads[len(alphas):])]
        eps = 0.01 / torch.sqrt(sum((g * g).sum() for g in dw)).clamp_min(1e-12)
        hess = []
        for sign in (1.0, -1.0):
            shifted = {n: p.detach() + sign * eps * g for n, p, g in zip(names, params, dw)}
            with self.net.mixed(self.soft()):
                lt = F.cross_entropy(functional_call(self.net, shifted, (xw,)), yw)
            hess.append(torch.autograd.grad(lt, alphas, allow_unused=True))
        for a, g, hp, hm in zip(alphas, da, *hess):
            a.grad = _z(g, a) - xi * (_z(hp, a) - _z(hm, a)) / (2 * eps)
        return float(loss.detach()), lat

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.w_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            soft = self.soft()
        with self.net.mixed(soft):
            loss = F.cross_entropy(self.net(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.s.grad_clip)
        self.w_opt.step()
        return float(loss.detach())

    def run_epoch(self) -> dict[str, Any]:
        self.net.train()
        t0, w_losses, a_losses, lats = time.perf_counter(), [], [], []
        search_alpha = self.epoch >= self.s.warmup_epochs
        for step in range(self.steps):
            xw, yw = self.batch(self.w_idx, step)
            if search_alpha:
                xa, ya = self.batch(self.a_idx, step)
                a_loss, lat = self.alpha_step(xa, ya, xw, yw)
                a_losses.append(a_loss)
                lats.append(lat)
            w_losses.append(self.weight_step(xw, yw))
        self.sched.step()
        arch = self.derive()
        row = {"epoch": self.epoch + 1, "tau": self.tau() if self.s.mode == "fbnet" else None,
               "alpha_frozen": not search_alpha, "entropy": self.ap.mean_entropy(),
               "w_loss": float(np.mean(w_losses)), "a_loss": float(np.mean(a_losses)) if a_losses else None,
               "expected_latency": float(np.mean(lats)) if lats and self.latency else None,
               "derived_latency": self.latency.price(arch) if self.latency else None,
               "latency_target": self.s.lat_target,
               "arch_id": self.net.space.arch_id(arch), "arch": self.net.space.to_dict(arch),
               "seconds": time.perf_counter() - t0}
        self.history.append(row)
        self.epoch += 1
        return row

    def derive(self) -> Any:
        """The argmax architecture, or with a latency target the most probable one priced within the tolerance."""
        if self.latency is not None and self.s.lat_target is not None and self.s.derive != "argmax":
            picked, _ = derive_near_target(self.ap.probs(), self.ap.choices, self.latency, float(self.s.lat_target),
                                           tol=self.s.lat_tolerance, seed=self.s.seed)
        else:
            picked = self.ap.argmax()
        return self.net.derive({**picked, "r": self.r})


def _detached(soft: SoftArch) -> SoftArch:
    return dataclasses.replace(soft, weights={k: v.detach() for k, v in soft.weights.items()},
                               edge_weights={k: v.detach() for k, v in soft.edge_weights.items()})


def _z(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g


def run_dnas(net: Supernet, data: DataModule, settings: DnasSettings, out_dir: str | Path, *,
             latency: ExpectedLatency | None = None, resolution: int | None = None, resume: bool = False,
             device: str | torch.device = "cpu", config: dict[str, Any] | None = None,
             progress: Any = None) -> DnasResult:
    """Search, checkpointing every epoch; then evaluate the argmax arch and write the results directory."""
    out = Path(out_dir)
    ckpt = out / CHECKPOINT
    if settings.lat_target is not None and latency is None:
        raise MixtureError(f"lat_target={settings.lat_target} needs a hardware profile to price the space: add "
                           "+hw=<profile> (e.g. +hw=local_cpu or +hw=macs)")
    if ckpt.exists() and not resume:
        raise MixtureError(f"{out} already holds a search ({CHECKPOINT}); pass resume=true to continue it or "
                           "choose another out_dir")
    r = int(resolution or getattr(net.space, "resolution", 0) or data.image_size)
    search = _Search(net, data, settings, out, latency=latency, resolution=r, device=torch.device(device))
    if resume and ckpt.exists():
        search.load(load_checkpoint(ckpt, map_location=device))
    else:
        torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    while search.epoch < settings.epochs:
        row = search.run_epoch()
        save_checkpoint(ckpt, search.state())
        if progress is not None:
            progress(row)
    arch = search.derive()
    evalset = EvalSet(data, split="val", n_images=settings.eval_images, calib_images=min(500, settings.eval_images),
                      device=device, channels_last=False)
    top1 = evaluate_arch(net, arch, evalset)["top1"]
    seconds = time.perf_counter() - t0
    _write_results(out, net, search, arch, top1, config or {}, seconds)
    return DnasResult(arch=arch, history=search.history, top1=top1, out_dir=out, seconds=seconds)


def _write_results(out: Path, net: Supernet, search: _Search, arch: Any, top1: float, config: dict[str, Any],
                   seconds: float) -> None:
    space, s = net.space, search.s
    weights = save_weights(out / "supernet", net, {"dnas_mode": s.mode, "arch_id": space.arch_id(arch)})
    metrics = {"top1": top1, "macs_M": space.macs(arch) / 1e6}
    objectives = [{"name": "top1", "direction": "max", "expensive": True},
                  {"name": "macs_M", "direction": "min", "expensive": False}]
    if search.latency is not None:
        metrics["latency"] = search.latency.price(arch)
        objectives.append({"name": "latency", "direction": "min", "expensive": False})
    values = np.array([list(metrics.values())], dtype=float)
    signs = np.array([-1.0 if o["direction"] == "max" else 1.0 for o in objectives])
    result = SearchResult(space=space, objectives=objectives, constraints=[], metric_names=list(metrics),
                          X=space.encode(arch)[None, :], values=values, F=values * signs, G=np.zeros((1, 0)),
                          searcher=f"dnas_{s.mode}" + ("_2nd" if s.order == 2 else ""), searcher_config=s.to_dict(),
                          seed=s.seed, budget=s.epochs, seconds=seconds)
    result.save(out, plot=False)
    ranked = result.records(result.front_indices())
    atomic_write_text(out / "front_ranked.json", json.dumps(ranked, indent=1))
    probs = {k: v.tolist() for k, v in search.ap.probs().items()}
    atomic_write_text(out / "history.json", json.dumps({"history": search.history, "final_probs": probs,
                                                        "choices": search.ap.choices}, indent=1, default=str))
    from omegaconf import OmegaConf

    resolved = {**config, "resolved_supernet": str(weights.resolve()), "export_data": config.get("data") or None,
                "supernet": {"name": net.name, "checkpoint": str(weights.resolve())}}  # accuracy was measured
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
    atomic_write_text(out / "EXPORT.md", f"# Exporting the found architecture\n\n```bash\npython -m nas.export "
                                         f"results={out} rank=0 out={out}/subnet_rank0\n```\n")
