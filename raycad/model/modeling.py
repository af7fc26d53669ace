"""Caduceus in pure PyTorch: checkpoint-exact with the authors' Hugging Face code, fast on CPU.

Module tree and state-dict keys are those of the released checkpoints (the ``fused_add_norm`` layout)::

    caduceus.backbone.embeddings.word_embeddings[.embedding].weight     (+ .complement_map buffer for PS)
    caduceus.backbone.layers.{i}.mixer[.submodule].mamba_{fwd,rev}.{A_log,D,in_proj,conv1d,x_proj,dt_proj,out_proj}
    caduceus.backbone.layers.{i}.norm.weight
    caduceus.backbone.norm_f.weight
    score.weight | lm_head[.lm_head].weight (+ lm_head.complement_map)

``mamba_rev.in_proj`` / ``out_proj`` are the *same modules* as ``mamba_fwd``'s (bidirectional weight tying) and
the masked-LM head shares the embedding matrix; checkpoints store tied tensors as separate, equal copies.

Computation is the released math, reorganised for speed (all exact rewrites):

* Activations are time-major ``[length, batch, channels]`` inside the backbone, which is the layout of the
  selective scan (`raycad.model.scan.selective_scan`), so no transposes happen around it.
* A bidirectional layer runs its forward and reversed Mamba as ONE scan over ``2 * d_inner`` channels (B/C as two
  groups), one depthwise conv and, with tied weights, one ``in_proj`` and one ``out_proj``.
* Reverse-complement parameter sharing (PS): the two strands of every layer run as one batch of ``2 * B``;
  the RC embedding and the RC LM head are a single lookup / matmul against ``[W, flip(W[complement])]``, and the
  RC norms are per-half norms with weights ``[w, flip(w)]``.
* The released fused add+norm of a PS block normalises the *second* channel half as the forward strand, so the
  halves trade places at every layer (``fused_add_norm=True``); the unfused variant does not swap. The final norm
  never swaps. raycad reproduces whichever the config says, with the same keys either way.

Post-hoc conjoining (Caduceus-Ph): with ``conjoin_eval`` (or ``conjoin_train``) the classifier runs the backbone
on both strands (``input_ids`` ``[B, L, 2]``, channel 1 = reverse complement; a ``[B, L]`` input is reverse-
complemented on the fly) and averages the two strands' logits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_outputs import (
    BaseModelOutputWithNoAttention,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from raycad.model.configuration import CaduceusConfig
from raycad.model.kernels import fused_kernels
from raycad.model.scan import fused_scan_kernels, scan_path, selective_scan, selective_scan_fused
from raycad.runtime import get_logger

log = get_logger("raycad.model")

WEIGHTS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"

_LOGGED: set[str] = set()
# With the fused scan, the reverse direction of a bidirectional mixer walks time backwards inside the numba conv
# and scan kernels instead of running on flipped copies. False restores the copies (benchmarks, debugging).
REVERSE_IN_KERNELS = True


def _log_once(key: str, message: str) -> None:
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info(message)


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model: lists every missing, unexpected and mis-shaped key."""


# ================================================================================================================
# Building blocks
# ================================================================================================================


class RMSNorm(nn.Module):
    """RMSNorm with mamba_ssm's parameter layout (``weight``; no bias)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


def _normalize(x: Tensor, norm: nn.Module) -> Tensor:
    """``norm``'s normalisation without its affine part, in float32, over the last dim."""
    if isinstance(norm, RMSNorm):
        return F.rms_norm(x.float(), (x.shape[-1],), eps=norm.eps)
    return F.layer_norm(x.float(), (x.shape[-1],), eps=norm.eps)


def _add_residual(hidden: Tensor, residual: Tensor | None, residual_in_fp32: bool) -> Tensor:
    """The pre-norm residual stream ``hidden + residual`` (float32 when ``residual_in_fp32``)."""
    if residual_in_fp32:
        hidden = hidden.float()
    return hidden if residual is None else hidden + residual


def _rc_norm(x: Tensor, norm: nn.Module) -> Tensor:
    """RC-equivariant norm of ``x = [fwd half, channel-flipped rc half]``: per-half statistics, weights ``[w, flip w]``.

    Equals ``cat([norm(x_fwd), flip_c(norm(flip_c(x_rc)))])`` (the released RCPS norm) in one pass.
    """
    d = x.shape[-1] // 2
    halves = _normalize(x.unflatten(-1, (2, d)), norm)
    out = halves * torch.stack([norm.weight, norm.weight.flip(0)]).float()
    if getattr(norm, "bias", None) is not None:
        out = out + torch.stack([norm.bias, norm.bias.flip(0)]).float()
    return out.flatten(-2).to(x.dtype)


