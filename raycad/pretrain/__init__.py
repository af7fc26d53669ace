"""Masked-LM (continued) pre-training of Caduceus on a user's sequences: ``raycad pretrain``.

Laid out as a recipe and its components (torchtune style):

- `pretrain(cfg) -> PretrainResult` (`raycad.pretrain.recipe`): the whole job; `build_pretrain_trainer`,
  `step_plan`, `load_pretrain_checkpoint`.
- `prepare_pretrain_data(cfg) -> PretrainData` (`raycad.pretrain.data`): sources -> lazy window datasets.
- `window_batch`, `count_windows`, `window_spans` (`raycad.pretrain.windows`): windowing as a Ray Data
  ``map_batches`` transform, with the mostly-N filter and the held-out split.
- `mask_tokens`, `MLMCollator` (`raycad.pretrain.masking`): 15% targets; 80% [MASK], 10% random base, 10%
  unchanged; never special tokens or padding.
- `masked_lm_loss`, `MLMMetrics` (`raycad.pretrain.loss`): cross-entropy on masked positions; loss,
  accuracy, perplexity.
- `pretrain_loop_per_worker` (`raycad.pretrain.loop`): the Ray Train worker loop.

    from raycad.config import PretrainConfig
    from raycad.pretrain import pretrain
    result = pretrain(PretrainConfig.load(overrides=["data.train=[genome.fa.gz]", "train.max_steps=1000"]))
    # result.model_dir: load with CaduceusForSequenceClassification.from_pretrained(result.model_dir)

Importing this package is cheap; Ray and torch load with the functions that need them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "raycad.pretrain.recipe": ("pretrain", "PretrainResult", "build_pretrain_trainer", "step_plan",
                               "load_pretrain_checkpoint"),
    "raycad.pretrain.data": ("prepare_pretrain_data", "PretrainData"),
    "raycad.pretrain.windows": ("window_batch", "count_windows", "window_spans"),
    "raycad.pretrain.masking": ("mask_tokens", "MLMCollator"),
    "raycad.pretrain.loss": ("masked_lm_loss", "MLMMetrics"),
    "raycad.pretrain.loop": ("pretrain_loop_per_worker", "build_mlm_model"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = list(_MODULE_OF)


def __getattr__(name: str) -> Any:  # lazy: the components import torch and Ray
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
