"""Stage configuration: nested frozen dataclasses, and command-line overrides of them parsed by tyro.

A stage is a `TrainConfig`; the named ones are Python functions in `flmjax.configs` (one module per
name). `with_overrides(config, ["--optimizer.peak_lr=8e-6", ...])` returns a copy with command-line
overrides applied: tyro parses and type-checks every value against the dataclass fields (their
comments are the `--help` text), and an unknown field or a value of the wrong type is one
`ConfigError` line. tyro was chosen over draccus and fiddle: plain dataclasses stay the config (no
builder objects as in fiddle), nested fields are dotted flags out of the box, and --help shows every
field's type, default and comment.

To add a section (e.g. `lora.rank`): a frozen dataclass with defaults (validate in `__post_init__`,
raising `ConfigError`) and a field `lora: LoraConfig = LoraConfig()` of `TrainConfig`; `--lora.rank=8`
then works, and stage configs set it with `dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import tyro

from flmjax import storage
from flmjax.config import DTYPES, MODEL_CONFIGS, ConfigError, DType, LoraConfig, ModelConfig, Numerics, get_model_config
from flmjax.data.config import CorpusSpec, DataConfig, get_data_config
from flmjax.train.loss import LossCoefficients

FROM_BASE = "base"  # TrainConfig.model: the architecture of init.params_from


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW on a cosine schedule. Peak/end rates are the papers' (Table 3); the rest are choices
    (training.md section 5): betas (0.9, 0.95), weight decay 0.1, clipping 1.0, a short warmup."""

    peak_lr: float = 2e-4
    end_lr: float = 1e-5
    warmup_fraction: float = 0.01  # of the stage's steps, linear from 0; 0 = none
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float = 1.0  # global gradient norm; 0 = no clipping

    def __post_init__(self) -> None:
        if not (self.peak_lr > 0 and self.end_lr >= 0):
            raise ConfigError(f"optimizer: peak_lr must be > 0 and end_lr >= 0, got {self.peak_lr}, {self.end_lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"optimizer.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ConfigError(f"optimizer betas must be in [0, 1), got ({self.b1}, {self.b2})")
        if self.weight_decay < 0 or self.clip_norm < 0 or self.eps <= 0:
            raise ConfigError("optimizer: weight_decay and clip_norm must be >= 0 and eps > 0")

    def warmup_steps(self, total_steps: int) -> int:
        return int(math.ceil(self.warmup_fraction * total_steps))


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """Direct preference optimisation (`flmjax.train.dpo`) on preference pairs; the defaults are
    BayLing-Duplex's Stage II (Table 4's best row): beta 0.5, lambda_ftx 0.5."""

    beta: float = 0.5  # the KL coefficient
    lambda_ftx: float = 0.5  # weight of the auxiliary SFT term on the chosen sequences

    def __post_init__(self) -> None:
        if not self.beta > 0 or self.lambda_ftx < 0:
            raise ConfigError(f"dpo: beta must be > 0 and lambda_ftx >= 0, got {self.beta}, {self.lambda_ftx}")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes; one may be -1 (all remaining devices)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self) -> None:
        sizes = (self.data, self.fsdp, self.tensor)
        if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
            raise ConfigError(f"mesh sizes must be positive (one may be -1), got {sizes}")


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Where a run's state comes from when its own run directory has no checkpoint yet, in this order:
    a full trainer state (`state_from`), parameters only (`params_from`: a trainer checkpoint or an
    HF-layout export: how a stage starts from the previous one), Qwen2.5(-VL) LM weights in HF
    safetensors (`qwen_from`: how post1 starts), or random parameters when `random_ok`."""

    state_from: str = ""
    params_from: str = ""
    qwen_from: str = ""
    random_ok: bool = False
    seed: int = 0  # fresh parameters (random init, and what Qwen weights do not cover)
    # What the error names when none of the above is given (post1 asks for Qwen weights instead).
    start_hint: str = "--init.params_from=DIR: the previous stage's run directory or export"


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 1000
    keep: int = 3  # most recent checkpoints kept
    async_save: bool = True

    def __post_init__(self) -> None:
        if self.every_steps < 1 or self.keep < 1:
            raise ConfigError("checkpoint.every_steps and checkpoint.keep must be >= 1")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    every_steps: int = 10
    eval_every_steps: int = 1000  # 0 = no periodic evaluation (one still runs at the end if eval_batches)
    eval_batches: int = 8  # batches of the held-out split per evaluation; 0 = no evaluation
    tensorboard: bool = True
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        if self.every_steps < 1 or self.eval_every_steps < 0 or self.eval_batches < 0:
            raise ConfigError("log.every_steps must be >= 1, log.eval_every_steps and log.eval_batches >= 0")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """After the stage, write its final parameters in the release's HF layout (`launch/export.py` does
    the same for any checkpoint)."""

    dir: str = ""  # empty: no export
    dtype: DType = "bfloat16"  # the release's

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"export.dtype must be one of {DTYPES}, got {self.dtype!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training stage. Defaults are the papers' Table 3 for post1 (the named stages: flmjax/configs/)."""

    stage: str = "post1"
    epochs: float = 3.3  # the schedule length is ceil(epochs * samples / global batch) steps ...
    steps: int = 0  # ... unless this is > 0
    # Gradient accumulation: each global batch (data.global_batch) is split into this many micro-batches;
    # -1: as many as leave one sequence per batch shard (data x fsdp devices) in each.
    micro_batches: int = 1
    run_root: str = "runs"  # run directories (and JAX's compilation cache) go under this; relative to the cwd
    run_dir: str = ""  # default: <run_root>/<stage>
    distributed: bool = False  # jax.distributed.initialize (also when JAX_COORDINATOR_ADDRESS is set)
    compile_cache: bool = True  # JAX's persistent compilation cache in <run_root>/jax_cache (resumes, chains)
    # The architecture: a name in flmjax.config.MODEL_CONFIGS (flm7b, demo, tiny), or "base": the one
    # init.params_from holds (its config.json, or a run's checkpoint).
    model: str = "flm7b"
    numerics: Numerics = Numerics(dtype="bfloat16", remat="full")  # how this run computes with it
    data: DataConfig = get_data_config("post1")  # corpora, layout, global batch (Table 3: 256), data seed
    eval_data: DataConfig | None = None  # a held-out split (e.g. a dev corpus) for evaluation; None: none
    # The bundled demo corpus (every stage's default data) is for the demo only: any other stage reading
    # it has not been pointed at real data yet, and stops at once saying so.
    demo_data_ok: bool = False
    loss: LossCoefficients = LossCoefficients()
    dpo: DPOConfig | None = None  # set: the stage optimises DPO + SFT on preference pairs (data.preference)
    optimizer: OptimizerConfig = OptimizerConfig()
    mesh: MeshConfig = MeshConfig()
    init: InitConfig = InitConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()
    export: ExportConfig = ExportConfig()
    lora: LoraConfig | None = None  # LoRA adapters trained on the frozen base init.params_from; None: full training

    def __post_init__(self) -> None:
        if self.model not in MODEL_CONFIGS and self.model != FROM_BASE:
            raise ConfigError(f"model must be one of {', '.join(sorted(MODEL_CONFIGS))}, got {self.model!r}")
        if self.micro_batches == 0 or self.micro_batches < -1 or self.data.global_batch % abs(self.micro_batches):
            batch, micro = self.data.global_batch, self.micro_batches
            raise ConfigError(f"data.global_batch {batch} must be a multiple of micro_batches {micro} (or -1)")
        if self.epochs <= 0 and self.steps <= 0:
            raise ConfigError("set epochs > 0 or steps > 0")
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if (self.dpo is None) != (self.data.preference is None):
            raise ConfigError("dpo and data.preference go together: DPO trains on preference pairs, and only DPO does")

    @property
    def model_config(self) -> ModelConfig:
        """The architecture named by `model` (or init.params_from's), computing with `numerics`, with
        the LoRA adapters of `lora`."""
        if self.model != FROM_BASE:
            model = get_model_config(self.model, numerics=self.numerics)
        else:
            from flmjax.interop import trainer_checkpoint

            path = self.init.params_from
            if path and trainer_checkpoint.is_trainer_checkpoint(path):
                model = trainer_checkpoint.model_config_of(path, self.numerics)
            elif path and storage.exists(os.path.join(path, "config.json")):
                model = ModelConfig.from_json_file(os.path.join(path, "config.json"), self.numerics)
            else:
                raise ConfigError(
                    f"model={FROM_BASE} reads the architecture from init.params_from, which is "
                    f"{path or 'not given'}: give an HF-layout directory or a run directory"
                )
        return model if self.lora is None else model.replace(lora=self.lora)

    @property
    def resolved_run_dir(self) -> str:
        """Absolute, or a bucket's path (gs://...: checkpoints, metrics and TensorBoard go there)."""
        run_dir = self.run_dir or os.path.join(self.run_root, self.stage)
        return storage.absolute(run_dir)

    def total_steps(self, num_samples: int) -> int:
        """The schedule's length: `steps`, or epochs x samples / batch (papers: fractional epochs)."""
        if self.steps > 0:
            return self.steps
        return max(1, int(math.ceil(self.epochs * num_samples / self.data.global_batch)))


