"""Sample-level DP-SGD for small heads on cached embeddings.

Implements differentially private SGD as in Abadi et al., "Deep Learning with Differential
Privacy", CCS 2016: at each step every record joins the batch independently with probability
``q = min(1, batch_size / n)`` (Poisson sampling), each record's gradient is clipped to L2 norm
``max_grad_norm``, the clipped gradients are summed, Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` is added, and the sum is divided by the *expected* batch
size ``q * n`` (Opacus' convention; it keeps the sensitivity of the average fixed). The result
is handed to an ordinary optimizer (Adam or SGD); post-processing does not spend privacy.
The accountant (RDP / PRV) assumes exactly this: ``steps`` draws at ``sample_rate`` with one
noise multiplier, which :class:`PrivateTrainingResult` reports for the privacy ledger.

How per-sample gradients are computed
-------------------------------------
DP-SGD's cost is the per-sample gradient. ``benchmarks/dp_overhead.py`` times one epoch of
the ``threat_intel`` head (384 -> 128 -> (8, 4), expected batch 32, Adam, 2 CPU cores)
relative to the same epoch without DP (``train_head``). Measured over several runs on a shared
machine: Opacus' stock ``make_private`` 3.5-3.9x with hooks (its default), 3.2-3.7x with
expanded weights, 5.1-5.6x with functorch; ``torch.func`` ``vmap(grad(...))`` here 4-5x; the
"taps" path below 1.3-1.4x (1.35-1.4x per record processed), of which about 0.15x is drawing
the Gaussian noise itself (one normal per parameter per step, which every DP-SGD
implementation pays).

So meshfl computes per-sample gradients itself ("taps"), for models whose trainable
parameters all belong to ``nn.Linear`` layers (meshfl's heads). A forward hook records each
layer's input ``a`` and output ``z``; one ``autograd.grad`` of the summed loss with respect to
the outputs gives each record's ``g_i = dl_i/dz_i``. Record ``i``'s gradient is then
``g_i a_iᵀ`` for the weight and ``g_i`` for the bias, so for 2-D inputs its squared norm is
``‖g_i‖² (‖a_i‖² + 1)`` without materialising it, and the clipped sum is one matrix product
``(c ⊙ g)ᵀ a`` (the norm identity of Goodfellow, arXiv:1510.01799, behind "ghost clipping",
Li et al., ICLR 2022). The backward pass skips the weight-gradient products that a plain
step computes, so clipping costs little beyond the noise. Layers called twice or on sequence
inputs are materialised per sample (``(B, out, in)``), still exactly. Any other model falls
back to ``torch.func`` (``vmap(grad_and_value(...))`` over ``functional_call``): general,
slower. On the first step the taps are checked against autograd's batch gradient; a model
that uses a layer's weights outside the layer's ``forward`` or overwrites a layer's output
in place fails that check and falls back, with a warning. The tests check both paths
against a per-record loop and against Opacus' ``GradSampleModule`` + ``DPOptimizer``.

Randomness
----------
The Poisson sampling and the noise come from :mod:`meshfl.privacy.noise`: ``torch.Generator``
objects seeded, at every :func:`train_private` call, from the operating system's entropy.
Nothing the caller passes reaches them, ``seed`` included: noise regenerated from a public
seed could be subtracted from the release, and batches known to an observer void the
amplification by subsampling that the accountant counts. Two runs with the same seed
therefore differ. ``seed`` seeds only the dropout masks (torch's global generator, reseeded
inside a forked RNG state, so the caller's state is restored): each record's gradient is
clipped whatever its mask, so the masks are not part of the mechanism, and knowing them
tells nothing about the noise. Draws on CUDA use a CUDA generator, also seeded from the OS.

Seeding from OS entropy is what Opacus' "secure_mode" warning is about, so it does not
apply here. Two caveats remain (see :mod:`meshfl.privacy.noise`): the generators themselves
are fast, not cryptographically secure, streams with secret seeds, and the noise is not
hardened against floating-point attacks (Mironov, CCS 2012), which Opacus' ``secure_mode``
mitigates by summing several draws per coordinate.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from meshfl.config.errors import ConfigError, MeshflError
from meshfl.privacy import noise as _noise
from meshfl.privacy.noise import noise_torch_generator

if TYPE_CHECKING:
    from meshfl.privacy.budget import DPStep
    from meshfl.privacy.events import PrivacyEvent

__all__ = [
    "BatchFn",
    "DPIncompatibleModelError",
    "PrivateTrainingResult",
    "check_dp_compatible",
    "clip_factors",
    "per_sample_gradients",
    "poisson_schedule",
    "private_gradient",
    "train_planned",
    "train_private",
]

LossFn = Callable[[Any, torch.Tensor], torch.Tensor]
Method = Literal["auto", "taps", "vmap"]

# Opacus adds this to the per-sample norm before dividing; matched so results agree exactly.
_NORM_EPS = 1e-6


class DPIncompatibleModelError(MeshflError, ValueError):
    """A model DP-SGD cannot train: a layer mixes the records of a batch, or Opacus rejects it."""


@dataclass(frozen=True)
class PrivateTrainingResult:
    """What one call of :func:`train_private` did.

    Parameters
    ----------
    loss : float
        Mean training loss over the records processed in the last epoch. It is computed from
        the raw data and is *not* differentially private: log it locally, do not send it.
    steps : int
        Noisy optimizer steps taken (for the accountant).
    sample_rate : float
        Poisson sampling rate ``min(1, batch_size / n)`` (for the accountant).
    """

    loss: float
    steps: int
    sample_rate: float


# --------------------------------------------------------------------------- validation


def check_dp_compatible(module: nn.Module) -> None:
    """Raise :class:`DPIncompatibleModelError` if DP-SGD cannot train ``module``.

    Uses Opacus' ``ModuleValidator`` and, beyond it, rejects every BatchNorm layer, also
    frozen or affine-free ones, which Opacus lets through although they still normalise with
    batch statistics in training mode. The model's train/eval mode is not checked:
    :func:`train_private` switches to training mode itself.

    Examples
    --------
    >>> from torch import nn
    >>> check_dp_compatible(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    >>> check_dp_compatible(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)))
    ... # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    DPIncompatibleModelError: DP-SGD cannot train this model: BatchNorm1d at '1'. BatchNorm ...
    """
    # Opacus is imported here, not at module level: importing it costs ~2 s, which every
    # Flower ClientApp process (one per message in a deployment) would otherwise pay.
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator
    from opacus.validators.errors import IllegalModuleConfigurationError

    errors = [
        e
        for e in ModuleValidator.validate(module, strict=False)
        if not isinstance(e, IllegalModuleConfigurationError)  # training mode: we set it
    ]
    batch_norms = [
        (name, type(sub).__name__, any(p.requires_grad for p in sub.parameters(recurse=False)))
        for name, sub in module.named_modules()
        if isinstance(sub, nn.modules.batchnorm._BatchNorm)
    ]
    others: list[tuple[str, str, str]] = []
    for name, sub in trainable_modules(module):
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            continue
        validator = ModuleValidator.VALIDATORS.get(type(sub))
        for error in validator(sub) if validator is not None else []:
            others.append((name, type(sub).__name__, str(error)))
    if not errors and not batch_norms:
        return
    parts: list[str] = []
    if batch_norms:
        where = ", ".join(f"{kind} at '{name or '<root>'}'" for name, kind, _ in batch_norms)
        parts.append(
            f"{where}. BatchNorm normalises each record with statistics of the whole batch, so "
            "a record's output, and its gradient, depend on the other records in the batch: "
            "the per-sample gradient that DP-SGD clips to bound one record's influence is not "
            "defined. Replace BatchNorm with GroupNorm or LayerNorm, e.g. "
            "`model = opacus.validators.ModuleValidator.fix(model)`, or train one of meshfl's "
            "heads (meshfl.models.heads.MultiTaskHead), which have none"
        )
        untrainable = [
            f"'{name or '<root>'}'" for name, _, trainable in batch_norms if not trainable
        ]
        if untrainable:
            parts[-1] += (
                f" (ModuleValidator.fix only replaces BatchNorm layers with trainable parameters; "
                f"replace {', '.join(untrainable)} by hand)"
            )
    if others:
        parts.append(
            "; ".join(f"{kind} at '{name or '<root>'}': {reason}" for name, kind, reason in others)
            + " Replace these layers, e.g. `model = opacus.validators.ModuleValidator.fix(model)`"
        )
    elif errors and not batch_norms:  # Opacus objected to something we could not name
        parts.append("; ".join(str(e) for e in errors))
    raise DPIncompatibleModelError("DP-SGD cannot train this model: " + ". ".join(parts) + ".")


# --------------------------------------------------------------------------- pure pieces


def clip_factors(per_sample_norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """Per-record factors ``min(1, C / (‖g_i‖ + 1e-6))`` that scale gradients to norm ≤ C.

    Same formula as Opacus' ``DPOptimizer``, so the two agree to rounding.

    Examples
    --------
    >>> clip_factors(torch.tensor([0.5, 4.0]), 2.0)
    tensor([1.0000, 0.5000])
    """
    return (max_grad_norm / (per_sample_norms + _NORM_EPS)).clamp(max=1.0)


# --------------------------------------------------------------------------- per-sample grads


class _BatchGrads:
    """Per-sample gradients of one batch, kept in whatever form is cheapest."""

    loss: float  # mean loss over the batch
    sq_norms: torch.Tensor  # (B,) squared L2 norm of each record's whole gradient

    def add_weighted_(self, weights: torch.Tensor, out: Sequence[torch.Tensor]) -> None:
        """Add ``sum_i weights[i] * grad_i`` to ``out`` (one tensor per parameter), in place."""
        raise NotImplementedError

    def materialize(self) -> list[torch.Tensor]:
        """Each parameter's per-sample gradients, shape ``(B, *param.shape)``."""
        raise NotImplementedError

    def weighted_sum(
        self, weights: torch.Tensor, params: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """``sum_i weights[i] * grad_i``, one new tensor per parameter."""
        out = [torch.zeros_like(p) for p in params]
        self.add_weighted_(weights, out)
        return out


class _EmptyBatch(_BatchGrads):
    """A Poisson draw that selected nobody: zero gradient (noise is still added)."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params, self.loss = params, 0.0
        self.sq_norms = torch.zeros(0, device=params[0].device if params else None)

    def add_weighted_(self, weights: torch.Tensor, out: Sequence[torch.Tensor]) -> None:
        pass

    def materialize(self) -> list[torch.Tensor]:
        return [torch.zeros(0, *p.shape, dtype=p.dtype, device=p.device) for p in self.params]


class _VmapGrads(_BatchGrads):
    def __init__(self, grads: list[torch.Tensor], losses: torch.Tensor):
        self.grads = grads
        self.loss = float(losses.mean())
        self.sq_norms = sum(
            (g.reshape(len(g), -1).pow(2).sum(1) for g in grads),
            torch.zeros(len(losses), dtype=losses.dtype, device=losses.device),
        )

    def add_weighted_(self, weights: torch.Tensor, out: Sequence[torch.Tensor]) -> None:
        for o, g in zip(out, self.grads, strict=True):
            o.add_(torch.tensordot(weights, g, dims=1))

    def materialize(self) -> list[torch.Tensor]:
        return self.grads


class _VmapEngine:
    """Per-sample gradients of any module with ``torch.func`` (general, slower)."""

    def __init__(self, module: nn.Module, loss_fn: LossFn):
        self.module = module
        self.names = [n for n, p in module.named_parameters() if p.requires_grad]
        self.params = [p for p in module.parameters() if p.requires_grad]

        def one_loss(
            params: dict[str, torch.Tensor],
            frozen: dict[str, torch.Tensor],
            x: torch.Tensor,
            y: torch.Tensor,
        ) -> torch.Tensor:
            out = functional_call(module, (params, frozen), (x.unsqueeze(0),))
            return loss_fn(out, y.unsqueeze(0))

        self._grads = vmap(
            grad_and_value(one_loss), in_dims=(None, None, 0, 0), randomness="different"
        )

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> _BatchGrads:
        params = {n: p.detach() for n, p in zip(self.names, self.params, strict=True)}
        frozen = {n: p.detach() for n, p in self.module.named_parameters() if not p.requires_grad}
        frozen.update(dict(self.module.named_buffers()))
        grads, losses = self._grads(params, frozen, x, y)
        return _VmapGrads([grads[n] for n in self.names], losses.detach())


class _TapsGrads(_BatchGrads):
    """Per-sample gradients of linear layers, as (input, output-gradient) pairs per layer.

    A layer called once on 2-D input keeps ``(a, g)`` and is never materialised ("ghost"):
    record i's gradient is ``g_i a_iᵀ`` (weight) and ``g_i`` (bias). Other layers (sequence
    inputs, or called twice) are materialised as ``(B, out, in)`` and ``(B, out)``.
    """

    def __init__(
        self,
        plan: list[tuple[nn.Linear, bool]],
        taps: dict[nn.Linear, list[tuple[torch.Tensor, torch.Tensor]]],
        batch: int,
        loss: float,
        dtype: torch.dtype,
    ):
        self.plan, self.batch, self.loss = plan, batch, loss
        self.ghost: dict[nn.Linear, tuple[torch.Tensor, torch.Tensor]] = {}
        self.full: dict[nn.Linear, tuple[torch.Tensor, torch.Tensor]] = {}
        device = plan[0][0].weight.device if plan else None
        sq = torch.zeros(batch, dtype=dtype, device=device)
        input_sq: dict[tuple[int, torch.Size], torch.Tensor] = {}  # task heads share an input
        for layer, pairs in taps.items():
            weight, bias = layer.weight.requires_grad, _bias_trainable(layer)
            if len(pairs) == 1 and pairs[0][0].dim() == 2:
                a, g = pairs[0]
                self.ghost[layer] = (a, g)
                gg = torch.linalg.vecdot(g, g)
                if weight:
                    key = (a.data_ptr(), a.shape)
                    if key not in input_sq:
                        input_sq[key] = torch.linalg.vecdot(a, a)
                    # ‖g_i a_iᵀ‖_F² + ‖g_i‖² = ‖g_i‖² (‖a_i‖² + 1)
                    sq.addcmul_(gg, input_sq[key] + 1.0 if bias else input_sq[key])
                elif bias:
                    sq.add_(gg)
            else:
                w_i = torch.zeros(batch, *layer.weight.shape, dtype=dtype, device=device)
                b_i = torch.zeros(batch, layer.out_features, dtype=dtype, device=device)
                for a, g in pairs:
                    g3 = g.reshape(batch, -1, g.shape[-1])
                    w_i.baddbmm_(g3.transpose(1, 2), a.reshape(batch, -1, a.shape[-1]))
                    b_i.add_(g3.sum(1))
                self.full[layer] = (w_i, b_i)
                if weight:
                    sq.add_(w_i.square().sum((1, 2)))
                if bias:
                    sq.add_(b_i.square().sum(1))
        self.sq_norms = sq

    def add_weighted_(self, weights: torch.Tensor, out: Sequence[torch.Tensor]) -> None:
        for o, (layer, is_weight) in zip(out, self.plan, strict=True):
            if layer in self.ghost:
                a, g = self.ghost[layer]
                if is_weight:
                    o.addmm_((g * weights[:, None]).T, a)
                else:
                    o.addmv_(g.T, weights)
            elif layer in self.full:
                o.add_(torch.tensordot(weights, self.full[layer][0 if is_weight else 1], dims=1))
            # else: the layer did not reach this batch's loss; its gradient is zero

    def materialize(self) -> list[torch.Tensor]:
        out = []
        for layer, is_weight in self.plan:
            p = layer.weight if is_weight else layer.bias
            assert p is not None
            if layer in self.ghost:
                a, g = self.ghost[layer]
                out.append(g[:, :, None] * a[:, None, :] if is_weight else g)
            elif layer in self.full:
                out.append(self.full[layer][0 if is_weight else 1])
            else:
                out.append(torch.zeros(self.batch, *p.shape, dtype=p.dtype, device=p.device))
        return out


def _bias_trainable(layer: nn.Linear) -> bool:
    return layer.bias is not None and layer.bias.requires_grad


class _TapsEngine:
    """Per-sample gradients of models whose trainable parameters all sit in ``nn.Linear``."""

    def __init__(self, module: nn.Module, loss_fn: LossFn):
        self.module, self.loss_fn = module, loss_fn
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.owners: dict[int, tuple[nn.Linear, str]] = {}
        for sub in module.modules():
            # exact type: subclasses (e.g. MultiheadAttention's out_proj) may bypass forward()
            if type(sub) is nn.Linear:
                self.owners[id(sub.weight)] = (sub, "weight")
                if sub.bias is not None:
                    self.owners[id(sub.bias)] = (sub, "bias")
        self.plan = [
            (self.owners[id(p)][0], self.owners[id(p)][1] == "weight") for p in self.params
        ]
        self.layers = {layer for layer, _ in self.plan}
        # (layer, its input detached, its output, versions of both when recorded)
        self._records: list[tuple[nn.Linear, torch.Tensor, torch.Tensor, int]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @classmethod
    def supports(cls, module: nn.Module) -> bool:
        linear = {id(p) for m in module.modules() if type(m) is nn.Linear for p in m.parameters()}
        trainable = [p for p in module.parameters() if p.requires_grad]
        return bool(trainable) and all(id(p) in linear for p in trainable)

    def open(self) -> None:
        """Hook the layers (kept for a whole training run: re-hooking each step costs)."""
        if not self._handles:
            self._handles = [layer.register_forward_hook(self._record) for layer in self.layers]

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._records = [], []

    def _record(
        self, layer: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor
    ) -> None:
        a = inputs[0].detach()  # shares the input's version counter
        self._records.append((layer, a, out, out._version + a._version))  # type: ignore[arg-type]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, check: bool = False) -> _BatchGrads:
        batch = len(x)
        self._records = []
        loss = self.loss_fn(self.module(x), y)
        records = [r for r in self._records if r[2].requires_grad]
        self._records = []
        if any(out._version + a._version != version for _, a, out, version in records):
            raise _TapsMismatchError("a linear layer's input or output was modified in place")
        # loss_fn averages over the batch; scaling by B makes each g_i = dl_i/dz_i
        grads = torch.autograd.grad(
            loss * batch, [out for _, _, out, _ in records], allow_unused=True, retain_graph=check
        )
        taps: dict[nn.Linear, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for (layer, a, _, _), g in zip(records, grads, strict=True):
            if g is not None:
                taps.setdefault(layer, []).append((a, g))
        result = _TapsGrads(self.plan, taps, batch, float(loss.detach()), x.dtype)
        if check:
            reference = torch.autograd.grad(loss * batch, self.params, allow_unused=True)
            summed = result.weighted_sum(
                torch.ones(batch, dtype=x.dtype, device=x.device), self.params
            )
            for ours, ref in zip(summed, reference, strict=True):
                ref = torch.zeros_like(ours) if ref is None else ref
                scale = float(ref.abs().max()) if ref.numel() else 0.0
                if not torch.allclose(ours, ref, rtol=1e-3, atol=1e-5 * max(scale, 1.0)):
                    raise _TapsMismatchError("summed per-sample gradients differ from autograd")
        return result


class _TapsMismatchError(RuntimeError):
    """The taps engine cannot see all of the model's gradient; use torch.func instead."""