class _FusedCausalConvSiLU(torch.autograd.Function):
    """``silu(causal depthwise conv1d(x))`` on time-major ``[L, B, C]`` by the numba CPU kernels that also run the
    fused selective scan: one pass forward; one backward that recomputes the pre-activation (nothing but ``x``
    is kept). ``x`` is a contiguous ``[L, B, C]`` tensor, or with ``batch_major`` the ``[L, B, C]`` view of a
    contiguous ``[B, L, C]`` one; the output and ``x``'s gradient have the same layout. Channels from
    ``reverse_from`` on are convolved in reversed time (see `_causal_conv_silu`)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, batch_major: bool, reverse_from: int) -> Tensor:
        kernels = fused_scan_kernels()
        wT = weight.t().contiguous()
        x_k = x.transpose(0, 1) if batch_major else x   # the kernel's contiguous array
        out = torch.empty_like(x_k)
        b = (bias if bias is not None else x.new_zeros(x.shape[-1])).detach().contiguous()
        kernels.conv_forward(x_k.detach().numpy(), wT.detach().numpy(), b.numpy(), batch_major, reverse_from,
                             kernels.constants(x_k.detach().numpy().dtype), out.numpy())
        ctx.save_for_backward(x_k, wT, b)
        ctx.has_bias, ctx.batch_major, ctx.reverse_from = bias is not None, batch_major, reverse_from
        return out.transpose(0, 1) if batch_major else out

    @staticmethod
    def backward(ctx, gout: Tensor):
        kernels = fused_scan_kernels()
        x_k, wT, b = ctx.saved_tensors
        batch = x_k.shape[0 if ctx.batch_major else 1]
        gout_k = (gout.transpose(0, 1) if ctx.batch_major else gout).contiguous()
        gx, gw_rows, gb_rows = torch.empty_like(x_k), x_k.new_empty(batch, *wT.shape), x_k.new_empty(batch, x_k.shape[-1])
        x_np = x_k.detach().numpy()
        kernels.conv_backward(x_np, wT.detach().numpy(), b.numpy(), gout_k.numpy(), ctx.batch_major, ctx.reverse_from,
                              kernels.constants(x_np.dtype), gx.numpy(), gw_rows.numpy(), gb_rows.numpy())
        return (gx.transpose(0, 1) if ctx.batch_major else gx, gw_rows.sum(0).t(),
                gb_rows.sum(0) if ctx.has_bias else None, None, None)


def _causal_conv_silu(x: Tensor, weight: Tensor, bias: Tensor | None, reverse_from: int | None = None) -> Tensor:
    """``silu(causal depthwise conv1d(x))`` on time-major ``x`` ``[L, B, C]`` with ``weight`` ``[C, K]``.

    Channels from ``reverse_from`` on (none when None) are convolved in reversed time: their output is
    ``flip(conv(flip(x)))`` along L (the reverse direction of a bidirectional mixer, on unflipped tensors).
    Uses ``causal_conv1d_fn`` when `fused_kernels` gives it (CUDA), the numba CPU kernel when the selective scan
    runs fused (`raycad.model.scan.scan_path`; it walks reversed channels backwards, no copies), else K shifted
    multiply-adds (the same sums as ``nn.Conv1d(C, C, K, groups=C, padding=K-1)`` truncated to L). Either way the
    output has ``x``'s dtype (bf16 under autocast), as the selective scan kernel needs u, delta, B, C and z in one
    dtype.
    """
    channels = x.shape[-1]
    if reverse_from is None or reverse_from >= channels:
        reverse_from = channels
    if x.dtype == weight.dtype and x.dtype in (torch.float32, torch.float64) and scan_path(x.device) == "fused":
        _log_once("conv-numba", "Caduceus depthwise conv: fused numba kernel (cpu)")
        batch_major = not x.is_contiguous() and x.transpose(0, 1).is_contiguous()
        return _FusedCausalConvSiLU.apply(x if batch_major else x.contiguous(), weight, bias, batch_major,
                                          reverse_from)
    if reverse_from < channels:  # other paths: flip the reversed channels in time around a causal conv
        def flip_tail(t: Tensor) -> Tensor:
            return torch.cat([t[..., :reverse_from], t[..., reverse_from:].flip(0)], dim=-1)
        return flip_tail(_causal_conv_silu(flip_tail(x), weight, bias))
    length, kernel = x.shape[0], weight.shape[-1]
    conv_fn = fused_kernels(x.device).causal_conv1d_fn
    if conv_fn is not None:
        _log_once(f"conv-fused-{x.device.type}", f"Caduceus depthwise conv: causal_conv1d kernel ({x.device.type})")
        bias = None if bias is None else bias.to(x.dtype)
        out = conv_fn(x.permute(1, 2, 0).contiguous(), weight.to(x.dtype), bias, activation="silu")
        return out.permute(2, 0, 1)
    _log_once(f"conv-{x.device.type}", f"Caduceus depthwise conv: pure PyTorch ({x.device.type})")
    dtype = x.dtype
    xpad = F.pad(x.to(weight.dtype), (0, 0, 0, 0, kernel - 1, 0))  # computed in the weights' dtype (fp32)
    out = xpad[:length] * weight[:, 0]
    if bias is not None:
        out = out + bias
    for k in range(1, kernel):  # K (= 4) shifted slices along time, never a loop over positions
        out = torch.addcmul(out, xpad[k:k + length], weight[:, k])
    return F.silu(out).to(dtype)


class DeltaProjection(nn.Linear):
    """``dt_proj``: a Linear whose forward leaves out its bias.

    The bias (inverse softplus of the initial dt) is added inside the selective scan, in float32, as
    ``delta_bias`` (mamba_ssm's convention): added to a bf16 projection it would lose most of its precision
    before the softplus. The module is still called (so LoRA adapters on ``dt_proj`` take part), and the
    parameters and state-dict keys (``weight``, ``bias``) are those of ``nn.Linear``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class Mamba(nn.Module):
    """The Mamba (S6) mixer with ``mamba_ssm.modules.mamba_simple.Mamba``'s parameters and initialisation.

    Parameters: ``in_proj`` [2*d_inner, d_model], ``conv1d`` (depthwise, kernel d_conv), ``x_proj``
    [dt_rank + 2*d_state, d_inner], ``dt_proj`` [d_inner, dt_rank] (+ bias = inverse softplus of dt), ``A_log``
    [d_inner, d_state] = log(1..d_state), ``D`` [d_inner] = 1, ``out_proj`` [d_model, d_inner].
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        use_fast_path: bool = True,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.use_fast_path = use_fast_path  # kept for config compatibility; kernels are chosen by device
        self.layer_idx = layer_idx

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = DeltaProjection(self.dt_rank, self.d_inner, bias=True)

        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise ValueError(f"ssm_cfg.dt_init must be 'random' or 'constant', got {dt_init!r}")
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():  # bias = softplus^-1(dt): softplus(dt_proj(.) + bias) starts in [dt_min, dt_max]
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        """``[B, L, d_model]`` -> ``[B, L, d_model]`` (one direction, causal)."""
        return _bidirectional_mix(hidden_states.transpose(0, 1), [self], tied=False, strategy="add").transpose(0, 1)


def _bidirectional_mix(h: Tensor, mambas: list[Mamba], tied: bool, strategy: str) -> Tensor:
    """Forward Mamba (+ reversed Mamba) on time-major ``h`` ``[L, B, D]``, both directions in ONE scan.

    Direction ``i`` sees the sequence reversed when ``i == 1``. Its channels occupy block ``i`` of a
    ``[L, B, n_dir * d_inner]`` tensor; B/C enter the scan as ``n_dir`` groups. Returns ``[L, B, D]``.
    When the scan runs fused (numba, CPU) the mixer works batch-major (``[B, L, *]`` storage, time along dim 1),
    the layout the fused kernels walk fastest, and the reverse direction never flips a tensor: its conv and scan
    channels walk time backwards in the kernels. The chunked scan wants time-major storage and flipped copies.
    """
    if scan_path(h.device) == "fused":
        return _mix(h.transpose(0, 1).contiguous(), mambas, tied, strategy, time_dim=1).transpose(0, 1).contiguous()
    return _mix(h, mambas, tied, strategy, time_dim=0)


def _mix(h: Tensor, mambas: list[Mamba], tied: bool, strategy: str, time_dim: int) -> Tensor:
    """`_bidirectional_mix` on ``h`` with time along ``time_dim`` (0: ``[L, B, D]``, 1: ``[B, L, D]``); every
    intermediate keeps that layout, and the output too. Batch-major (the fused kernels) the reverse direction
    stays in the original time order and its kernels walk backwards; time-major it runs on flipped copies."""
    n_dir = len(mambas)
    first = mambas[0]
    e, r, n = first.d_inner, first.dt_rank, first.d_state
    walk_back = REVERSE_IN_KERNELS and time_dim == 1 and n_dir == 2  # reverse direction in the kernels: no copies

    def reverse(t: Tensor) -> Tensor:
        return t if walk_back else t.flip(time_dim)

    # Input projection: shared when tied (per position, so project once and reverse the projection).
    if tied:
        xz = first.in_proj(h)
        xzs = [xz, reverse(xz)][:n_dir]
    else:
        xzs = [m.in_proj(h if i == 0 else reverse(h)) for i, m in enumerate(mambas)]
    x_parts, z_parts = zip(*(t.split(e, dim=-1) for t in xzs))  # split (not slicing): cheap backward
    x, z = torch.cat(x_parts, dim=-1), torch.cat(z_parts, dim=-1)

    conv_w = torch.cat([m.conv1d.weight[:, 0, :] for m in mambas])
    conv_b = torch.cat([m.conv1d.bias for m in mambas]) if first.conv1d.bias is not None else None
    x = _causal_conv_silu(x.movedim(time_dim, 0), conv_w, conv_b,                    # the conv is [L, B, C]
                          reverse_from=e if walk_back else None).movedim(0, time_dim)

    dts, Bs, Cs = [], [], []
    for m, x_dir in zip(mambas, x.split(e, dim=-1)):
        dt_in, B_dir, C_dir = m.x_proj(x_dir).split([r, n, n], dim=-1)   # [L, B, r | n | n]
        dts.append(m.dt_proj(dt_in))                                      # [L, B, e], bias-free; LoRA-able
        Bs.append(B_dir)
        Cs.append(C_dir)
    dt = torch.cat(dts, dim=-1)
    B = torch.stack(Bs, dim=2)                                            # [L, B, n_dir, n]
    C = torch.stack(Cs, dim=2)
    A = -torch.exp(torch.cat([m.A_log for m in mambas]).float())
    D = torch.cat([m.D for m in mambas]).float()
    dt_bias = torch.cat([m.dt_proj.bias for m in mambas]).float()          # added in the scan, in float32

    # The scan's convention is [batch, dim, length]: views of this layout's storage (time moved last).
    scan_args = (x.movedim(time_dim, -1), dt.movedim(time_dim, -1), A, B.movedim(time_dim, -1),
                 C.movedim(time_dim, -1), D, z.movedim(time_dim, -1), dt_bias, True)
    y = selective_scan_fused(*scan_args, reverse_groups=1) if walk_back else selective_scan(*scan_args)
    y = y.movedim(-1, time_dim)                                          # [L, B, n_dir * e]
    if n_dir == 1:
        return first.out_proj(y)
    y_fwd, y_rev = y[..., :e], reverse(y[..., e:])
    if tied and strategy == "add":  # out_proj(a) + out_proj(b) == out_proj(a + b) (+ the bias once more)
        out = first.out_proj(y_fwd + y_rev)
        return out if first.out_proj.bias is None else out + first.out_proj.bias
    out_fwd, out_rev = first.out_proj(y_fwd), mambas[1].out_proj(y_rev)
    return out_fwd + out_rev if strategy == "add" else out_fwd * out_rev


class BiMambaWrapper(nn.Module):
    """Bidirectional Mamba: ``mamba_fwd(x) (+|*) flip(mamba_rev(flip(x)))``, in/out projections tied by default."""

    def __init__(self, d_model: int, bidirectional: bool = True, bidirectional_strategy: str | None = "add",
                 bidirectional_weight_tie: bool = True, **mamba_kwargs: Any) -> None:
        super().__init__()
        if bidirectional and bidirectional_strategy is None:
            bidirectional_strategy = "add"
        if bidirectional and bidirectional_strategy not in ("add", "ew_multiply"):
            raise NotImplementedError(f"bidirectional_strategy {bidirectional_strategy!r} is not implemented")
        self.bidirectional = bidirectional
        self.bidirectional_strategy = bidirectional_strategy
        self.weight_tie = bidirectional and bidirectional_weight_tie
        self.mamba_fwd = Mamba(d_model, **mamba_kwargs)
        self.mamba_rev = Mamba(d_model, **mamba_kwargs) if bidirectional else None
        if self.weight_tie:  # the same modules: one set of weights (and gradients) for both directions
            self.mamba_rev.in_proj = self.mamba_fwd.in_proj
            self.mamba_rev.out_proj = self.mamba_fwd.out_proj

    def _mambas(self) -> list[Mamba]:
        return [self.mamba_fwd] + ([self.mamba_rev] if self.bidirectional else [])

    def forward_time_major(self, h: Tensor) -> Tensor:
        """``[L, B, D]`` -> ``[L, B, D]``."""
        return _bidirectional_mix(h, self._mambas(), tied=self.weight_tie, strategy=self.bidirectional_strategy)

    def forward_batch_major(self, h: Tensor) -> Tensor:
        """``[B, L, D]`` -> ``[B, L, D]`` for the fused scan only (the layout its mixer works in)."""
        return _mix(h, self._mambas(), tied=self.weight_tie, strategy=self.bidirectional_strategy, time_dim=1)

    def forward(self, hidden_states: Tensor) -> Tensor:
        """``[B, L, D]`` -> ``[B, L, D]``."""
        return self.forward_time_major(hidden_states.transpose(0, 1)).transpose(0, 1)


class RCPSWrapper(nn.Module):
    """Runs ``submodule`` on both strands: ``[fwd half, rc half]`` -> ``[f(fwd), rc(f(rc(rc half)))]``.

    ``rc`` flips length and channels. Both strands go through the submodule as one batch. Time-major I/O.
    """

    def __init__(self, submodule: BiMambaWrapper) -> None:
        super().__init__()
        self.submodule = submodule

    def forward_time_major(self, x: Tensor) -> Tensor:
        d, batch = x.shape[-1] // 2, x.shape[1]
        if scan_path(x.device) == "fused":  # the concatenations also convert to and from the mixer's batch-major
            both = torch.cat([x[..., :d].transpose(0, 1), x[..., d:].flip(0, 2).transpose(0, 1)])   # [2B, L, d]
            out = self.submodule.forward_batch_major(both)
            return torch.cat([out[:batch].transpose(0, 1), out[batch:].flip(1, 2).transpose(0, 1)], dim=-1)
        both = torch.cat([x[..., :d], x[..., d:].flip(0, 2)], dim=1)       # [L, 2B, d]
        out = self.submodule.forward_time_major(both)
        return torch.cat([out[:, :batch], out[:, batch:].flip(0, 2)], dim=-1)


class CaduceusBlock(nn.Module):
    """Add -> norm -> bidirectional Mamba, returning ``(mixer output, residual)`` (mamba_ssm's pre-norm Block).

    For PS models (``rcps``) the mixer runs on both strands and the norm is RC-equivariant; with
    ``fused_add_norm`` the channel halves of the residual stream swap places, as in the released checkpoints.
    Parameter order follows the released layouts (PS: mixer then norm; plain: norm then mixer).
    """

    def __init__(self, config: CaduceusConfig, layer_idx: int) -> None:
        super().__init__()
        self.rcps = config.rcps
        self.fused_add_norm = config.fused_add_norm
        self.residual_in_fp32 = config.residual_in_fp32
        mixer = BiMambaWrapper(
            config.d_model,
            bidirectional=config.bidirectional,
            bidirectional_strategy=config.bidirectional_strategy,
            bidirectional_weight_tie=config.bidirectional_weight_tie,
            **(config.mamba_kwargs | {"layer_idx": layer_idx}),
        )
        if self.rcps:
            self.mixer = RCPSWrapper(mixer)
            self.norm = _make_norm(config)
        else:
            self.norm = _make_norm(config)
            self.mixer = mixer

    def forward(self, hidden: Tensor, residual: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Time-major ``[L, B, C]`` in and out."""
        residual = _add_residual(hidden, residual, self.residual_in_fp32)
        if not self.rcps:
            normed = self.norm(residual.to(self.norm.weight.dtype))
        else:
            if self.fused_add_norm:  # the released fused kernel reads the second half as the forward strand
                d = residual.shape[-1] // 2
                residual = torch.cat([residual[..., d:], residual[..., :d]], dim=-1)
            normed = _rc_norm(residual.to(self.norm.weight.dtype), self.norm)
        return self.mixer.forward_time_major(normed), residual


def _make_norm(config: CaduceusConfig) -> nn.Module:
    if config.rms_norm:
        return RMSNorm(config.d_model, eps=config.norm_epsilon)
    return nn.LayerNorm(config.d_model, eps=config.norm_epsilon)


class RCPSEmbedding(nn.Module):
    """RC-equivariant embedding: ``[E(ids), flip(E(rc(ids)))]`` (2 * d_model channels) from one ``d_model`` table."""

    def __init__(self, vocab_size: int, d_model: int, complement_ids: list[int]) -> None:
        super().__init__()
        self.register_buffer("complement_map", torch.tensor(complement_ids, dtype=torch.long))
        self.embedding = nn.Embedding(vocab_size, d_model)

    @property
    def weight(self) -> Tensor:
        return self.embedding.weight

    def rc_table(self) -> Tensor:
        """``[W, flip_c(W[complement])]``: row ``i`` is the two-strand embedding of token ``i``."""
        return _rc_table(self.embedding.weight, self.complement_map)

    def forward(self, input_ids: Tensor) -> Tensor:
        return F.embedding(input_ids, self.rc_table())


def _rc_table(weight: Tensor, complement_map: Tensor) -> Tensor:
    return torch.cat([weight, weight[complement_map].flip(-1)], dim=-1)


class CaduceusEmbeddings(nn.Module):
    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__()
        if config.rcps:
            self.word_embeddings = RCPSEmbedding(config.vocab_size, config.d_model, config.complement_ids())
        else:
            self.word_embeddings = nn.Embedding(config.vocab_size, config.d_model)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.word_embeddings(input_ids)


class CaduceusMixerModel(nn.Module):
    """Embeddings -> n_layer blocks -> final add + norm. Works time-major internally."""

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__()
        self.rcps = config.rcps
        self.residual_in_fp32 = config.residual_in_fp32
        self.embeddings = CaduceusEmbeddings(config)
        self.layers = nn.ModuleList([CaduceusBlock(config, i) for i in range(config.n_layer)])
        self.norm_f = _make_norm(config)
        self.gradient_checkpointing = False

    def forward_time_major(self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                           output_hidden_states: bool = False) -> tuple[Tensor, list[Tensor]]:
        """``input_ids`` ``[B, L]`` (or ``inputs_embeds`` ``[B, L, C]``) -> final hidden state ``[L, B, C]``."""
        if inputs_embeds is not None:
            hidden = inputs_embeds.transpose(0, 1)
        elif input_ids is not None:
            hidden = self.embeddings(input_ids.t())
        else:
            raise ValueError("pass input_ids or inputs_embeds")
        all_hidden: list[Tensor] = []
        residual = None
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if output_hidden_states:
                all_hidden.append(hidden)
            if use_checkpoint:
                hidden, residual = checkpoint(layer, hidden, residual, use_reentrant=False)
            else:
                hidden, residual = layer(hidden, residual)
        residual = _add_residual(hidden, residual, self.residual_in_fp32).to(self.norm_f.weight.dtype)
        hidden = _rc_norm(residual, self.norm_f) if self.rcps else self.norm_f(residual)
        if output_hidden_states:
            all_hidden.append(hidden)
        return hidden, all_hidden


# ================================================================================================================
# Models
# ================================================================================================================


class CaduceusPreTrainedModel(nn.Module):
    """Shared plumbing: weight init, `from_pretrained` / `save_pretrained`, gradient checkpointing."""

    config_class: ClassVar[type[CaduceusConfig]] = CaduceusConfig
    base_model_prefix: ClassVar[str] = "caduceus"
    head_prefixes: ClassVar[tuple[str, ...]] = ()
    """Top-level attribute names of this class's head (checkpoints without them load with a fresh head)."""

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__()
        config.pad_vocab()
        self.config = config

    # ---- initialisation (as the released `_init_weights`) ----------------------------------------------------
    def _init_backbone_weights(self, backbone: nn.Module) -> None:
        cfg = self.config.initializer_cfg or {}
        std = cfg.get("initializer_range", 0.02)
        rescale = cfg.get("rescale_prenorm_residual", True)
        n_residuals = cfg.get("n_residuals_per_layer", 1)
        for module in backbone.modules():
            if isinstance(module, nn.Linear) and module.bias is not None \
                    and not getattr(module.bias, "_no_reinit", False):
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            if rescale and isinstance(module, Mamba):  # GPT-2 scheme: out_proj / sqrt(n_layer)
                nn.init.kaiming_uniform_(module.out_proj.weight, a=math.sqrt(5))
                with torch.no_grad():
                    module.out_proj.weight /= math.sqrt(n_residuals * self.config.n_layer)

    @property
    def initializer_range(self) -> float:
        return (self.config.initializer_cfg or {}).get("initializer_range", 0.02)

    # ---- conveniences -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters, tied tensors counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def _mixer_model(self) -> CaduceusMixerModel:
        return self.backbone if isinstance(self, CaduceusModel) else self.caduceus.backbone

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each layer's activations in the backward pass (less memory, ~30% more compute)."""
        self._mixer_model().gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self._mixer_model().gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self._mixer_model().gradient_checkpointing

    # ---- save / load -----------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, **_: Any) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (tied tensors as separate copies) to ``save_directory``."""
        from safetensors.torch import save_file

        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(directory)
        seen: set[int] = set()
        state = {}
        for name, tensor in self.state_dict().items():
            tensor = tensor.detach()
            ptr = tensor.untyped_storage().data_ptr()
            state[name] = tensor.clone() if ptr in seen else tensor.contiguous()
            seen.add(ptr)
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        return directory

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        *,
        config: CaduceusConfig | None = None,
        strict: bool = True,
        reinit_head: bool = False,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        **config_overrides: Any,
    ) -> CaduceusPreTrainedModel:
        """Build the model from a local directory (offline) or a Hugging Face Hub repo id, and load its weights.

        ``path_or_repo_id``: a directory with ``config.json`` and ``model.safetensors`` (``pytorch_model.bin`` is
        read with ``torch.load(weights_only=True)``); anything that is not a local directory is fetched from the
        Hub. ``config_overrides`` (``num_labels``, ``pooling``, ``conjoin_eval``, ...; None values are ignored)
        change the saved config. A checkpoint of another Caduceus class loads its backbone: a backbone-only or
        masked-LM checkpoint gives a classifier with a freshly initialised head (``reinit_head=True`` forces
        that). Any other mismatch raises one `CheckpointMismatchError` listing every missing, unexpected and
        mis-shaped key (``strict=False``: log it and load what fits).
        """
        directory = resolve_pretrained(path_or_repo_id, revision=revision, cache_dir=cache_dir,
                                       local_files_only=local_files_only, token=token)
        if config is None:
            config_file = directory / CONFIG_NAME
            if not config_file.is_file():
                raise FileNotFoundError(f"{config_file} not found: a Caduceus checkpoint directory needs "
                                        f"{CONFIG_NAME} next to its weights")
            config = cls.config_class.from_pretrained(str(directory))
        unknown = [k for k in config_overrides if not hasattr(config, k)]
        if unknown:
            raise TypeError(f"unknown CaduceusConfig fields {unknown} passed to {cls.__name__}.from_pretrained")
        for key, value in config_overrides.items():
            if value is not None:
                setattr(config, key, value)
        config.validate()
        model = cls(config)
        weights_file, state = load_state_dict_file(directory)
        model.load_checkpoint(state, source=str(weights_file), strict=strict, reinit_head=reinit_head)
        if dtype is not None or device is not None:
            model.to(device=device, dtype=dtype)
        return model

    def load_checkpoint(self, state: dict[str, Tensor], source: str = "<state dict>", strict: bool = True,
                        reinit_head: bool = False) -> None:
        """Load a checkpoint state dict (any Caduceus class's) with the checks described in `from_pretrained`."""
        state = self._adapt_keys(state)
        head_keys = [k for k in state if k.split(".")[0] in self.head_prefixes]
        if reinit_head or (self.head_prefixes and not head_keys):
            for k in head_keys:
                del state[k]
            log.info("%s: no classification/LM head weights used from %s; the head is freshly initialised",
                     type(self).__name__, source)
            expected = {k for k in self.state_dict() if k.split(".")[0] not in self.head_prefixes}
        else:
            expected = set(self.state_dict())

        model_state = self.state_dict()
        buffers = {name for name, _ in self.named_buffers()}
        problems: dict[str, list[str]] = {"missing": [], "unexpected": [], "mis-shaped": [], "tied copies differ": []}
        # Tied parameters: one canonical name (the first), the others are aliases that may be absent.
        groups: dict[int, list[str]] = {}
        for name, param in self.named_parameters(remove_duplicate=False):
            groups.setdefault(id(param), []).append(name)
        for names in groups.values():
            if names[0] not in expected:
                continue
            present = [n for n in names if n in state]
            if not present:
                problems["missing"].append(names[0])
                continue
            value = state[present[0]]
            for other in present[1:]:
                if state[other].shape != value.shape or not torch.equal(state[other], value):
                    problems["tied copies differ"].append(f"{other} != {present[0]}")
            for n in names:
                state[n] = value
        for name in sorted(expected - set(state)):
            if name not in buffers and name not in problems["missing"]:
                problems["missing"].append(name)
        for name in sorted(set(state) - set(model_state)):
            problems["unexpected"].append(name)
        for name in sorted(expected & set(state)):
            if tuple(state[name].shape) != tuple(model_state[name].shape):
                problems["mis-shaped"].append(f"{name}: checkpoint {list(state[name].shape)} vs model "
                                              f"{list(model_state[name].shape)}")
        problems = {k: v for k, v in problems.items() if v}
        if problems:
            shape = (f"d_model={self.config.d_model}, n_layer={self.config.n_layer}, rcps={self.config.rcps}, "
                     f"vocab_size={self.config.vocab_size}")
            lines = [f"checkpoint {source} does not fit {type(self).__name__} ({shape}):"]
            for kind, names in problems.items():
                lines.append(f"  {kind} ({len(names)}): " + ", ".join(names))
            if "mis-shaped" in problems and any(n.split(".")[0] in self.head_prefixes
                                                for n in problems["mis-shaped"]):
                lines.append("  (a head of another size: pass reinit_head=True to start a fresh head)")
            message = "\n".join(lines)
            if strict:
                raise CheckpointMismatchError(message)
            log.warning(message)
        loadable = {k: v for k, v in state.items()
                    if k in model_state and tuple(v.shape) == tuple(model_state[k].shape)}
        self.load_state_dict(loadable, strict=False)

    def _adapt_keys(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rename another class's (or the unfused RCPS layout's) keys to this class's; drop other classes' heads."""
        out: dict[str, Tensor] = {}
        own = {name for name, _ in self.named_children()}
        prefix = self.base_model_prefix + "."
        for key, value in state.items():
            key = key.replace(".norm.submodule.", ".norm.").replace("norm_f.submodule.", "norm_f.")
            if isinstance(self, CaduceusModel):
                key = key.removeprefix(prefix)
            elif key.startswith("backbone."):
                key = prefix + key
            if key.split(".")[0] in _HEAD_NAMES - own:
                continue  # another class's head (score.* in an MLM, lm_head.* in a classifier, ...)
            out[key] = value
        return out


_HEAD_NAMES = {"score", "lm_head"}


class CaduceusModel(CaduceusPreTrainedModel):
    """The Caduceus backbone (released name: ``Caduceus``); ``forward`` returns ``.last_hidden_state`` [B, L, C].

    C is ``d_model``, or ``2 * d_model`` for PS models (forward strand, then the channel-flipped RC strand).
    """

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__(config)
        self.backbone = CaduceusMixerModel(config)
        self._init_backbone_weights(self.backbone)
        complement = config.complement_ids() if config.complement_map is not None else []
        self.register_buffer("complement", torch.tensor(complement, dtype=torch.long), persistent=False)

    def forward(self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None,
                output_hidden_states: bool = False, return_dict: bool = True) -> BaseModelOutputWithNoAttention:
        hidden, all_hidden = self.backbone.forward_time_major(input_ids, inputs_embeds, output_hidden_states)
        return BaseModelOutputWithNoAttention(
            last_hidden_state=hidden.transpose(0, 1).contiguous(),
            hidden_states=tuple(h.transpose(0, 1) for h in all_hidden) if output_hidden_states else None,
        )

    def forward_time_major(self, input_ids: Tensor) -> Tensor:
        """Final hidden state ``[L, B, C]`` (the internal layout; no copy)."""
        return self.backbone.forward_time_major(input_ids)[0]

    def reverse_complement(self, input_ids: Tensor) -> Tensor:
        """Reverse complement of token ids ``[..., L]`` (flip + complement map; padding moves to the other end)."""
        if not len(self.complement):
            raise ValueError("this model's config has no complement_map, so it cannot reverse-complement input_ids")
        return self.complement[input_ids.flip(-1)]


# ---- classification ------------------------------------------------------------------------------------------

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}


def build_head(d_model: int, num_labels: int, hidden_sizes: list[int], dropout: float, activation: str) -> nn.Module:
    """The paper's bias-free linear scorer, or an MLP ``Linear -> act -> dropout`` per hidden size -> Linear."""
    if not hidden_sizes:
        return nn.Linear(d_model, num_labels, bias=False)
    layers: list[nn.Module] = []
    width = d_model
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), _ACTIVATIONS[activation](), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, num_labels))
    return nn.Sequential(*layers)


