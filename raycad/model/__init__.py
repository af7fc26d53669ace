"""raycad.model: Caduceus (bidirectional, reverse-complement-equivariant Mamba) in pure PyTorch.

Checkpoint-exact with the authors' Hugging Face implementation (same config fields, state-dict keys and
outputs), fast on CPU, and using the fused ``mamba_ssm`` / ``causal_conv1d`` kernels on CUDA when installed.

    >>> from raycad.model import CaduceusConfig, CaduceusForSequenceClassification
    >>> model = CaduceusForSequenceClassification(CaduceusConfig.from_preset("caduceus-ps-1k-d128-l4"))
    >>> model = CaduceusForSequenceClassification.from_pretrained("path/or/repo-id", num_labels=2)

Public names: `CaduceusConfig`, `PRESETS`, `CaduceusModel` (backbone), `CaduceusForSequenceClassification`,
`CaduceusForMaskedLM`, `CheckpointMismatchError`, `CaduceusTokenizer` (see `raycad.model.tokenizer`) and the
selective scan in `raycad.model.scan`.
"""

from raycad.model.configuration import PRESETS, CaduceusConfig
from raycad.model.modeling import (
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusModel,
    CaduceusPreTrainedModel,
    CheckpointMismatchError,
)

__all__ = [
    "PRESETS",
    "CaduceusConfig",
    "CaduceusForMaskedLM",
    "CaduceusForSequenceClassification",
    "CaduceusModel",
    "CaduceusPreTrainedModel",
    "CheckpointMismatchError",
]

try:  # the tokenizer lives in its own module (owned by the data side); export it when present
    from raycad.model.tokenizer import CaduceusTokenizer  # noqa: F401
except ImportError:  # pragma: no cover
    pass
else:
    __all__.append("CaduceusTokenizer")
