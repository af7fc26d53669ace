"""The fused CUDA kernels raycad can use, and the one decision of when they run.

Two optional packages (the ``raycad[cuda]`` extra) provide them: ``mamba_ssm``'s
``selective_scan_fn`` (the S6 scan) and ``causal_conv1d``'s ``causal_conv1d_fn`` (depthwise causal conv
+ SiLU). `fused_kernels` returns the ones to use for tensors on a device: the installed kernels for
devices in `FUSED_DEVICE_TYPES` (CUDA), none elsewhere. The model and the scan ask only this function,
so the CUDA branch is a single decision: tests put doubles of both kernels into ``sys.modules``, add
``"cpu"`` to `FUSED_DEVICE_TYPES`, clear `installed_kernels`' cache and run every line of it on CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

FUSED_DEVICE_TYPES: tuple[str, ...] = ("cuda",)
"""Device types whose tensors go through the fused kernels (when installed)."""


@dataclass(frozen=True)
class FusedKernels:
    """The fused kernels for one device type; None where a kernel is not installed (or not for this device)."""

    selective_scan_fn: Callable[..., Any] | None = None
    causal_conv1d_fn: Callable[..., Any] | None = None


@functools.lru_cache(maxsize=1)
def installed_kernels() -> FusedKernels:
    """The kernels that import in this process (cached; an extension built for another torch counts as absent)."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except (ImportError, OSError):
        selective_scan_fn = None
    try:
        from causal_conv1d import causal_conv1d_fn
    except (ImportError, OSError):
        causal_conv1d_fn = None
    return FusedKernels(selective_scan_fn, causal_conv1d_fn)


def fused_kernels(device: torch.device) -> FusedKernels:
    """The fused kernels to use for tensors on ``device``."""
    return installed_kernels() if device.type in FUSED_DEVICE_TYPES else FusedKernels()