class _PerSample:
    """Picks and runs a per-sample gradient engine, falling back to torch.func if needed."""

    def __init__(self, module: nn.Module, loss_fn: LossFn, method: Method):
        if method not in ("auto", "taps", "vmap"):
            raise ConfigError(
                f"The 'method' parameter must be one of 'auto', 'taps', 'vmap'. Got {method!r}."
            )
        if method == "taps" and not _TapsEngine.supports(module):
            raise ConfigError(
                "The 'method' parameter 'taps' needs every trainable parameter to belong to an "
                "nn.Linear layer; this model has others. Use method='auto' or 'vmap'."
            )
        self.module, self.loss_fn, self.method = module, loss_fn, method
        use_taps = method == "taps" or (method == "auto" and _TapsEngine.supports(module))
        self.engine: _TapsEngine | _VmapEngine = (
            _TapsEngine(module, loss_fn) if use_taps else _VmapEngine(module, loss_fn)
        )
        self.params = self.engine.params
        self._checked = not use_taps

    def __enter__(self) -> _PerSample:
        if isinstance(self.engine, _TapsEngine):
            self.engine.open()
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.engine, _TapsEngine):
            self.engine.close()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> _BatchGrads:
        """Per-sample gradients of one non-empty batch; call inside ``with self:``."""
        if isinstance(self.engine, _VmapEngine):
            return self.engine(x, y)
        try:
            result = self.engine(x, y, check=not self._checked)
            self._checked = True
            return result
        except _TapsMismatchError as err:
            if self.method == "taps":
                raise ConfigError(
                    f"The 'method' parameter 'taps' cannot be used for this model ({err}). "
                    "Use method='auto' or 'vmap'."
                ) from err
            warnings.warn(
                f"meshfl DP-SGD: the fast linear-layer path cannot be used for this model "
                f"({err}); falling back to torch.func per-sample gradients, which are slower.",
                UserWarning,
                stacklevel=3,
            )
            self.engine.close()
            self.engine = _VmapEngine(self.module, self.loss_fn)
            self.params = self.engine.params
            return self.engine(x, y)


