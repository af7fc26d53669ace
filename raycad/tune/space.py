"""The hyper-parameter search space of a sweep, and how a sampled point becomes a `FinetuneConfig`.

A `SearchSpace` lists, per hyper-parameter, either the candidate values (a list: a categorical choice; one
value fixes the parameter) or a numeric `Range` (uniform or log-uniform). Defaults: learning rate
log-uniform in [1e-4, 1e-2], weight decay, head pooling, head MLP depth (0, 1 or 2 hidden layers) with
per-layer widths and dropout, batch size, and a method that fits the model (`SearchSpace.for_base`): LoRA
(rank {4, 8, 16, 32}, alpha as a multiple of the rank, dropout) on pretrained weights, full fine-tuning of a
random init with its width and depth searched (LoRA adapters on a random, frozen backbone learn little).
Model preset, epochs, LR schedule and RC augmentation are searched when given. Users override any field from
a YAML/JSON file or ``--set space.lr.high=3e-3``.

Some parameters only exist given others (LoRA's rank when the method is LoRA, the second layer's width when
the head has two layers), so the space is handed to Optuna as a define-by-run function (`DefineByRun`):
Optuna samples only what a trial uses, and TPE models the conditional structure. A sampled point is a flat
dict of plain values (`TrialParams`); `apply` maps it onto a base `FinetuneConfig`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from raycad.config import Config, ConfigError, FinetuneConfig

if TYPE_CHECKING:
    import optuna

TrialParams = dict[str, Any]
"""A sampled point: flat parameter names (see `PARAM_NAMES`) to plain values."""

PARAM_NAMES = (
    "method", "lora_r", "lora_alpha_multiple", "lora_dropout", "lr", "weight_decay", "pooling",
    "head_layers", "head_hidden_1", "head_hidden_2", "head_dropout", "batch_size",
    "preset", "d_model", "n_layer", "epochs", "schedule", "rc_augment",
)
MODEL_SHAPE = ("preset", "d_model", "n_layer")
"""Dimensions that change the network's shape: only for a randomly initialised model."""