def with_corpus(config: TrainConfig, corpus: str) -> TrainConfig:
    """`config` reading one corpus instead of its corpora: a prepared folder (with index.json), or what
    preparation reads (a JSONL manifest, `moshi:FILE.jsonl`, `tfds:NAME`, `hf:PATH`), prepared on first use."""
    if storage.exists(os.path.join(corpus, "index.json")):  # local or in a bucket (gs://...)
        spec = CorpusSpec("corpus", prepared=corpus)
    elif (
        corpus.startswith(("moshi:", "tfds:", "hf:"))
        or os.path.isfile(corpus)
        or (storage.is_remote(corpus) and storage.exists(corpus))
    ):
        spec = CorpusSpec("corpus", manifest=corpus)
    else:
        raise ConfigError(f"--corpus={corpus}: not a prepared folder (no index.json), a manifest, moshi:, tfds: or hf:")
    return dataclasses.replace(config, data=dataclasses.replace(config.data, corpora=(spec,)))


# --- command-line overrides ------------------------------------------------------------------------

# A mixture on the command line: one `name=NAME,prepared=DIR[,weight=W]` (or `manifest=FILE`) per corpus.
_CORPUS_FIELDS = {"name": str, "manifest": str, "prepared": str, "weight": float}


def corpus_from_arg(text: str) -> CorpusSpec:
    """`name=wenet,prepared=/data/wenet,weight=0.5` -> CorpusSpec (the inverse of `corpus_to_arg`)."""
    fields: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _CORPUS_FIELDS:
            raise ConfigError(f"{item!r} is not one of {', '.join(f'{k}=...' for k in _CORPUS_FIELDS)}")
        try:
            fields[key.strip()] = _CORPUS_FIELDS[key.strip()](value)
        except ValueError:
            raise ConfigError(f"{key.strip()} must be a number, got {value!r}") from None
    if "name" not in fields:
        raise ConfigError(f"{text!r} has no name=...")
    return CorpusSpec(**fields)