def per_sample_gradients(
    module: nn.Module,
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_fn: LossFn,
    method: Method = "auto",
) -> dict[str, torch.Tensor]:
    """Each record's gradient of ``loss_fn`` with respect to each trainable parameter.

    Parameters
    ----------
    module : nn.Module
        The model; its current train/eval mode is used.
    features, targets : torch.Tensor
        One batch, records along the first dimension.
    loss_fn : callable
        ``loss_fn(module(features), targets)``: the *mean* over the batch of per-record
        losses, with no term that mixes records (as ``cross_entropy`` with its default
        ``reduction="mean"``).
    method : {"auto", "taps", "vmap"}
        ``"taps"``: hooks on ``nn.Linear`` layers (fast; linear-only models); ``"vmap"``:
        ``torch.func`` (any model); ``"auto"``: taps where possible.

    Returns
    -------
    dict of str to torch.Tensor
        Parameter name to per-sample gradients of shape ``(B, *param.shape)``.
    """
    computer = _PerSample(module, loss_fn, method)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    with computer:
        grads = computer(features, targets).materialize()
    return dict(zip(names, grads, strict=True))


# --------------------------------------------------------------------------- DP-SGD step
#
# One step, named after the stages of Opacus' ``DPOptimizer``: ``add_noise`` (Gaussian noise of
# std ``noise_multiplier * C``), ``clip_and_accumulate`` (each record's gradient clipped to C
# and summed) and ``scale_grad`` (divide by the expected batch size). The scaling is folded
# into the other two, so the buffer holds ``noise / E`` before ``sum_i clip(g_i) / E`` is
# added: one pass over the parameters fewer, the same result to rounding.