class Range(Config):
    """A numeric interval: uniform, or log-uniform with ``log: true``; ``step`` quantizes a uniform range."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Range:
        if not self.low <= self.high:
            raise ValueError(f"range low={self.low} must not exceed high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("a log range cannot have a step")
        return self


FloatDim = Range | list[float]
"""A float hyper-parameter: an interval, or a list of candidate values."""


class SearchSpace(Config):
    """What a sweep searches over. A list is a categorical choice (one item = fixed); a `Range` is sampled."""

    method: list[Literal["lora", "full"]] | None = None
    """Fine-tuning methods to try: LoRA adapters + head, and/or the whole network ("full"). None = what fits
    the model: LoRA on pretrained weights (``base.model.pretrained``), full fine-tuning on a random init."""
    lora_r: list[int] = Field(default_factory=lambda: [4, 8, 16, 32])
    lora_alpha_multiple: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0])
    """LoRA alpha as a multiple of the rank (alpha = multiple * r)."""
    lora_dropout: FloatDim = Field(default_factory=lambda: [0.0, 0.05, 0.1])
    lr: FloatDim = Field(default_factory=lambda: Range(low=1e-4, high=1e-2, log=True))
    weight_decay: FloatDim = Field(default_factory=lambda: [0.0, 0.01, 0.1])
    pooling: list[Literal["mean", "max", "first", "last"]] = Field(
        default_factory=lambda: ["mean", "max", "first", "last"])
    head_layers: list[Literal[0, 1, 2]] = Field(default_factory=lambda: [0, 1, 2])
    """Hidden layers of the classification head: 0 = the paper's single linear layer."""
    head_hidden: list[int] = Field(default_factory=lambda: [32, 64, 128])
    """Candidate widths of each hidden head layer (sampled per layer)."""
    head_dropout: FloatDim = Field(default_factory=lambda: [0.0, 0.1, 0.2])
    batch_size: list[int] = Field(default_factory=lambda: [16, 32, 64])
    """Global batch sizes; each must be divisible by the number of train workers."""
    preset: list[str] | None = None
    """Model presets (`raycad.model.PRESETS`) to try; None = ``base.model.preset``. Random init only."""
    d_model: list[int] | None = None
    """Widths to try (``model.overrides.d_model``). None = the base width and twice it on a random init,
    untouched on pretrained weights."""
    n_layer: list[int] | None = None
    """Depths to try (``model.overrides.n_layer``). None = the base depth and twice it on a random init,
    untouched on pretrained weights."""
    epochs: list[int] | None = None
    """Epoch budgets to try (``train.epochs``, which also sets the LR schedule's length); None = the base's.
    ASHA's horizon is the largest."""
    schedule: list[Literal["cosine", "constant"]] | None = None
    """LR schedules to try (``schedule.name``); None = the base's."""
    rc_augment: FloatDim | None = None
    """Reverse-complement augmentation probabilities to try (``data.rc_augment``); None = the base's."""

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        for name in ("method", "lora_r", "lora_alpha_multiple", "pooling", "head_layers", "head_hidden",
                     "batch_size", "lora_dropout", "weight_decay", "head_dropout", "lr", "preset", "d_model",
                     "n_layer", "epochs", "schedule", "rc_augment"):
            value = getattr(self, name)
            if isinstance(value, list) and not value:
                raise ValueError(f"search space field {name!r} has no candidate values")
        if any(v < 1 for v in (self.d_model or []) + (self.n_layer or []) + (self.epochs or [])):
            raise ValueError("d_model, n_layer and epochs values must be >= 1")
        if any(r < 1 for r in self.lora_r) or any(h < 1 for h in self.head_hidden):
            raise ValueError("lora_r and head_hidden values must be >= 1")
        if any(b < 1 for b in self.batch_size) or any(m <= 0 for m in self.lora_alpha_multiple):
            raise ValueError("batch_size values must be >= 1 and lora_alpha_multiple values > 0")
        return self

    # ---- fitting the space to the model ------------------------------------------------------------------
    def for_base(self, base: FinetuneConfig) -> SearchSpace:
        """This space with its automatic dimensions (None) resolved for ``base``'s model.

        Pretrained weights: LoRA, the shape fixed. A random init: full fine-tuning, and the width and depth
        searched over the base shape and twice it (LoRA adapters on a random, frozen backbone learn little).
        """
        updates: dict[str, Any] = {}
        pretrained = base.model.pretrained is not None
        if self.method is None:
            updates["method"] = ["lora"] if pretrained else ["full"]
        if not pretrained and self.preset is None:
            from raycad.model import PRESETS

            shape = {**PRESETS[base.model.preset], **base.model.overrides}
            for name in ("d_model", "n_layer"):
                if getattr(self, name) is None:
                    updates[name] = sorted({int(shape[name]), 2 * int(shape[name])})
        return self.model_copy(update=updates) if updates else self

    def max_epochs(self, base: FinetuneConfig) -> int:
        """The longest trial: ASHA's horizon."""
        return max(self.epochs) if self.epochs else base.train.epochs

    # ---- sampling ----------------------------------------------------------------------------------------
    def sample(self, trial: optuna.Trial) -> TrialParams:
        """Sample one point with Optuna's define-by-run API; conditional parameters are sampled only if used.

        Automatic dimensions (None) are not sampled: resolve them with `for_base` first.
        """
        if self.method is None:
            raise ValueError("the space's method is automatic: resolve it with SearchSpace.for_base(base) first")
        params: TrialParams = {"method": _suggest(trial, "method", self.method)}
        if params["method"] == "lora":
            params["lora_r"] = _suggest(trial, "lora_r", self.lora_r)
            params["lora_alpha_multiple"] = _suggest(trial, "lora_alpha_multiple", self.lora_alpha_multiple)
            params["lora_dropout"] = _suggest(trial, "lora_dropout", self.lora_dropout)
        params["lr"] = _suggest(trial, "lr", self.lr)
        params["weight_decay"] = _suggest(trial, "weight_decay", self.weight_decay)
        params["pooling"] = _suggest(trial, "pooling", self.pooling)
        params["head_layers"] = layers = _suggest(trial, "head_layers", self.head_layers)
        for i in range(1, layers + 1):
            params[f"head_hidden_{i}"] = _suggest(trial, f"head_hidden_{i}", self.head_hidden)
        if layers:
            params["head_dropout"] = _suggest(trial, "head_dropout", self.head_dropout)
        params["batch_size"] = _suggest(trial, "batch_size", self.batch_size)
        for name in ("preset", "d_model", "n_layer", "epochs", "schedule", "rc_augment"):
            if getattr(self, name) is not None:
                params[name] = _suggest(trial, name, getattr(self, name))
        return params

    def check_against(self, base: FinetuneConfig) -> None:
        """Fail before any trial starts if a candidate cannot form a valid config with ``base``."""
        workers = base.scaling.num_workers
        bad = [b for b in self.batch_size if b % workers]
        if bad:
            raise ConfigError(f"space.batch_size values {bad} are not divisible by scaling.num_workers={workers} "
                              "(batch_size is the global batch)")
        shaped = [name for name in MODEL_SHAPE if getattr(self, name) is not None]
        if shaped and base.model.pretrained:
            raise ConfigError(f"space.{', space.'.join(shaped)} change the network's shape, which pretrained "
                              f"weights ({base.model.pretrained}) fix: drop them or use a random init")
        if self.preset:
            from raycad.model import PRESETS

            unknown = [p for p in self.preset if p not in PRESETS]
            if unknown:
                raise ConfigError(f"space.preset {unknown} are not presets; known: {sorted(PRESETS)}")