def pool(hidden: Tensor, mask: Tensor | None, how: str) -> Tensor:
    """Pool time-major ``hidden`` ``[L, N, C]`` over L -> ``[N, C]``; ``mask`` ``[L, N]`` marks real tokens.

    With a mask, mean/max use only real tokens and first/last pick the first/last real token (a row with no real
    token falls back to all positions).
    """
    if mask is None:
        if how == "mean":
            return hidden.mean(0)
        if how == "max":
            return hidden.max(0).values
        return hidden[0] if how == "first" else hidden[-1]
    mask = mask | ~mask.any(0, keepdim=True)
    if how == "mean":
        weights = mask.to(hidden.dtype)
        return torch.einsum("lnc,ln->nc", hidden, weights) / weights.sum(0)[:, None]
    if how == "max":
        return hidden.masked_fill(~mask[..., None], float("-inf")).max(0).values
    length = hidden.shape[0]
    positions = torch.arange(length, device=hidden.device)[:, None].expand_as(mask)
    if how == "first":
        index = torch.where(mask, positions, length).amin(0)
    else:
        index = torch.where(mask, positions, -1).amax(0)
    return hidden.gather(0, index[None, :, None].expand(1, -1, hidden.shape[-1]))[0]


class CaduceusForSequenceClassification(CaduceusPreTrainedModel):
    """Caduceus + pooling + a linear (or MLP) scorer; RC-invariant for PS, post-hoc conjoining for Ph.

    Head settings come from the config (``pooling``, ``pool_ignore_padding``, ``head_hidden_sizes``,
    ``head_dropout``, ``head_activation``, ``conjoin_train``, ``conjoin_eval``, ``num_labels``).
    ``pool_ignore_padding`` (default True) pools only over non-[PAD] tokens, which keeps left-padded batches
    from diluting the mean; False pools over every position, exactly as the released head.
    """

    head_prefixes = ("score",)

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.caduceus = CaduceusModel(config)
        self.dropout = nn.Dropout(config.head_dropout)
        self.score = build_head(config.d_model, self.num_labels, config.head_hidden_sizes, config.head_dropout,
                                config.head_activation)
        self.init_head()

    @property
    def pooling(self) -> str:
        return self.config.pooling

    @property
    def conjoin_train(self) -> bool:
        return self.config.conjoin_train

    @property
    def conjoin_eval(self) -> bool:
        return self.config.conjoin_eval

    def init_head(self) -> None:
        """Scorer ~ N(0, initializer_range) as released; MLP hidden layers keep PyTorch's init, biases zero."""
        linears = [m for m in self.score.modules() if isinstance(m, nn.Linear)]
        for m in linears:
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        nn.init.normal_(linears[-1].weight, std=self.initializer_range)

    def _conjoin(self) -> bool:
        return not self.config.rcps and (self.config.conjoin_train or (self.config.conjoin_eval and not self.training))

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, output_hidden_states: bool = False,
                return_dict: bool = True) -> SequenceClassifierOutput:
        """``input_ids`` ``[B, L]``, or ``[B, L, 2]`` (channel 1 = reverse complement) for conjoining.

        A ``[B, L, 2]`` input to a model that does not conjoin uses channel 0 (the forward strand).
        """
        if input_ids.dim() == 3:
            if input_ids.shape[-1] != 2:
                raise ValueError(f"conjoined input_ids must be [B, L, 2], got {list(input_ids.shape)}")
            strands = [input_ids[..., 0], input_ids[..., 1]] if self._conjoin() else [input_ids[..., 0]]
        elif input_ids.dim() == 2:
            strands = [input_ids, self.caduceus.reverse_complement(input_ids)] if self._conjoin() else [input_ids]
        else:
            raise ValueError(f"input_ids must be [B, L] or [B, L, 2], got {list(input_ids.shape)}")
        batch = input_ids.shape[0]
        ids = torch.cat(strands) if len(strands) > 1 else strands[0]              # [S*B, L]
        hidden = self.caduceus.forward_time_major(ids)                            # [L, S*B, C]
        mask = (ids != self.config.pad_token_id).t() if self.config.pool_ignore_padding else None
        if self.config.rcps:  # the RC half, flipped in length and channels, is the RC strand in its own order
            d = self.config.d_model
            hidden = torch.cat([hidden[..., :d], hidden[..., d:].flip(0, 2)], dim=1)
            mask = None if mask is None else torch.cat([mask, mask.flip(0)], dim=1)
        pooled = pool(hidden, mask, self.config.pooling)                         # [k*B, d_model]
        logits = self.score(self.dropout(pooled))
        if logits.shape[0] != batch:  # average the strands' logits
            logits = logits.view(-1, batch, logits.shape[-1]).mean(0)
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
            else:
                loss = F.cross_entropy(logits.float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)