def corpus_to_arg(corpus: CorpusSpec) -> str:
    fields = {f.name: getattr(corpus, f.name) for f in dataclasses.fields(corpus)}
    return ",".join(f"{k}={v}" for k, v in fields.items() if v is not None and not (k == "weight" and v == 1.0))


_REGISTRY = tyro.constructors.ConstructorRegistry()


@_REGISTRY.primitive_rule
def _corpora_rule(type_info: tyro.constructors.PrimitiveTypeInfo) -> tyro.constructors.PrimitiveConstructorSpec | None:
    if type_info.type != tuple[CorpusSpec, ...]:
        return None
    return tyro.constructors.PrimitiveConstructorSpec(
        nargs="*",
        metavar="name=NAME,prepared=DIR[,weight=W] ...",
        instance_from_str=lambda args: tuple(corpus_from_arg(a) for a in args),
        is_instance=lambda x: isinstance(x, tuple) and all(isinstance(c, CorpusSpec) for c in x),
        str_from_instance=lambda corpora: [corpus_to_arg(c) for c in corpora],
    )


_BOOLS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _bool_from_arg(args: list[str]) -> bool:
    try:
        return _BOOLS[args[0].lower()]
    except KeyError:
        raise ValueError(f"expected True or False, got {args[0]!r}") from None


