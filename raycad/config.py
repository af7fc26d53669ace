"""The typed configuration of a raycad run.

One `FinetuneConfig` (or `PretrainConfig`) object is built once (from a YAML/JSON file, CLI flags and ``--set key=value``
overrides), validated here, and then handed unchanged from the CLI to the Ray job, to the `TorchTrainer`
and into every train worker. Nothing downstream re-parses strings: code reads typed attributes.

Other run kinds (a tuning sweep, a HealthOmics import, a SageMaker launch) define their own top-level
config classes on the same `Config` base so they load, override and save the same way.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from typing_extensions import Self


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the source and the field."""


class Config(BaseModel):
    """Base of every raycad config: unknown keys are errors, assignments are validated, numbers are finite and
    never booleans (``optim.lr=true`` is an error, not 1.0)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(),
                              allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name and _holds_bool(value) and not _accepts_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"expected {_type_name(cls.model_fields[info.field_name].annotation)}, "
                             f"not a boolean ({value!r})")
        return value

    # ---- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']} (got {e['input']!r})"
                                 for e in err.errors())
            raise ConfigError(f"invalid {cls.__name__} from {source}: {problems}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"cannot parse config file {path}: {err}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigError(f"cannot parse config file {path}{where}: {getattr(err, 'problem', None) or err}") \
                from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level, not {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None,
             **fields: Any) -> Self:
        """File (optional) -> ``fields`` (dotted keys allowed, None values ignored) -> ``key=value`` overrides."""
        data = cls.from_file(path).to_dict() if path else {}
        for key, value in fields.items():
            if value is not None:
                _set_dotted(data, key.replace("__", "."), value)
        for key, value in map(_parse_override, overrides or []):
            _set_dotted(data, key, value)
        return cls.from_dict(data, source=str(path) if path else "<overrides>")

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> Self:
        """A copy with dotted-key overrides applied, e.g. ``{"optim.lr": 1e-3}`` or ``["optim.lr=1e-3"]``."""
        data = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else map(_parse_override, overrides)
        for key, value in items:
            _set_dotted(data, key, value)
        return type(self).from_dict(data, source="<overrides>")

    # ---- output --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        else:
            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def _holds_bool(value: Any) -> bool:
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value))


def _accepts_bool(annotation: Any) -> bool:
    """Whether a field of this type may hold a boolean (bool itself, Any, a model, or a container of those)."""
    if annotation is bool or annotation is Any or (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        return True
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return any(isinstance(a, bool) for a in args)
    if typing.get_origin(annotation) is dict:
        return True
    return any(_accepts_bool(a) for a in args)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation) if a is not type(None))
    return getattr(annotation, "__name__", str(annotation))


def _parse_value(raw: str) -> Any:
    """``"1e-3"`` -> 0.001, ``"[4, 8]"`` -> [4, 8], ``"true"`` -> True, anything else stays a string."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=1e-3"`` -> ``("optim.lr", 0.001)``; anything without ``key=`` is an error."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-3)")
    return key.strip(), _parse_value(raw)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


# ================================================================================================================
# Fine-tuning
# ================================================================================================================


def check_run_name(name: str | None) -> str | None:
    """A run/sweep name is one directory name: no path separators, no "." / "..", nothing hidden or empty."""
    if name is None:
        return None
    if not name.strip() or "/" in name or "\\" in name or "\0" in name or name.startswith(".") or name != name.strip():
        raise ValueError(f"{name!r} is not a plain name (letters, digits, '-', '_', '.'; no '/', no leading '.'): "
                         f"it names a directory under the output directory")
    return name