# ---- masked language modelling --------------------------------------------------------------------------------


class RCPSLMHead(nn.Module):
    """LM head on two-strand hidden states: ``x_fwd @ W^T + flip_c(x_rc) @ W[complement]^T`` in one matmul."""

    def __init__(self, true_dim: int, vocab_size: int, complement_ids: list[int]) -> None:
        super().__init__()
        self.register_buffer("complement_map", torch.tensor(complement_ids, dtype=torch.long))
        self.true_dim = true_dim
        self.lm_head = nn.Linear(true_dim, vocab_size, bias=False)

    @property
    def weight(self) -> Tensor:
        return self.lm_head.weight

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, _rc_table(self.lm_head.weight, self.complement_map))


class CaduceusForMaskedLM(CaduceusPreTrainedModel):
    """Caduceus + an LM head tied to the input embedding (the released pre-training model)."""

    def __init__(self, config: CaduceusConfig) -> None:
        super().__init__(config)
        self.caduceus = CaduceusModel(config)
        embeddings = self.caduceus.backbone.embeddings.word_embeddings
        if config.rcps:
            self.lm_head = RCPSLMHead(config.d_model, config.vocab_size, config.complement_ids())
            self.lm_head.lm_head.weight = embeddings.embedding.weight
        else:
            self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
            self.lm_head.weight = embeddings.weight

    def forward(self, input_ids: Tensor, labels: Tensor | None = None, output_hidden_states: bool = False,
                return_dict: bool = True) -> MaskedLMOutput:
        """Logits ``[B, L, vocab_size]`` (float32); loss = cross-entropy over labels != -100."""
        hidden = self.caduceus.forward_time_major(input_ids)
        logits = self.lm_head(hidden).float().transpose(0, 1).contiguous()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.to(logits.device).view(-1),
                                   ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits)