class _GradBuffer:
    """One flat buffer holding every trainable parameter's gradient (views per parameter)."""

    def __init__(self, params: Sequence[torch.Tensor]):
        self.sizes = [p.numel() for p in params]
        dtype = params[0].dtype if params else torch.float32
        device = params[0].device if params else torch.device("cpu")
        self.flat = torch.zeros(sum(self.sizes), dtype=dtype, device=device)
        self.views = [
            v.view(p.shape) for v, p in zip(self.flat.split(self.sizes), params, strict=True)
        ]


def _fill_noise(flat: torch.Tensor, std: float, generator: torch.Generator) -> None:
    """Overwrite ``flat`` with N(0, std²) draws (zeros when ``std`` is 0)."""
    if std <= 0:
        flat.zero_()
    elif flat.device == generator.device:
        # one draw for all parameters: same distribution as per-tensor draws, fewer calls
        flat.normal_(0.0, std, generator=generator)
    else:  # a generator on another device: draw there, copy
        drawn = torch.randn(flat.shape, generator=generator, dtype=flat.dtype,
                            device=generator.device)  # fmt: skip
        flat.copy_(drawn.mul_(std))


def _noise_generator(device: torch.device) -> torch.Generator:
    """A fresh OS-seeded generator on ``device`` if torch has one there, else on the CPU."""
    if device.type == "cuda":
        return noise_torch_generator(device)
    return noise_torch_generator()