class ModelSection(Config):
    """Which Caduceus to fine-tune."""

    pretrained: str | None = None
    """Local directory (config.json + model.safetensors) or Hugging Face repo id; None = random init."""
    preset: str = "caduceus-ph-1k-d64-l2"
    """Named shape (see `raycad.model.PRESETS`) used for random init when `pretrained` is None. The default is
    small enough to pre-train from scratch on 2 CPU cores (fine-tuning's default: `FinetuneModelSection`)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """CaduceusConfig fields to change on top of the preset / checkpoint config (e.g. {"n_layer": 2})."""
    gradient_checkpointing: bool = False
    scan_impl: Literal["auto", "fused", "chunked", "reference", "mamba_ssm"] = "auto"
    """Selective-scan implementation (`raycad.model.scan.scan_path`): "auto" = mamba_ssm's CUDA kernel on GPU
    when installed, the fused numba kernels on CPU when numba is available, else the chunked PyTorch scan."""


class HeadSection(Config):
    """Classification head on top of the backbone."""

    pooling: Literal["mean", "max", "first", "last"] = "mean"
    pool_ignore_padding: bool = True
    """Pool only over non-[PAD] tokens (first/last = first/last real token); False = the released head's pooling
    over every position, padding included."""
    hidden_sizes: list[int] = Field(default_factory=list)
    """Empty = the paper's single linear layer; otherwise an MLP with these hidden sizes."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    activation: Literal["gelu", "relu", "silu", "tanh"] = "gelu"
    conjoin_train: bool = False
    """Train on both strands and average their logits (post-hoc conjoining at train time)."""
    conjoin_eval: bool = True
    """Evaluate on both strands and average their logits (Caduceus-Ph); PS models are already RC-invariant."""


LORA_TARGETS = ("in_proj", "x_proj", "dt_proj", "out_proj")
"""The Mamba linear layers the mixer calls as modules, so a LoRA wrapper on them takes part in the forward."""


class PeftSection(Config):
    """Parameter-efficient fine-tuning. With method "lora" only adapters and the head are trained."""

    method: Literal["none", "lora"] = "none"
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: list(LORA_TARGETS), min_length=1)
    """Mamba projections that get adapters: any of `LORA_TARGETS`. Other parameters (``conv1d``, ``A_log``,
    ``D``) are read as raw tensors by the mixer, so an adapter on them would never be used: refused."""

    @field_validator("target_modules")
    @classmethod
    def _only_called_modules(cls, value: list[str]) -> list[str]:
        bad = [name for name in value if name not in LORA_TARGETS]
        if bad:
            raise ValueError(f"LoRA target modules {bad} are not modules the Mamba mixer calls (it reads their "
                             f"weights directly, so an adapter would get no gradient); allowed: "
                             f"{', '.join(LORA_TARGETS)}")
        return list(dict.fromkeys(value))


class OptimSection(Config):
    """AdamW."""

    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"each beta must be in [0, 1), got {betas}")
        return betas


class FinetuneModelSection(ModelSection):
    """Which Caduceus to fine-tune; from scratch, the width the recipe sweep chose (BENCHMARKS.md)."""

    preset: str = "caduceus-ph-1k-d96-l2"
    """Named shape (see `raycad.model.PRESETS`) used for random init when `pretrained` is None. The default
    trains from scratch on 2 CPU cores within the main job's 15-minute budget (BENCHMARKS.md, "Choosing the
    default")."""