@_REGISTRY.primitive_rule
def _bool_rule(type_info: tyro.constructors.PrimitiveTypeInfo) -> tyro.constructors.PrimitiveConstructorSpec | None:
    """Booleans take a value in any case (`--log.tensorboard=false`), as every other field does."""
    if type_info.type is not bool:
        return None
    return tyro.constructors.PrimitiveConstructorSpec(
        nargs=1,
        metavar="{True,False}",
        instance_from_str=_bool_from_arg,
        is_instance=lambda x: isinstance(x, bool),
        str_from_instance=lambda x: [str(x)],
    )


def _flag(argument: Any) -> str:
    """The flag of a tyro argument (internal type: fall back to its text)."""
    names = getattr(getattr(argument, "lowered", None), "name_or_flags", None)
    return names[0] if names else str(argument)


def _one_line(event: Any) -> None:
    """tyro's parse-failure hook: raise a one-line ConfigError instead of tyro's boxed message.

    tyro 1.0's hook module is private (tyro._errors; the version is pinned in requirements.txt): any
    event this does not know falls through to tyro's own message.
    """
    from tyro import _errors

    if isinstance(event, _errors.UnrecognizedArgs):
        fields = [t.lstrip("-").partition("=")[0] for t in event.tokens if t.startswith("--")]
        what = f"config field '{fields[0]}'" if fields else f"argument {event.tokens[0]!r}"
        raise ConfigError(f"unknown {what} (--help lists every field with its type)")
    if isinstance(event, _errors.InvalidChoice):
        choices = ", ".join(event.choices)
        raise ConfigError(f"{_flag(event.argument)} must be one of {choices}, got {event.value!r}")
    if isinstance(event, _errors.BadValue):
        raise ConfigError(f"{_flag(event.argument)}: missing or unexpected value {event.offending_value or ''}".strip())
    if isinstance(event, _errors.InstantiationFailure):
        where = f"{_flag(event.argument)}: " if event.argument is not None else ""
        raise ConfigError(f"{where}{' '.join(event.message.split())}")


@contextmanager
def _one_line_errors() -> Iterator[None]:
    from tyro import _errors

    with _errors.on_parse_error(_one_line):
        yield


def with_overrides(
    config: TrainConfig, args: Sequence[str], prog: str = "flmjax-train", description: str | None = None
) -> TrainConfig:
    """`config` with command-line overrides (`--optimizer.peak_lr=8e-6`, `--steps 12`) applied.

    Booleans take values (`--log.tensorboard=False`); `--help` prints every field with its type and
    this config's value as the default, and exits (SystemExit 0).
    """
    markers = (tyro.conf.FlagConversionOff, tyro.conf.AvoidSubcommands)
    with _one_line_errors():
        try:
            return tyro.cli(
                TrainConfig,
                default=config,
                args=list(args),
                prog=prog,
                description=description,
                use_underscores=True,
                config=markers,
                registry=_REGISTRY,
            )
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:  # a field's own validation, raised while constructing
            raise ConfigError(" ".join(str(e).split())) from None