def _add_clipped(
    buffer: _GradBuffer, batch: _BatchGrads, *, max_grad_norm: float, expected_batch_size: float
) -> None:
    """Add ``sum_i clip(g_i) / E`` to ``buffer``, which already holds noise / E."""
    if len(batch.sq_norms):
        # clip_factors(norms, C) / E, in fewer operations
        weights = batch.sq_norms.sqrt().add_(_NORM_EPS).reciprocal_()
        weights.mul_(max_grad_norm / expected_batch_size).clamp_(max=1.0 / expected_batch_size)
        batch.add_weighted_(weights, buffer.views)


class _Privatizer:
    """Turns one batch's per-sample gradients into the DP-SGD gradient, in ``buffer``.

    ``scale_grad`` is applied up front: the noise is drawn with std ``sigma * C / E`` and each
    clipped gradient is weighted by ``1 / E`` (E: the expected batch size ``q * n``).
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        *,
        noise_multiplier: float,
        max_grad_norm: float,
        expected_batch_size: float,
        generator: torch.Generator | None,
    ):
        self.buffer = _GradBuffer(params)
        self.max_grad_norm, self.expected = max_grad_norm, expected_batch_size
        self.std = noise_multiplier * max_grad_norm / expected_batch_size
        self.generator = (
            generator if generator is not None else _noise_generator(self.buffer.flat.device)
        )

    def add_noise(self) -> None:
        """Overwrite the buffer with N(0, (sigma C / E)²) from the OS-seeded generator."""
        _fill_noise(self.buffer.flat, self.std, self.generator)
        if _noise.observing():  # test-only audit (record_releases_for_tests)
            _noise.report_noise(
                "dp-sgd",
                std=self.std,
                sensitivity=self.max_grad_norm / self.expected,
                drawn=self.buffer.flat,
            )

    def clip_and_accumulate(self, batch: _BatchGrads) -> None:
        """Add ``sum_i clip(g_i, C) / E`` to the noise in the buffer."""
        _add_clipped(
            self.buffer, batch, max_grad_norm=self.max_grad_norm, expected_batch_size=self.expected
        )

    def step(self, batch: _BatchGrads) -> list[torch.Tensor]:
        """Noise, then the clipped sum: the privatised gradient, one view per parameter."""
        self.add_noise()
        self.clip_and_accumulate(batch)
        return self.buffer.views


def private_gradient(
    module: nn.Module,
    features: torch.Tensor,
    targets: torch.Tensor,
    *,
    loss_fn: LossFn,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: float,
    generator: torch.Generator | None = None,
    method: Method = "auto",
) -> dict[str, torch.Tensor]:
    """The DP-SGD gradient of one (already sampled) batch.

    ``(sum_i clip(g_i, max_grad_norm) + N(0, (noise_multiplier * max_grad_norm)^2 I))
    / expected_batch_size``: what Opacus' ``DPOptimizer`` hands to the wrapped optimizer.

    The noise comes from ``generator``, by default a fresh one seeded from OS entropy
    (:func:`meshfl.privacy.noise.noise_torch_generator`). A caller that takes many steps may
    pass one such generator for all of them; it must come from :mod:`meshfl.privacy.noise`
    (a seeded generator is for tests of the arithmetic only).

    Returns
    -------
    dict of str to torch.Tensor
        Parameter name to gradient, for each trainable parameter.
    """
    check_dp_compatible(module)
    computer = _PerSample(module, loss_fn, method)
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    if len(features) == 0:
        batch: _BatchGrads = _EmptyBatch(computer.params)
    else:
        with computer:
            batch = computer(features, targets)
    privatizer = _Privatizer(
        computer.params,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        generator=generator,
    )
    return dict(zip(names, privatizer.step(batch), strict=True))


# --------------------------------------------------------------------------- training loop

BatchFn = Callable[[torch.Tensor], tuple[Any, torch.Tensor]]
"""``batch_fn(indices) -> (inputs, targets)``: the batch of the records at ``indices``.

