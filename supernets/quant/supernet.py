"""Quantised supernet: any registered supernet with every conv/linear wrapped by a :class:`QuantLayer` (EQ-Net).

``QuantSupernet`` serves a :class:`~search_spaces.quant.JointSpace`; ``set_arch(JointArch(arch, policy))``
configures the wrapped supernet with ``arch`` and hands the policy's per-layer settings to the layers in forward
(call) order during each forward pass. The latent weights stay those of the wrapped supernet, so it can be built
from (or loaded into) a trained float supernet of the same kind.

Process-wide switches are context managers that restore every layer's state even on error:
:func:`quantization_mode` (weights and/or activations on/off), :func:`full_precision` and :func:`calibration`.
:func:`calibrate` initialises all quantisers from a calibration batch (L_p clipping search per bit-width), running
as many architectures as needed until every wrapped layer has seen data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from search_spaces.base import require
from search_spaces.errors import MissingCapabilityError
from search_spaces.quant import JointArch, JointSpace
from supernets.base import SUPERNETS, Supernet, create_supernet, grad_norm
from supernets.quant.export import FakeQuantLayer, fake_quant_config, wrap_in_call_order
from supernets.quant.ops import Binding, QuantLayer, adapter_for
from supernets.quant.quantizers import WEIGHT_QUANTIZERS

__all__ = ["QuantSupernet", "weight_quantizer_factory", "quant_layers", "quantization_mode", "full_precision",
           "calibration", "calibrate",
           "input_shape"]

def quant_layers(model: nn.Module) -> list[QuantLayer]:
    return [m for m in model.modules() if isinstance(m, QuantLayer)]


def input_shape(space: JointSpace, arch: Any, batch: int = 1) -> tuple[int, int, int, int]:
    """Image batch shape a subnet of the base space expects (its ``input_shape`` capability)."""
    return (batch, *require(space.base, "input_shape", needed_by="the quantised supernet")(arch))


def _wrap(module: nn.Module, binding: Binding, weight_quantizer: Callable[[int], nn.Module]) -> None:
    for name, child in list(module.named_children()):
        if adapter_for(child) is not None:
            setattr(module, name, QuantLayer(child, binding, weight_quantizer=weight_quantizer))
        else:
            _wrap(child, binding, weight_quantizer)


def weight_quantizer_factory(name: str, kwargs: dict[str, Any] | None = None) -> Callable[[int], nn.Module]:
    """``channels -> quantiser`` of the family ``name`` in :data:`WEIGHT_QUANTIZERS`; an unknown name or a wrong
    keyword is a :class:`~search_spaces.errors.BadInputError` naming what is allowed."""
    kwargs = dict(kwargs or {})
    WEIGHT_QUANTIZERS.create(name, channels=1, **kwargs)  # validates the name and the keywords
    return functools.partial(WEIGHT_QUANTIZERS.get(name), **kwargs)


@SUPERNETS.register("quant")
class QuantSupernet(Supernet):
    """A supernet of ``space.base`` (``base`` names it; default: the space's ``supernet_name``) with quantised
    layers; ``quantizer`` names the weight quantiser family (``eqnet``: per-bit tables; ``double_rounding``: one
    8-bit integer copy, lower bits by rounding shifts) and ``quantizer_kwargs`` its options."""

    name = "quant"
    inner: Supernet

    def __init__(self, space: JointSpace, *, base: str | None = None, base_kwargs: dict[str, Any] | None = None,
                 quantizer: str = "eqnet", quantizer_kwargs: dict[str, Any] | None = None) -> None:
        if not isinstance(space, JointSpace):
            raise TypeError(f"the quant supernet needs a JointSpace (e.g. create_space('quant_nb201_tiny')), "
                            f"got {type(space).__name__}")
        if base is None:
            base = space.base.supernet_name
            if base is None:
                raise MissingCapabilityError(space.base, "supernet_name",
                                             needed_by="the quantised supernet; or pass base=<registered supernet>")
        factory = weight_quantizer_factory(quantizer, quantizer_kwargs)
        super().__init__(space)
        self.base_name = base
        self.quantizer, self.quantizer_kwargs = quantizer, dict(quantizer_kwargs or {})
        self.inner = create_supernet(base, space.base, **(base_kwargs or {}))
        self.binding = Binding()
        _wrap(self.inner, self.binding, factory)
        self._configs: list[Any] = []
        self.set_arch(space.policy_for(space.fixed_arch or space.base.max_arch(), 8, 8))

    def spec(self) -> dict[str, Any]:
        return {"base": self.base_name, "base_kwargs": self.inner.spec(), "quantizer": self.quantizer,
                "quantizer_kwargs": self.quantizer_kwargs}

    def no_weight_decay(self) -> set[str]:
        """Quantiser step sizes and offsets (timm's optimizer factory exempts these names from weight decay)."""
        return {n for n, _ in self.named_parameters() if ".wq." in n or ".aq." in n}

    def _apply_arch(self, joint: JointArch) -> None:
        self.inner.set_arch(joint.arch)
        self._configs = joint.policy.active_layers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.binding.start(self._configs)
        try:
            y = self.inner(x)
        except BaseException:
            self.binding.open = False
            raise
        self.binding.finish()
        return y

    def gene_grad_norms(self, joint: JointArch) -> np.ndarray:
        """PA&DA credit per gene, after backward of ``joint``: the architecture genes as the wrapped supernet credits
        them; a slot's weight- and activation-bit genes (and its per-layer modes) the quantised layer at that slot
        (its weights and quantisers); global modes every quantised layer that ran. Inactive genes get 0."""
        sp: JointSpace = self.space  # type: ignore[assignment]
        calls = self.binding.calls
        slots = np.flatnonzero(sp.lay.active(joint.arch))
        if len(calls) != len(slots):
            raise RuntimeError("gene_grad_norms needs the forward/backward of this architecture to have run last")
        per_slot = np.zeros(len(sp.slots))
        per_slot[slots] = [grad_norm(layer) for layer in calls]
        base = [] if sp.fixed_arch is not None else [self.inner.gene_grad_norms(joint.arch)]  # type: ignore[operator]
        free = sp._free_slots()
        modes = np.full(3, per_slot.sum()) if sp.mode_scope == "global" else np.repeat(per_slot, 3)
        return np.concatenate([*base, modes, per_slot[free], per_slot[free]])

    @torch.no_grad()
    def trace(self, joint: JointArch | None = None) -> list[QuantLayer]:
        """The quantised layers that run for ``joint``, in call order (one eval-mode forward on zeros)."""
        joint = self.arch if joint is None else joint
        modes = {m: m.training for m in self.modules()}
        try:
            self.eval()
            with self.use(joint):
                self(torch.zeros(input_shape(self.space, joint.arch), device=_device(self)))  # type: ignore[arg-type]
                return list(self.binding.calls)
        finally:
            for m, mode in modes.items():
                m.training = mode

    @contextmanager
    def unwrapped(self) -> Iterator[Supernet]:
        """The wrapped float supernet with its original layers put back (for its own export), re-wrapped on exit."""
        swaps = [(parent, name, child) for parent in self.inner.modules()
                 for name, child in parent.named_children() if isinstance(child, QuantLayer)]
        try:
            for parent, name, child in swaps:
                setattr(parent, name, child.op)
            yield self.inner
        finally:
            for parent, name, child in swaps:
                setattr(parent, name, child)

    def _export(self, joint: JointArch) -> tuple[nn.Module, dict[str, Any]]:
        calls = self.trace(joint)
        with self.unwrapped() as inner:
            float_export = inner.export(joint.arch)
        configs = joint.policy.active_layers()
        params = [layer_export_params(q, cfg) for q, cfg in zip(calls, configs)]
        shape = input_shape(self.space, joint.arch)  # type: ignore[arg-type]
        module = wrap_in_call_order(float_export.module, shape,
                                    lambda i, op: FakeQuantLayer(op, configs[i], params[i][0]))
        layers = [m for m in module.modules() if isinstance(m, FakeQuantLayer)]
        for layer, q, cfg, (_, tensors) in zip(layers, calls, configs, params):
            weight = q.wq.export_weight(layer.op.weight, cfg.w_bits, cfg.per_channel, cfg.w_symmetric)
            layer.load_params(**tensors, weight=weight)
        return module, fake_quant_config(float_export.config, shape, configs, [p[0] for p in params])


def layer_export_params(layer: QuantLayer, cfg: Any) -> tuple[bool, dict[str, torch.Tensor]]:
    """(unsigned activations, effective step sizes and integer zero points) of one running layer."""
    out_c = _active_out(layer)
    w_scale, w_zero = layer.wq.effective(cfg.w_bits, cfg.per_channel, cfg.w_symmetric, out_c)
    a_scale, a_zero = layer.aq.effective(cfg.a_bits, cfg.a_symmetric)
    return bool(layer.aq.unsigned), {"w_scale": w_scale.reshape(-1), "w_zero": w_zero.reshape(-1),
                                     "a_scale": a_scale.reshape(()), "a_zero": a_zero.reshape(())}


def _active_out(layer: QuantLayer) -> int:
    for attr in ("active_out", "active_channels"):
        value = getattr(layer.op, attr, None)
        if value is not None:
            return int(value)
    return int(layer.adapter.full_weight(layer.op).size(0))


def _at_resolution(images: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(hw):
        return images
    return torch.nn.functional.interpolate(images, size=hw, mode="bilinear", align_corners=False)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def quantization_mode(model: nn.Module, *, weights: bool = True, acts: bool = True) -> Iterator[nn.Module]:
    """Switch weight / activation fake quantisation of every quantised layer; previous flags restored on exit."""
    layers = quant_layers(model)
    saved = [(q.quantize_weights, q.quantize_acts) for q in layers]
    try:
        for q in layers:
            q.quantize_weights, q.quantize_acts = weights, acts
        yield model
    finally:
        for q, (w, a) in zip(layers, saved):
            q.quantize_weights, q.quantize_acts = w, a


def full_precision(model: nn.Module) -> Any:
    """``with full_precision(net):`` runs the latent float network."""
    return quantization_mode(model, weights=False, acts=False)


@contextmanager
def calibration(model: nn.Module, *, steps: int = 80, max_samples: int = 1 << 14,
                generator: torch.Generator | None = None) -> Iterator[nn.Module]:
    """Inside, each quantised layer not yet initialised runs in float and initialises its quantisers from its
    input and weight (``steps`` clipping ranges; per-tensor searches on ``max_samples`` values, subsampled with
    ``generator``: None draws from torch's global generator); flags restored on exit."""
    layers = quant_layers(model)
    saved = [(q.calibrating, q.calibration_options) for q in layers]
    options = {"steps": steps, "max_samples": max_samples, "generator": generator}
    try:
        for q in layers:
            q.calibrating, q.calibration_options = True, options
        yield model
    finally:
        for q, (c, opts) in zip(layers, saved):
            q.calibrating, q.calibration_options = c, opts


@torch.no_grad()
def calibrate(net: QuantSupernet, images: torch.Tensor, *, archs: Sequence[JointArch] = (), max_random: int = 32,
              seed: int = 0, steps: int = 80, max_samples: int = 1 << 14) -> int:
    """Initialise every quantiser of ``net`` from a calibration batch; returns the number of architectures run.

    Runs ``archs`` (default: the largest architecture), then seeded random architectures until every quantised
    layer has been initialised (with a fixed architecture: every layer it runs); BN statistics and train/eval
    flags are left as they were. ``seed`` fixes both those architectures and the values the quantisers' range
    searches subsample, so the same call gives the same quantisers whatever torch's global generator holds.
    """
    space: JointSpace = net.space  # type: ignore[assignment]
    layers = quant_layers(net)
    for q in layers:
        q.aq.initialized.fill_(False)
        q.wq.initialized.fill_(False)
    rng = np.random.default_rng(seed)
    todo = list(archs) or [space.policy_for(space.fixed_arch or space.base.max_arch(), 8, 8)]
    modes = {m: m.training for m in net.modules()}
    runs = 0
    try:
        net.eval()
        with calibration(net, steps=steps, max_samples=max_samples, generator=torch.Generator().manual_seed(seed)):
            # a fixed architecture never runs the other layers: one pass initialises all that can run
            while not all(bool(q.aq.initialized) for q in layers) and not (space.fixed_arch is not None and runs):
                if not todo:
                    if runs >= len(archs) + max_random:
                        missing = [n for n, m in net.named_modules() if isinstance(m, QuantLayer)
                                   and not bool(m.aq.initialized)]
                        raise RuntimeError(f"{len(missing)} quantised layers never ran during calibration "
                                           f"(e.g. {missing[:3]}); pass archs= that use them")
                    todo.append(space.sample(rng))
                joint = todo.pop(0)
                with net.use(joint):
                    net(_at_resolution(images, input_shape(space, joint.arch)[2:]))
                runs += 1
    finally:
        for m, mode in modes.items():
            m.training = mode
    return runs
