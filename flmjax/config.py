"""Model configuration: the named architectures and the mapping to and from the release's `config.json`."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any, Literal, get_args

from flmjax.errors import FlmjaxError
from flmjax.tokens import RELEASE_TOKENS, WORD_TOKENS, TokenIds

Remat = Literal["none", "full", "dots", "dots_no_batch"]
DType = Literal["float32", "bfloat16", "float16"]
REMAT_POLICIES: tuple[str, ...] = get_args(Remat)
DTYPES: tuple[str, ...] = get_args(DType)


class ConfigError(FlmjaxError):
    """A configuration (or a checkpoint's config.json) that cannot describe an FLM-Audio model."""


@dataclasses.dataclass(frozen=True)
class DepformerConfig:
    """The depth transformer (`aud_output_layers`). Head size, MLP width and eps come from the code."""

    dim: int = 1024
    num_layers: int = 6
    num_heads: int = 16
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return int(8 * self.dim / 3)  # 2730 for dim 1024, as the release computes it


LORA_TARGETS = ("attention", "mlp", "depformer", "audio_tables")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters on the frozen base's weights (`flmjax.model.lora`): W + scale * A @ B.

    `targets`: groups of weights that get adapters: "attention" (the backbone's q/k/v/o), "mlp" (its
    gate/up/down), "depformer" (its attention and per-position MLPs), "audio_tables" (the backbone's
    speak/listen embeddings, the depformer's code embeddings and output heads). `alpha`: scale =
    alpha / rank; 0 means scale 2 (moshi-finetune's `scaling`). `dropout` applies to the adapters' inputs
    of projections (not to table look-ups) while training.
    """

    rank: int = 128
    alpha: float = 0.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("attention", "mlp")

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1, got {self.rank}")
        if self.alpha < 0 or not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.alpha must be >= 0 and lora.dropout in [0, 1), got {self.alpha}, {self.dropout}")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        if unknown or not self.targets:
            raise ConfigError(f"lora.targets must be a non-empty subset of {LORA_TARGETS}, got {self.targets}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank if self.alpha else 2.0


@dataclasses.dataclass(frozen=True)
class Numerics:
    """How a run computes with an architecture, chosen per run and never saved with a checkpoint."""

    param_dtype: DType = "float32"  # the parameters (in training: master weights and AdamW moments)
    dtype: DType = "float32"  # compute
    scan_layers: bool = True  # False unrolls the same scanned parameters (one parameter layout either way)
    remat: Remat = "none"  # rematerialisation of each backbone layer in the backward pass
    attention_chunk: int = 0  # >0: attend in query blocks of this many columns (memory of long sequences)
    decode_block: int = 256  # decoding reads the ring cache in blocks of this many slots, only filled ones (0: one)
    text_loss_chunk: int = 0  # >0: the training loss makes text logits for blocks of this many columns only

    def __post_init__(self) -> None:
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        for name in ("attention_chunk", "decode_block", "text_loss_chunk"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def for_inference(cls, dtype: DType = "float32", **changes: Any) -> Numerics:
        """Parameters held in the compute dtype unless `param_dtype` says otherwise."""
        return cls(**{"param_dtype": dtype, **changes, "dtype": dtype})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The architecture: every field but `numerics` and `lora` is what a checkpoint's config.json records."""

    hidden_size: int = 3584
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    head_dim: int = 128
    intermediate_size: int = 18944
    rms_norm_eps: float = 1e-5
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 8192
    qkv_bias: bool = True
    o_bias: bool = False
    use_mup: bool = True
    input_mult: float = 1.0
    output_mult: float = 28.0
    mup_scale_factor: float = 28.0
    initializer_range: float = 0.02
    depformer: DepformerConfig = DepformerConfig()
    tokens: TokenIds = RELEASE_TOKENS
    numerics: Numerics = Numerics()  # per run, not part of the architecture
    lora: LoraConfig | None = None  # per run: adapters read from the `lora` variable collection (flmjax.model.lora)

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.depformer.dim % self.depformer.num_heads:
            raise ConfigError("depformer dim must be a multiple of its head count")
        t = self.tokens
        names = ["text_wait", "text_asr", "text_answer", "bos", "eos"]
        names += ["text_silence", "text_assistant", "text_pad", "text_epad"] if t.state_tokens else []
        for name in names:
            if not 0 <= getattr(t, name) < t.text_vocab_size:
                raise ConfigError(
                    f"token {name}={getattr(t, name)} is outside the text vocabulary ({t.text_vocab_size})"
                )

    @property
    def vocab_size(self) -> int:
        return self.tokens.text_vocab_size

    @property
    def num_codebooks(self) -> int:
        return self.tokens.num_codebooks

    @property
    def audio_vocab_size(self) -> int:
        return self.tokens.audio_vocab_size

    @property
    def text_logit_scale(self) -> float:
        return self.output_mult / self.mup_scale_factor if self.use_mup else 1.0

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def with_numerics(self, **changes: Any) -> ModelConfig:
        """The same architecture computing otherwise (`with_numerics(decode_block=0)`)."""
        return dataclasses.replace(self, numerics=dataclasses.replace(self.numerics, **changes))

    # --- the release's config.json -------------------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        t, d = self.tokens, self.depformer
        return {
            "architectures": ["FLMAudioForCausalLM"],
            "model_type": "FLMAudio",
            "vocab_size": t.text_vocab_size,
            "aud_vocab_size": t.audio_vocab_size,
            "aud_channel": t.num_codebooks,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": self.initializer_range,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "attention_bias": self.qkv_bias,
            "disable_att_o_bias": self.qkv_bias and not self.o_bias,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "use_mup": self.use_mup,
            "input_mult": self.input_mult,
            "output_mult": self.output_mult,
            "mup_scale_factor": self.mup_scale_factor,
            "tie_word_embeddings": False,
            "bos_token_id": t.bos,
            "eos_token_id": t.eos,
            "use_cache": True,
            "torch_dtype": "bfloat16",
            "mm_token_info": t.to_hf_token_info(),
            "aud_depthgpt": {
                "n_embd": d.dim,
                "n_layer": d.num_layers,
                "n_head": d.num_heads,
                "dropout": 0.0,
                "bias": False,
                "use_cmlp": True,
                "use_rmsnorm": True,
                "use_swiglu": True,
            },
        }

    @classmethod
    def from_hf_dict(cls, config: Mapping[str, Any], numerics: Numerics = Numerics()) -> ModelConfig:
        """Build from a release-style `config.json`; unused fields (e.g. `mrope_section`) are ignored."""
        required = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
        missing = [k for k in required if k not in config]
        if missing:
            raise ConfigError(f"config.json lacks {', '.join(missing)}")
        dep = config.get("aud_depthgpt")
        if dep is None:
            raise ConfigError("config.json lacks aud_depthgpt (is this an FLM-Audio checkpoint?)")
        for flag, want in (("use_cmlp", True), ("use_rmsnorm", True), ("use_swiglu", True), ("bias", False)):
            if bool(dep.get(flag, want)) != want:
                raise ConfigError(f"aud_depthgpt.{flag}={dep.get(flag)} is not supported (the release uses {want})")
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        qkv_bias = bool(config.get("attention_bias", False))
        return cls(
            hidden_size=hidden,
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            intermediate_size=int(config["intermediate_size"]),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(config.get("rope_theta", 10000.0)),
            max_position_embeddings=int(config.get("max_position_embeddings", 8192)),
            qkv_bias=qkv_bias,
            o_bias=qkv_bias and not bool(config.get("disable_att_o_bias", False)),
            use_mup=bool(config.get("use_mup", False)),
            input_mult=float(config.get("input_mult", 1.0)),
            output_mult=float(config.get("output_mult", 1.0)),
            mup_scale_factor=float(config.get("mup_scale_factor", 1.0)),
            initializer_range=float(config.get("initializer_range", 0.02)),
            depformer=DepformerConfig(
                dim=int(dep["n_embd"]), num_layers=int(dep["n_layer"]), num_heads=int(dep["n_head"])
            ),
            tokens=TokenIds.from_hf_config(config),
            numerics=numerics,
        )

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, numerics: Numerics = Numerics()) -> ModelConfig:
        from flmjax import storage  # a config.json in a bucket too (gs://...)

        try:
            data = json.loads(storage.path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no config.json") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_hf_dict(data, numerics)


# Small models keep the real text vocabulary's special ids out of reach, so they carry their own.
_SMALL_TOKENS = TokenIds(text_vocab_size=512, text_wait=509, text_asr=510, text_answer=511, bos=506, eos=507)

MODEL_CONFIGS: dict[str, ModelConfig] = {
    # The release: Qwen2.5-7B backbone + 6-layer depformer. 8,221,022,720 parameters.
    "flm7b": ModelConfig(),
    # Unit tests: every dimension distinct so a transposed weight cannot go unnoticed.
    "tiny": ModelConfig(
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        intermediate_size=96,
        max_position_embeddings=512,
        rope_theta=10000.0,
        output_mult=4.0,
        mup_scale_factor=4.0,
        depformer=DepformerConfig(dim=48, num_layers=2, num_heads=4),
        tokens=_SMALL_TOKENS,
    ),
    # The demo: the real text vocabulary (so the Qwen tokenizer's ids fit), small everything else.
    "demo": ModelConfig(
        hidden_size=128,
        num_layers=4,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        intermediate_size=384,
        max_position_embeddings=2048,
        output_mult=4.0,
        mup_scale_factor=4.0,
        depformer=DepformerConfig(dim=96, num_layers=2, num_heads=4),
    ),
    # The school (launch/bench_learning.py): trained from scratch on the synthetic curriculum on a CPU;
    # the curriculum's word vocabulary (1024 ids) instead of Qwen's 151668-row text head.
    "school": ModelConfig(
        hidden_size=128,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        head_dim=32,
        intermediate_size=384,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        output_mult=4.0,
        mup_scale_factor=4.0,
        depformer=DepformerConfig(dim=32, num_layers=1, num_heads=2),
        tokens=WORD_TOKENS,
    ),
}
# BayLing-Duplex's dialogue-state tokens appended after each vocabulary (`TokenIds.with_state_tokens`):
# the text embedding and head grow by 4 rows; train with `data.layout_config.text_states="bayling"`.
for _name in ("flm7b", "demo", "tiny"):
    _base = MODEL_CONFIGS[_name]
    MODEL_CONFIGS[f"{_name}_state"] = _base.replace(tokens=_base.tokens.with_state_tokens())


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    try:
        config = MODEL_CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown model config {name!r}; known: {', '.join(sorted(MODEL_CONFIGS))}") from None
    return config.replace(**overrides) if overrides else config