``indices`` is a 1-D int64 CPU tensor, increasing, never empty; ``inputs`` and ``targets``
hold one row per index, in that order, on the model's device, and ``loss_fn(module(inputs),
targets)`` must be the mean of per-record losses, one per row.
"""


def _check_args(n: int, n_targets: int | None, **values: float) -> None:
    if n == 0:
        raise ConfigError("train_private needs at least one record. Got 0 instead.")
    if n_targets is not None and n_targets != n:
        raise ConfigError(
            f"features and targets must have the same number of rows. Got {n} and {n_targets}."
        )
    rules: dict[str, tuple[Callable[[float], bool], str]] = {
        "epochs": (lambda v: v >= 1 and float(v).is_integer(), "an int >= 1"),
        "batch_size": (lambda v: v >= 1 and float(v).is_integer(), "an int >= 1"),
        "lr": (lambda v: math.isfinite(v) and v > 0, "a float in (0, inf)"),
        "noise_multiplier": (lambda v: math.isfinite(v) and v >= 0, "a float in [0, inf)"),
        "max_grad_norm": (lambda v: math.isfinite(v) and v > 0, "a float in (0, inf)"),
    }
    for name, value in values.items():
        ok, must = rules[name]
        if not ok(value):
            raise ConfigError(
                f"The '{name}' parameter of train_private must be {must}. Got {value!r} instead."
            )


def _check_records(features: Any, targets: Any, batch_fn: BatchFn | None) -> int | None:
    """Validate the records' form; return the number of targets (``None`` with ``batch_fn``)."""
    if batch_fn is None:
        if targets is None:
            raise ConfigError(
                "train_private needs 'targets' (one row per record), or a 'batch_fn' that "
                "builds each batch from the sampled indices. Got neither."
            )
        return len(targets)
    if targets is not None:
        raise ConfigError(
            "train_private takes either 'targets' or a 'batch_fn' (which builds the targets "
            "itself), not both. Pass targets=None with batch_fn."
        )
    return None


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in ("adam", "sgd"):
        raise ConfigError(
            "The 'optimizer' parameter of train_private must be 'adam' or 'sgd'. "
            f"Got {optimizer!r} instead."
        )


