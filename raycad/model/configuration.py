"""`CaduceusConfig`: the released Caduceus `config.json` fields plus raycad's classification-head fields.

The field names, defaults and meaning follow the authors' Hugging Face `CaduceusConfig`, so a released
checkpoint's `config.json` loads unchanged. raycad adds the head settings (pooling, MLP sizes, conjoining)
so that `save_pretrained` / `from_pretrained` round-trip a fine-tuned classifier exactly.

Vocabulary padding and complement-map extension happen when a model is built (as in the released code):
`vocab_size` is rounded up to a multiple of `pad_vocab_size_multiple` and every new id complements to itself.
`PRESETS` holds the shapes of the released checkpoints so that a model of the right shape can be built offline.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import PretrainedConfig

# The token ids and their complements are the tokenizer's (defined once, in raycad.model.tokenizer).
from raycad.model.tokenizer import COMPLEMENT_MAP as DNA_COMPLEMENT_MAP
from raycad.model.tokenizer import PAD_ID as PAD_TOKEN_ID
from raycad.model.tokenizer import VOCAB_SIZE as DNA_VOCAB_SIZE

DEFAULT_SSM_CFG: dict[str, Any] = {
    "d_state": 16,
    "d_conv": 4,
    "expand": 2,
    "dt_rank": "auto",
    "dt_min": 0.001,
    "dt_max": 0.1,
    "dt_init": "random",
    "dt_scale": 1.0,
    "dt_init_floor": 1e-4,
    "conv_bias": True,
    "bias": False,
    "use_fast_path": True,
}
POOLINGS = ("mean", "max", "first", "last")
ACTIVATIONS = ("gelu", "relu", "silu", "tanh")


class CaduceusConfig(PretrainedConfig):
    """Configuration of a Caduceus model (backbone fields as released, plus raycad's head fields).

    Backbone fields (released): d_model, n_layer, vocab_size, pad_vocab_size_multiple, ssm_cfg (Mamba mixer
    kwargs: d_state, d_conv, expand, dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, conv_bias, bias,
    use_fast_path), rms_norm, fused_add_norm, residual_in_fp32, norm_epsilon, initializer_cfg, bidirectional,
    bidirectional_strategy ("add" | "ew_multiply"), bidirectional_weight_tie, rcps, complement_map,
    gradient_checkpointing_stride, num_labels.

    Head fields (raycad): pooling ("mean" | "max" | "first" | "last"), pool_ignore_padding (pool only over
    non-[PAD] positions; False reproduces the released head, which pools over every position; a config.json
    without the key is a released one and loads as False, see `from_dict`), head_hidden_sizes
    (empty = the paper's single bias-free linear scorer), head_dropout, head_activation, conjoin_train,
    conjoin_eval, pad_token_id.
    """

    model_type = "caduceus"

    d_model: int = 2560
    n_layer: int = 64
    vocab_size: int = 50277
    ssm_cfg: dict | None = None
    rms_norm: bool = True
    residual_in_fp32: bool = True
    fused_add_norm: bool = True
    pad_vocab_size_multiple: int = 8
    norm_epsilon: float = 1e-5
    initializer_cfg: dict | None = None
    bidirectional: bool = True
    bidirectional_strategy: str | None = "add"
    bidirectional_weight_tie: bool = True
    rcps: bool = False
    gradient_checkpointing_stride: int = 1
    complement_map: dict | None = None

    pad_token_id: int | None = PAD_TOKEN_ID
    pooling: str = "mean"
    pool_ignore_padding: bool = True
    head_hidden_sizes: list[int] = dataclasses.field(default_factory=list)
    head_dropout: float = 0.0
    head_activation: str = "gelu"
    conjoin_train: bool = False
    conjoin_eval: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        # `pooling_strategy` is the released classifier's constructor argument: accept it as an alias.
        if "pooling_strategy" in kwargs:
            self.pooling = kwargs.pop("pooling_strategy")
        super().__post_init__(**kwargs)
        if self.complement_map is not None:  # JSON keys are strings: use int ids, in id order
            self.complement_map = {int(k): int(v) for k, v in sorted(self.complement_map.items(), key=_int_key)}
        self.head_hidden_sizes = [int(h) for h in (self.head_hidden_sizes or [])]
        self.validate()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> CaduceusConfig:
        """A config from a ``config.json`` mapping (what ``from_pretrained`` reads).

        A mapping without ``pool_ignore_padding`` is a released (reference) config: its head pools over every
        position, padding included, so that is the default here and the reference logits are reproduced.
        raycad's own exports always record ``pool_ignore_padding``.
        """
        if "pool_ignore_padding" not in config_dict:
            config_dict = {**config_dict, "pool_ignore_padding": False}
        return super().from_dict(config_dict, **kwargs)

    def validate(self) -> None:
        """Raise `ValueError` naming the field if a value cannot build a model."""
        problems = []
        if self.d_model < 1 or self.n_layer < 0 or self.vocab_size < 1:
            problems.append(f"d_model={self.d_model}, n_layer={self.n_layer}, vocab_size={self.vocab_size} "
                            "must be positive")
        if self.bidirectional and self.bidirectional_strategy not in (None, "add", "ew_multiply"):
            problems.append(f"bidirectional_strategy={self.bidirectional_strategy!r} is not 'add' or 'ew_multiply'")
        if self.rcps and self.complement_map is None:
            problems.append("rcps=True needs a complement_map")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling={self.pooling!r} is not one of {POOLINGS}")
        if self.head_activation not in ACTIVATIONS:
            problems.append(f"head_activation={self.head_activation!r} is not one of {ACTIVATIONS}")
        if not 0.0 <= self.head_dropout < 1.0:
            problems.append(f"head_dropout={self.head_dropout} is not in [0, 1)")
        if any(h < 1 for h in self.head_hidden_sizes):
            problems.append(f"head_hidden_sizes={self.head_hidden_sizes} must be positive")
        unknown = set(self.ssm_cfg or {}) - set(DEFAULT_SSM_CFG) - {"layer_idx"}
        if unknown:
            problems.append(f"ssm_cfg has unknown keys {sorted(unknown)} (known: {sorted(DEFAULT_SSM_CFG)})")
        if problems:
            raise ValueError("invalid CaduceusConfig: " + "; ".join(problems))

    # ---- derived values -----------------------------------------------------------------------------------
    @property
    def mamba_kwargs(self) -> dict[str, Any]:
        """`ssm_cfg` with the Mamba defaults filled in."""
        return DEFAULT_SSM_CFG | dict(self.ssm_cfg or {})

    def pad_vocab(self) -> None:
        """Round `vocab_size` up to `pad_vocab_size_multiple` and let every new id complement to itself.

        Mutates the config, as the released model constructor does; calling it again changes nothing.
        """
        multiple = self.pad_vocab_size_multiple or 1
        if self.vocab_size % multiple:
            self.vocab_size += multiple - self.vocab_size % multiple
        if self.complement_map is not None:
            for i in range(len(self.complement_map), self.vocab_size):
                self.complement_map.setdefault(i, i)

    def complement_ids(self) -> list[int]:
        """The complement of every token id 0..vocab_size-1 (after `pad_vocab`), for the RC buffers."""
        cmap = self.complement_map or {}
        missing = [i for i in range(self.vocab_size) if i not in cmap]
        if missing:
            raise ValueError(f"complement_map has no entry for token ids {missing} (vocab_size={self.vocab_size})")
        ids = [cmap[i] for i in range(self.vocab_size)]
        bad = [v for v in ids if not 0 <= v < self.vocab_size]
        if bad:
            raise ValueError(f"complement_map maps to ids {bad} outside the vocabulary of {self.vocab_size}")
        return ids

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> CaduceusConfig:
        """A config of a named released shape (see `PRESETS`), with field overrides applied."""
        if name not in PRESETS:
            raise KeyError(f"unknown Caduceus preset {name!r}; known presets: {', '.join(PRESETS)}")
        return cls(**(_copy(PRESETS[name]) | overrides))


def _int_key(item: tuple[Any, Any]) -> int:
    return int(item[0])


def _copy(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in fields.items()}


def _preset(d_model: int, n_layer: int, rcps: bool) -> dict[str, Any]:
    return {
        "d_model": d_model,
        "n_layer": n_layer,
        "vocab_size": DNA_VOCAB_SIZE,
        "pad_vocab_size_multiple": 8,
        "ssm_cfg": dict(DEFAULT_SSM_CFG),
        "rms_norm": True,
        "fused_add_norm": True,
        "residual_in_fp32": False,
        "norm_epsilon": 1e-5,
        "initializer_cfg": None,
        "bidirectional": True,
        "bidirectional_strategy": "add",
        "bidirectional_weight_tie": True,
        "rcps": rcps,
        "complement_map": dict(DNA_COMPLEMENT_MAP),
    }


PRESETS: dict[str, dict[str, Any]] = {
    f"caduceus-{kind}-{seqlen}-d{d_model}-l{n_layer}": _preset(d_model, n_layer, rcps=kind == "ps")
    for seqlen, d_model, n_layer in [("1k", 118, 4), ("1k", 128, 4), ("1k", 256, 4), ("131k", 256, 16)]
    for kind in ("ps", "ph")
}
"""Shapes of the released Caduceus checkpoints: ``caduceus-{ps|ph}-{seqlen}-d{d_model}-l{n_layer}``.

"ps" = reverse-complement parameter sharing (rcps=True); "ph" = the plain bidirectional model, used with
post-hoc conjoining (set ``conjoin_eval=True``).
"""
PRESETS.update({f"caduceus-{kind}-1k-d{d_model}-l2": _preset(d_model, 2, rcps=kind == "ps")
                for d_model in (64, 96) for kind in ("ps", "ph")})
# ^ not released checkpoints: small shapes for training from scratch on CPU (ph-d96 is fine-tuning's default,
#   ph-d64 pre-training's).