class DefineByRun:
    """The picklable define-by-run function handed to `OptunaSearch` (it is saved with the searcher state)."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> None:
        self.space.sample(trial)  # OptunaSearch records every suggest_* call as the trial's config


def _suggest(trial: optuna.Trial, name: str, dim: Any) -> Any:
    if isinstance(dim, Range):
        if dim.low == dim.high:
            return trial.suggest_float(name, dim.low, dim.high)
        return trial.suggest_float(name, dim.low, dim.high, log=dim.log, step=dim.step)
    return trial.suggest_categorical(name, list(dim))


def apply(params: TrialParams, base: FinetuneConfig) -> FinetuneConfig:
    """``base`` with a sampled point applied; parameters absent from ``params`` keep their base values."""
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise ConfigError(f"unknown search parameters {unknown}; known: {list(PARAM_NAMES)}")
    updates: dict[str, Any] = {}
    method = params.get("method")
    if method == "full":
        updates["peft.method"] = "none"
    elif method == "lora" or "lora_r" in params:
        updates["peft.method"] = "lora"
    r = int(params.get("lora_r", base.peft.r))
    if "lora_r" in params:
        updates["peft.r"] = r
    if "lora_alpha_multiple" in params:
        updates["peft.alpha"] = float(params["lora_alpha_multiple"]) * r
    if "lora_dropout" in params:
        updates["peft.dropout"] = float(params["lora_dropout"])
    if "lr" in params:
        updates["optim.lr"] = float(params["lr"])
    if "weight_decay" in params:
        updates["optim.weight_decay"] = float(params["weight_decay"])
    if "pooling" in params:
        updates["head.pooling"] = params["pooling"]
    if "head_layers" in params:
        layers = int(params["head_layers"])
        missing = [f"head_hidden_{i}" for i in range(1, layers + 1) if f"head_hidden_{i}" not in params]
        if missing:
            raise ConfigError(f"head_layers={layers} needs {missing} in the trial parameters")
        updates["head.hidden_sizes"] = [int(params[f"head_hidden_{i}"]) for i in range(1, layers + 1)]
        updates["head.dropout"] = float(params.get("head_dropout", 0.0)) if layers else 0.0
    elif "head_dropout" in params:
        updates["head.dropout"] = float(params["head_dropout"])
    if "batch_size" in params:
        updates["train.batch_size"] = int(params["batch_size"])
    if "preset" in params:
        updates["model.preset"] = params["preset"]
    shape = {name: int(params[name]) for name in ("d_model", "n_layer") if name in params}
    if shape:
        updates["model.overrides"] = {**base.model.overrides, **shape}
    if "epochs" in params:
        updates["train.epochs"] = int(params["epochs"])
    if "schedule" in params:
        updates["schedule.name"] = params["schedule"]
    if "rc_augment" in params:
        updates["data.rc_augment"] = float(params["rc_augment"])
    try:
        return base.with_overrides(updates)
    except ConfigError as err:
        raise ConfigError(f"trial parameters {params} do not form a valid config: {err}") from None


def describe(params: TrialParams) -> str:
    """A short human-readable summary of a sampled point, e.g. ``lora r8 a16 lr 2.1e-03 mean head[64]``."""
    parts = []
    if params.get("method", "lora") == "lora" and "lora_r" in params:
        alpha = params.get("lora_alpha_multiple", 0) * params["lora_r"]
        parts.append(f"lora r{params['lora_r']} a{alpha:g} do{params.get('lora_dropout', 0):g}")
    elif params.get("method") == "full":
        parts.append("full")
    if "lr" in params:
        parts.append(f"lr {params['lr']:.2e}")
    if "weight_decay" in params:
        parts.append(f"wd {params['weight_decay']:g}")
    if "pooling" in params:
        parts.append(str(params["pooling"]))
    if "head_layers" in params:
        sizes = [params[f"head_hidden_{i}"] for i in range(1, int(params["head_layers"]) + 1)]
        parts.append(f"head{sizes}" + (f" do{params.get('head_dropout', 0):g}" if sizes else ""))
    if "batch_size" in params:
        parts.append(f"bs {params['batch_size']}")
    if "preset" in params:
        parts.append(str(params["preset"]))
    if "d_model" in params or "n_layer" in params:
        parts.append(f"d{params.get('d_model', '-')} l{params.get('n_layer', '-')}")
    if "epochs" in params:
        parts.append(f"{params['epochs']} ep")
    if "schedule" in params:
        parts.append(str(params["schedule"]))
    if "rc_augment" in params:
        parts.append(f"rc {params['rc_augment']:g}")
    return " ".join(parts)