def _array_batches(features: np.ndarray, targets: np.ndarray, device: torch.device) -> BatchFn:
    """``batch_fn`` over in-memory arrays: float32 features, int64 targets if integer."""
    x = torch.as_tensor(np.ascontiguousarray(features, dtype=np.float32), device=device)
    y_np = np.ascontiguousarray(targets)
    y = torch.as_tensor(y_np.astype(np.int64) if y_np.dtype.kind in "iub" else y_np, device=device)

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = idx.to(device)
        return x[idx], y[idx]

    return batch


def _batches(
    features: Any, targets: np.ndarray | None, batch_fn: BatchFn | None, device: torch.device
) -> BatchFn:
    """``batch_fn`` itself, or one over the ``features`` and ``targets`` arrays."""
    if batch_fn is not None:
        return batch_fn
    assert targets is not None  # _check_records
    return _array_batches(np.asarray(features), targets, device)


def _poisson_sample(generator: torch.Generator, n: int, q: float) -> torch.Tensor:
    """Indices of the records that join this step, each independently with probability q."""
    idx = (torch.rand(n, generator=generator) < q).nonzero().squeeze(1)
    if _noise.observing():  # test-only (record_releases_for_tests)
        _noise.report_sampling("dp-sgd", rate=q, population=n, drawn=len(idx))
    return idx


@dataclass
class _Loop:
    """The pieces of one :func:`train_private` run that every step uses."""

    computer: _PerSample
    batch_fn: BatchFn
    privatizer: _Privatizer
    optimizer: torch.optim.Optimizer
    sampling: torch.Generator
    n: int
    q: float

    @classmethod
    def start(
        cls,
        computer: _PerSample,
        batch_fn: BatchFn,
        optimizer: torch.optim.Optimizer,
        n: int,
        q: float,
        noise_multiplier: float,
        max_grad_norm: float,
    ) -> _Loop:
        """Fresh OS-seeded generators for the sampling, then the noise (in that order)."""
        # Batches and noise from OS entropy, never from ``seed``: both must stay secret.
        sampling = noise_torch_generator()  # torch.rand(n) on the CPU
        privatizer = _Privatizer(
            computer.params,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=q * n,  # Opacus divides by the expected, not the drawn, size
            generator=_noise_generator(computer.params[0].device),
        )
        return cls(computer, batch_fn, privatizer, optimizer, sampling, n, q)

    def step(self) -> tuple[float, int]:
        """One DP-SGD step: sample, per-sample gradients, noise, clip; (loss sum, records)."""
        idx = _poisson_sample(self.sampling, self.n, self.q)
        if len(idx):
            batch: _BatchGrads = self.computer(*self.batch_fn(idx))
        else:  # nobody sampled: the step is pure noise, as the accountant assumes
            batch = _EmptyBatch(self.computer.params)
        self.privatizer.step(batch)
        self.optimizer.step()
        return batch.loss * len(idx), len(idx)

    def epoch(self, steps: int) -> float:
        """``steps`` steps; the mean loss over the records they processed (nan if none)."""
        total, count = 0.0, 0
        for _ in range(steps):
            loss, drawn = self.step()
            total, count = total + loss, count + drawn
        return total / count if count else float("nan")


def _trainable(computer: _PerSample) -> list[nn.Parameter]:
    if not computer.params:
        raise ConfigError(
            "train_private needs a module with trainable parameters (requires_grad=True). "
            "Got none: every parameter is frozen."
        )
    return computer.params


def _make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


def _run(
    module: nn.Module, loop: _Loop, *, epochs: int, steps_per_epoch: int, seed: int
) -> tuple[float, int]:
    """Run ``epochs`` epochs of ``loop`` on ``module``; (last epoch's loss, steps taken)."""
    params = loop.computer.params
    for p, view in zip(params, loop.privatizer.buffer.views, strict=True):
        p.grad = view  # each step writes the privatised gradient here; the optimizer reads it
    was_training = module.training
    module.train()
    last, steps = 0.0, 0
    try:
        with torch.random.fork_rng(devices=[]), loop.computer:
            # Dropout masks stay seeded (reproducible; the caller's RNG is restored): every
            # record's gradient is clipped whatever its mask, so masks are no part of the
            # mechanism, and knowing them says nothing about the noise.
            torch.manual_seed(seed)
            for _ in range(epochs):
                last = loop.epoch(steps_per_epoch)
                steps += steps_per_epoch
    finally:
        for p in params:
            p.grad = None
        module.train(was_training)
    return last, steps