class FinetuneOptimSection(OptimSection):
    """AdamW, with the fine-tuning recipe's defaults (BENCHMARKS.md, "Choosing the default")."""

    lr: float = Field(1.7e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class ScheduleSection(Config):
    """Learning-rate schedule: linear warmup then cosine decay to ``min_lr_ratio * lr`` (or constant)."""

    name: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    """Fraction of all optimizer steps spent warming up."""
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class SourceSection(Config):
    """How sequence records are read, cleaned and augmented: the options fine-tuning and pre-training share."""

    format: Literal["auto", "csv", "tsv", "parquet", "fasta", "fastq", "bam", "hf"] = "auto"
    sequence_column: str = "sequence"
    cram_reference: str | None = None
    """Reference FASTA for decoding CRAM files."""
    invalid_chars: Literal["unk", "n", "reject"] = "unk"
    """Characters outside ACGTN (after RNA's U is read as T): map to [UNK], map to N, or reject the record."""
    bad_records: Literal["error", "skip"] = "error"
    """Malformed records (empty, unknown label, ...): raise naming file+record, or skip and count."""
    val_fraction: float = Field(0.1, ge=0, lt=1)
    """Held-out fraction when no validation data is given (seeded)."""
    rc_augment: float = Field(0.5, ge=0, le=1)
    """Probability of reverse-complementing a training sequence."""
    limit: int | None = Field(None, ge=1)
    """Keep at most this many records per split (smoke tests, quick sweeps)."""


class DataSection(SourceSection):
    """Where labelled sequences come from and how they become token batches."""

    task: str | None = None
    """A Genomic Benchmarks task name or alias; None with no `train` URI = the bundled demo data."""
    train: str | None = None
    """URI of a user's training data: local path, glob, s3://..., healthomics://..., or a HF dataset dir."""
    validation: str | None = None
    """Validation data; None = a stratified `val_fraction` split of `train`."""
    test: str | None = None
    label_column: str = "label"
    class_names: list[str] | None = None
    """Class names in label-id order; string labels (and FASTA/FASTQ file stems) map through this."""
    label_from: Literal["auto", "file", "header", "manifest", "column", "tag"] = "auto"
    """Where labels come from: table column, FASTA/FASTQ header ``label=``, file layout (class = parent folder
    or file stem), manifest, or a BAM tag; "auto" uses the record's own label, else the file layout."""
    manifest: str | None = None
    """CSV/TSV of ``path,label`` (labels whole files) or ``id,label`` (labels records)."""
    label_tag: str = "LB"
    """BAM/CRAM: the read tag (or field of the read's @RG header line, e.g. LB, SM) that holds the label."""
    max_length: int | None = Field(None, ge=1)
    """Token length; None = the task's published max_length, or for a user's data the 99th percentile of record
    lengths capped at the model's trained length (records above it are truncated, and counted)."""
    padding: Literal["max_length", "longest"] = "longest"
    """Width of a batch: "longest" = its longest record rounded up to `pad_multiple` (capped at `max_length`),
    "max_length" = always `max_length`. Recorded in the exported raycad.json; evaluate/predict follow it."""
    pad_multiple: int = Field(16, ge=1)
    """With padding "longest": batch widths are multiples of this (few distinct shapes)."""
    length_buckets: bool = True
    """With padding "longest" and records of different widths: train on length-bucketed batches (records of
    similar length together, every worker on its slice of the same batch; see
    `raycad.data.batching.bucket_dataset`). The bucketed training split is held in Ray's object store (spilled
    to disk when larger); false streams it."""
    truncation: Literal["left", "right", "center"] = "right"
    """Where an over-long sequence is cut (Hugging Face ``truncation_side``): "right" cuts the end and keeps the
    start (the paper's pipeline), "left" keeps the end, "center" cuts both ends equally and keeps the middle."""
    test_fraction: float = Field(0.1, ge=0, lt=1)
    """Without a test source (a user's single labelled file): this stratified, seeded fraction of the
    training data becomes the test split (before `val_fraction` of the rest becomes validation); 0 = no
    test split (results then report the validation split)."""

    @field_validator("class_names")
    @classmethod
    def _distinct_class_names(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        if len(names) < 2:
            raise ValueError(f"a classifier needs at least two class names, got {names}")
        if len({str(n) for n in names}) != len(names) or any(not str(n).strip() for n in names):
            duplicates = sorted({str(n) for n in names if [str(m) for m in names].count(str(n)) > 1})
            raise ValueError(f"class names must be distinct and non-empty, got {names}"
                             + (f" (repeated: {duplicates})" if duplicates else ""))
        return names


class LoopSection(Config):
    """The optimisation loop: what fine-tuning and pre-training share."""

    batch_size: int = Field(32, ge=1)
    """Global batch size (all workers, one optimizer step before accumulation): each worker gets its share."""
    eval_batch_size: int = Field(128, ge=1)
    epochs: int = Field(4, ge=1)
    grad_clip: float | None = 1.0
    grad_accum: int = Field(1, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """bf16/fp16 autocast applies on GPU only; CPU runs fp32."""
    seed: int = 0
    torch_threads: int | None = None
    """torch.set_num_threads per worker; None = CPUs assigned to the worker."""


class TrainSection(LoopSection):
    """The fine-tuning loop: the shared loop settings plus early stopping and weight averaging."""

    epochs: int = Field(10, ge=1)
    """Passes over the training split (the default fills ~11 of the main job's 15 minutes on 2 CPU cores)."""
    batch_size: int = Field(16, ge=1)
    """As in `LoopSection`; fine-tuning's default is the recipe sweep's 16 (pre-training keeps 32)."""

    early_stopping_metric: str = "val_accuracy"
    early_stopping_mode: Literal["max", "min"] = "max"
    patience: int | None = None
    """Stop after this many epochs without improvement of the metric; None = never."""
    weight_average: float | None = Field(0.99, gt=0, lt=1)
    """Decay of a moving average of the trainable weights (`raycad.train.ema`), updated after every optimizer
    step; validation, the best checkpoint, the test evaluation and the exported model use the average.
    None = off; 0.99 (the default) averages over roughly the last 100 steps."""
    cv_folds: int = Field(0, ge=0)
    """k >= 2: k-fold cross-validation of the training split, the Caduceus paper's Genomic Benchmarks protocol
    (`raycad.train.cv`): k runs, each trained on k - 1 stratified, seeded folds, early-stopped on the held-out
    fold and scored on the test split; reported per fold and as mean and max - min. 0 = one run."""

    @model_validator(mode="after")
    def _check_cv(self) -> TrainSection:
        if self.cv_folds == 1:
            raise ValueError("train.cv_folds=1 is not cross-validation: use 0 (one run) or k >= 2 folds")
        return self


class ScalingSection(Config):
    """How many Ray Train workers and what each gets."""

    num_workers: int = Field(2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, ge=0)


class RunSection(Config):
    """Where results and checkpoints go."""

    name: str | None = None
    """Run name; None = derived from the task and a timestamp. A plain name: it is a directory under output_dir."""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        return check_run_name(name)
    output_dir: str = "raycad_runs"
    """Local directory for results.json, metrics.csv, plots and the exported model (under <output_dir>/<name>)."""
    storage_path: str | None = None
    """Ray Train storage for checkpoints (local path or s3://); None = <output_dir>/<name>/ray."""
    max_failures: int = Field(0, ge=-1)
    checkpoints_to_keep: int = Field(2, ge=1)
    export_model: bool = True


class BaselineSection(Config):
    """The k-mer baseline fitted beside every run on the same records and metrics (`raycad.baseline`)."""

    enabled: bool = True
    k: list[int] = Field(default_factory=lambda: [3, 4, 5, 6])
    """Candidate k-mer lengths; the one with the best validation accuracy is kept."""
    C: list[float] = Field(default_factory=lambda: [0.3, 1.0, 3.0, 10.0, 30.0])
    """Candidate inverse L2 strengths of the logistic regression, chosen on validation with k."""
    canonical: bool = False
    """Count a k-mer and its reverse complement as one feature (strand-independent counts)."""
    max_records: int = Field(200_000, ge=1)
    """Fit and score on at most this many records per split (the first ones; the training split is shuffled
    for small data); the rest are counted in ``records_left_out``, not used."""

    @model_validator(mode="after")
    def _check(self) -> BaselineSection:
        if not self.k or any(not 1 <= k <= 8 for k in self.k):
            raise ValueError(f"baseline.k must list k-mer lengths in 1..8, got {self.k}")
        if not self.C or any(c <= 0 for c in self.C):
            raise ValueError(f"baseline.C must list positive values, got {self.C}")
        return self


class StorageSection(Config):
    """Where S3 lives, for data reads, checkpoint storage, sweeps and published outputs (`raycad.storage`)."""

    endpoint: str | None = None
    """Endpoint of an S3-compatible store (MinIO, moto); None = AWS (or ``AWS_ENDPOINT_URL_S3``)."""
    region: str | None = None


LEGACY_STORAGE_KEYS = {"s3_endpoint": "endpoint", "s3_region": "region"}
"""``data.s3_endpoint`` / ``data.s3_region`` of older configs (and ``--set`` overrides): when given, they set
``storage.endpoint`` / ``storage.region``."""


def _move_legacy_storage_keys(raw: Any) -> Any:
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        return raw
    data = dict(raw["data"])
    moved = {new: data.pop(old) for old, new in LEGACY_STORAGE_KEYS.items() if old in data}
    if not moved:
        return raw
    storage = raw.get("storage") or {}
    storage = storage.to_dict() if isinstance(storage, Config) else storage
    return {**raw, "data": data, "storage": {**storage, **{k: v for k, v in moved.items() if v is not None}}}


class TrainingJobConfig(Config):
    """The sections every training job has (its ``data`` and ``train`` sections are its own)."""

    model: ModelSection = Field(default_factory=ModelSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    scaling: ScalingSection = Field(default_factory=ScalingSection)
    run: RunSection = Field(default_factory=RunSection)
    storage: StorageSection = Field(default_factory=StorageSection)

    @model_validator(mode="before")
    @classmethod
    def _legacy_storage(cls, raw: Any) -> Any:
        return _move_legacy_storage_keys(raw)

    @model_validator(mode="after")
    def _check_global_batch(self) -> Self:
        train = getattr(self, "train", None)
        if train is not None and train.batch_size % self.scaling.num_workers:
            raise ValueError(f"train.batch_size={train.batch_size} is not divisible by "
                             f"scaling.num_workers={self.scaling.num_workers} (batch_size is the global batch)")
        return self


class FinetuneConfig(TrainingJobConfig):
    """Everything a fine-tuning run needs; the single object passed CLI -> job -> trainer -> train loop."""

    model: FinetuneModelSection = Field(default_factory=FinetuneModelSection)
    optim: FinetuneOptimSection = Field(default_factory=FinetuneOptimSection)
    head: HeadSection = Field(default_factory=HeadSection)
    peft: PeftSection = Field(default_factory=PeftSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    baseline: BaselineSection = Field(default_factory=BaselineSection)


# ================================================================================================================
# Pre-training
# ================================================================================================================


class PretrainDataSection(SourceSection):
    """Unlabelled sequences for masked-LM pre-training, cut into windows of ``max_length`` tokens."""

    train: list[str] = Field(default_factory=list)
    """URIs (local paths, globs, s3://, healthomics://); empty = the bundled demo's *training* split
    (sequences only, never its validation or test records)."""
    validation: list[str] = Field(default_factory=list)
    """Held-out files; empty = `holdout` records, else a seeded `val_fraction` of the windows."""
    holdout: list[str] = Field(default_factory=list)
    """Record ids (contigs such as ``chr8``) whose windows are held out instead of trained on."""
    max_length: int = Field(1024, ge=2)
    """Window length in tokens; records longer than this are cut into windows, shorter ones (reads) are
    kept whole (left-padded)."""
    stride: int | None = Field(None, ge=1)
    """Distance between window starts; None = ``max_length`` (adjacent windows). The last window of a record
    ends at the record's end, so every base is covered."""
    max_n_fraction: float = Field(0.5, ge=0, le=1)
    """Windows with more than this fraction of N / [UNK] tokens are dropped (and counted)."""

    @field_validator("train", "validation", "holdout", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> PretrainDataSection:
        if self.stride is not None and self.stride > self.max_length:
            raise ValueError(f"data.stride={self.stride} > data.max_length={self.max_length} would skip bases")
        return self


class MaskingSection(Config):
    """The masked-LM objective (BERT-style, as in the Caduceus paper)."""

    probability: float = Field(0.15, gt=0, lt=1)
    """Fraction of (base) positions chosen as prediction targets."""
    mask_token: float = Field(0.8, ge=0, le=1)
    """Of the chosen positions: replaced by [MASK] ..."""
    random_token: float = Field(0.1, ge=0, le=1)
    """... by a uniformly random base A/C/G/T; the rest stay unchanged."""
    mask_n: bool = True
    """N positions can be targets (the paper masks every base position); special tokens and padding never."""

    @model_validator(mode="after")
    def _check(self) -> MaskingSection:
        if self.mask_token + self.random_token > 1:
            raise ValueError(f"mlm.mask_token + mlm.random_token = {self.mask_token + self.random_token} > 1")
        return self


class PretrainLoopSection(LoopSection):
    """The pre-training loop: the shared loop settings plus a step / token budget and reporting bands."""

    max_steps: int | None = Field(None, ge=1)
    """Stop after this many optimizer steps (the LR schedule spans them); None = `epochs` over the data."""
    max_tokens: int | None = Field(None, ge=1)
    """Token budget (windows x max_length, padding included), converted to optimizer steps."""
    log_every_steps: int = Field(50, ge=1)
    """A step band: masked-token loss / accuracy over each band of this many steps is logged and reported."""
    checkpoint_every_steps: int | None = Field(None, ge=1)
    """Also checkpoint mid-epoch every this many steps (resumable there); epochs always end with one."""


class PretrainConfig(TrainingJobConfig):
    """Everything a masked-LM pre-training run needs (``raycad pretrain``), from the CLI to the train loop."""

    data: PretrainDataSection = Field(default_factory=PretrainDataSection)
    mlm: MaskingSection = Field(default_factory=MaskingSection)
    train: PretrainLoopSection = Field(default_factory=PretrainLoopSection)