# ================================================================================================================
# Checkpoint files
# ================================================================================================================


def resolve_pretrained(path_or_repo_id: str | Path, *, revision: str | None = None,
                       cache_dir: str | Path | None = None, local_files_only: bool = False,
                       token: str | bool | None = None) -> Path:
    """A local checkpoint directory as is; anything else is a Hub repo id, downloaded (or taken from the cache)."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; from_pretrained needs a directory with {CONFIG_NAME} and "
                                 f"{WEIGHTS_NAME}")
    repo_id = str(path_or_repo_id)
    if repo_id.startswith((".", "/", "~")) or repo_id.count("/") != 1:
        raise FileNotFoundError(f"{repo_id!r} is neither a local directory nor a Hugging Face repo id (owner/name)")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        kwargs = {"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir,
                  "local_files_only": local_files_only, "token": token}
        config_file = Path(hf_hub_download(filename=CONFIG_NAME, **kwargs))
        try:
            hf_hub_download(filename=WEIGHTS_NAME, **kwargs)
        except EntryNotFoundError:
            hf_hub_download(filename=TORCH_WEIGHTS_NAME, **kwargs)
    except Exception as err:  # any hub/network failure: re-raised with what the user can do
        raise OSError(
            f"cannot load {repo_id!r}: it is not a local directory, and fetching it from the Hugging Face Hub "
            f"failed ({type(err).__name__}: {err}). Offline? Download the checkpoint elsewhere and pass its "
            f"directory (config.json + {WEIGHTS_NAME})."
        ) from err
    return config_file.parent


def load_state_dict_file(directory: Path) -> tuple[Path, dict[str, Tensor]]:
    """Read ``model.safetensors`` (preferred) or ``pytorch_model.bin`` (``weights_only=True``) from ``directory``."""
    safetensors_file = directory / WEIGHTS_NAME
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return safetensors_file, load_file(str(safetensors_file))
    torch_file = directory / TORCH_WEIGHTS_NAME
    if torch_file.is_file():
        return torch_file, torch.load(torch_file, map_location="cpu", weights_only=True)
    present = sorted(p.name for p in directory.iterdir())
    raise FileNotFoundError(f"no {WEIGHTS_NAME} or {TORCH_WEIGHTS_NAME} in {directory} (it holds: {present})")