def train_private(
    module: nn.Module,
    features: np.ndarray | Sized,
    targets: np.ndarray | None = None,
    *,
    loss_fn: LossFn,
    epochs: int,
    batch_size: int,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    seed: int,
    optimizer: str = "adam",
    method: Method = "auto",
    batch_fn: BatchFn | None = None,
) -> PrivateTrainingResult:
    """Train ``module`` in place with DP-SGD (Poisson sampling, per-sample clipping, noise).

    Parameters
    ----------
    module : nn.Module
        Trained in place (its ``requires_grad`` parameters); its train/eval mode is restored.
    features, targets : np.ndarray
        One row per record: inputs (e.g. cached embeddings, cast to float32) and targets
        (e.g. one int column per task, cast to int64 if integer). With ``batch_fn``,
        ``features`` is any sized collection of records and ``targets`` is None.
    loss_fn : callable
        ``loss_fn(module(x), y)`` -> the *mean* over the batch of per-record losses, with no
        term that mixes records (e.g. :func:`meshfl.models.heads.multitask_loss`).
    epochs, batch_size : int
        Each epoch is ``round(1 / q)`` steps; each step includes each record independently
        with probability ``q = min(1, batch_size / n)`` (batch sizes vary, and may be 0).
    lr, optimizer : float, {"adam", "sgd"}
        The optimizer fed with the privatised gradient, and its learning rate.
    noise_multiplier, max_grad_norm : float
        Noise std over C (0: clipping only, no privacy), and the per-record clipping norm C.
    seed : int
        Seeds the dropout masks only. The Poisson sampling and the noise are drawn from
        generators seeded from OS entropy (:mod:`meshfl.privacy.noise`), so two calls with
        equal seeds and data give different models, as differential privacy requires.
    method : {"auto", "taps", "vmap"}
        Per-sample gradient engine (:func:`per_sample_gradients`).
    batch_fn : callable, optional
        ``batch_fn(indices) -> (inputs, targets)`` for the sampled records (see
        :data:`BatchFn`): for records built on demand, such as resource_allocation's days.

    Returns
    -------
    PrivateTrainingResult
        Last-epoch loss (not private), steps taken and sample rate, for the privacy ledger.

    Raises
    ------
    DPIncompatibleModelError, ConfigError
        A layer, such as BatchNorm, mixes the records of a batch; an argument is out of range.

    Examples
    --------
    >>> from meshfl.models.heads import MultiTaskHead, multitask_loss
    >>> x = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    >>> y = np.stack([x[:, 0] > 0, x[:, 1] > 0], axis=1).astype(np.int64)
    >>> result = train_private(MultiTaskHead(16, (2, 2), hidden=8), x, y, loss_fn=multitask_loss,
    ...     epochs=2, batch_size=16, lr=1e-2, noise_multiplier=1.0, max_grad_norm=1.0, seed=0)
    >>> result.steps, result.sample_rate
    (8, 0.25)
    """
    n = len(features)
    _check_args(n, _check_records(features, targets, batch_fn), epochs=epochs,
                batch_size=batch_size, lr=lr, noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm)  # fmt: skip
    _check_optimizer(optimizer)
    check_dp_compatible(module)
    computer = _PerSample(module, loss_fn, method)
    params = _trainable(computer)
    batch_fn = _batches(features, targets, batch_fn, params[0].device)
    q, steps_per_epoch = poisson_schedule(n, batch_size)
    opt = _make_optimizer(optimizer, params, lr)
    loop = _Loop.start(computer, batch_fn, opt, n, q, noise_multiplier, max_grad_norm)
    last, steps = _run(module, loop, epochs=epochs, steps_per_epoch=steps_per_epoch, seed=seed)
    return PrivateTrainingResult(loss=last, steps=steps, sample_rate=q)


def poisson_schedule(n: int, batch_size: int) -> tuple[float, int]:
    """``(sample_rate, steps per epoch)`` of DP-SGD over ``n`` records: what it will spend.

    ``q = min(1, batch_size / n)`` (fewer records than a batch: every step takes them all)
    and ``round(1 / q)`` steps per epoch. Agents plan a round's privacy (``privacy_shape``)
    with it, and :func:`train_private` runs exactly that.
    """
    q = min(1.0, batch_size / max(n, 1))
    return q, max(1, round(1 / q))


def train_planned(
    module: nn.Module,
    features: np.ndarray | Sized,
    targets: np.ndarray | None,
    step: DPStep,
    *,
    loss_fn: LossFn,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    optimizer: str = "adam",
    batch_fn: BatchFn | None = None,
) -> tuple[float, PrivacyEvent]:
    """DP-SGD as a round's plan says; returns the last loss and the event for the ledger.

    ``step`` (from :func:`meshfl.privacy.budget.plan_round`) gives the noise multiplier and
    clipping norm. The run must take exactly the planned steps at the planned sampling rate,
    since the MSP's ledger records the plan: anything else raises instead of under-reporting.
    ``targets`` and ``batch_fn`` are as in :func:`train_private`.
    """
    result = train_private(
        module,
        features,
        targets,
        loss_fn=loss_fn,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        noise_multiplier=step.noise_multiplier,
        max_grad_norm=step.max_grad_norm,
        seed=seed,
        optimizer=optimizer,
        batch_fn=batch_fn,
    )
    if (result.steps, result.sample_rate) != (step.steps, step.sample_rate):
        raise RuntimeError(
            f"DP-SGD ran {result.steps} steps at rate {result.sample_rate}, "
            f"but the round was planned as {step.steps} at {step.sample_rate}"
        )
    return result.loss, step.event()
