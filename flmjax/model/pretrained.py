"""`FLMAudio`: a config, its parameters and jitted entry points; loads and writes the release's layout."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from flmjax import storage
from flmjax.config import DType, LoraConfig, ModelConfig, Numerics, get_model_config
from flmjax.interop import trainer_checkpoint
from flmjax.interop.hf import checkpoint_quantization, load_hf_params, save_hf_params
from flmjax.interop.lora_file import LoraFileError, read_adapters
from flmjax.model import lora as lora_lib
from flmjax.model.backbone import KVCache, init_kv_cache
from flmjax.model.depformer import DepformerCache, init_depformer_cache
from flmjax.model.flm_audio import FLMAudioLM
from flmjax.model.quant import QUANTIZE_CHOICES, is_quantized, quantize_params


def _example_tokens(config: ModelConfig, batch: int = 1, columns: int = 2) -> jax.Array:
    return jnp.broadcast_to(jnp.asarray(config.tokens.initial_column), (batch, columns, config.tokens.num_streams))


def _abstract_boxed_variables(config: ModelConfig) -> dict:
    return jax.eval_shape(lambda: FLMAudioLM(config).init(jax.random.PRNGKey(0), _example_tokens(config)))


def abstract_params(config: ModelConfig) -> dict:
    """Shapes/dtypes of the parameter tree (no memory), logical-axis boxes removed."""
    return nn.unbox(_abstract_boxed_variables(config))["params"]


def logical_param_specs(config: ModelConfig) -> dict:
    """The logical PartitionSpec of every parameter (map to a mesh with `flmjax.sharding`)."""
    return nn.get_partition_spec(_abstract_boxed_variables(config))["params"]


class FLMAudio:
    """The FLM-Audio model: `forward` for training-style logits, `backbone_step`/`depformer_step` for decoding."""

    def __init__(self, config: ModelConfig, params: dict):
        self.config = config
        self.params = params
        self.module = FLMAudioLM(config)

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def init(cls, config: ModelConfig | str, seed: int = 0) -> FLMAudio:
        """Fresh random parameters (the release's initialisation scheme)."""
        config = get_model_config(config) if isinstance(config, str) else config
        module = FLMAudioLM(config)
        init = jax.jit(lambda key: nn.unbox(module.init(key, _example_tokens(config)))["params"])
        return cls(config, init(jax.random.PRNGKey(seed)))

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: DType = "float32",
        quantize: str = "none",
        lora: str | os.PathLike | None = None,
        **runtime: Any,
    ) -> FLMAudio:
        """Load an HF-layout directory (the release's, or one `save_pretrained` wrote), or a checkpoint
        flmjax's trainer wrote (its run directory, for the newest step, or one step directory).

        `dtype` is both the compute dtype and the dtype parameters are held in (pass `param_dtype` to
        hold them differently, e.g. fp32 master weights with bf16 compute). Other keyword arguments set
        the other fields of `Numerics` (scan_layers, remat, attention_chunk, decode_block).

        `quantize="int8"` quantises the matmul kernels after loading (flmjax.model.quant); a checkpoint
        exported in the int8 layout loads int8 whatever `quantize` says.

        `lora`: an adapters-only file (`launch/export.py --adapters-only`) merged into these weights
        before any quantisation; it must have been made for this very base (`with_lora`).
        """
        if quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES}, got {quantize!r}")
        # In a bucket: a trainer checkpoint is read there (Orbax), an export's files are staged locally.
        in_bucket_run = storage.is_remote(path) and trainer_checkpoint.is_trainer_checkpoint(path)
        if storage.is_remote(path) and not in_bucket_run:
            path = storage.local_folder(path)
        path = os.fspath(path)
        numerics = Numerics.for_inference(dtype, **runtime)
        if not in_bucket_run and not os.path.isdir(path):
            raise FileNotFoundError(f"{path}: no such checkpoint directory")
        if in_bucket_run or not os.path.exists(os.path.join(path, "config.json")):
            if trainer_checkpoint.is_trainer_checkpoint(path):
                config = trainer_checkpoint.model_config_of(path, numerics)
                run_lora = trainer_checkpoint.read_meta(path).get("lora")
                if run_lora:  # a LoRA run: its base with the adapters merged in
                    base = cls.from_pretrained(run_lora["base"], dtype="float32")
                    adapters, lora_config = restore_adapters(path, base.params)
                    merged = lora_lib.merge(base.params, adapters, lora_config)
                    model = cls(config, jax.tree_util.tree_map(lambda p: p.astype(config.numerics.param_dtype), merged))
                else:
                    model = cls(config, trainer_checkpoint.params_for_inference(path, config, abstract_params(config)))
                model = model.with_lora(lora) if lora else model
                return model.quantized() if quantize == "int8" else model
        config = ModelConfig.from_json_file(os.path.join(path, "config.json"), numerics)
        stored = checkpoint_quantization(path)
        param_dtype = np.dtype(jnp.dtype(config.numerics.param_dtype))
        host = load_hf_params(path, config, abstract_params(config), param_dtype, quantized=stored == "int8")
        model = cls(config, jax.tree_util.tree_map(jnp.asarray, host))
        if lora:
            if stored == "int8":
                raise LoraFileError(f"{path}: an int8 export; apply --lora {lora} to its bf16/fp32 base instead")
            model = model.with_lora(lora)
        return model.quantized() if quantize == "int8" and stored == "none" else model

    def quantized(self) -> FLMAudio:
        """int8 weight-only: matmul kernels int8 with per-output-channel fp32 scales (flmjax.model.quant)."""
        return FLMAudio(self.config, quantize_params(self.params))

    @property
    def is_quantized(self) -> bool:
        return is_quantized(self.params)

    def with_lora(self, path: str | os.PathLike) -> FLMAudio:
        """This model with the adapters of an adapters-only file (`launch/export.py --adapters-only`)
        merged in; the file must have been made for this very base (architecture and fingerprint)."""
        adapters, lora, meta = read_adapters(path)
        base_config = ModelConfig.from_hf_dict(json.loads(meta["base_config"]))
        if base_config.to_hf_dict() != self.config.to_hf_dict():
            raise LoraFileError(f"{path}: adapters for another architecture than this checkpoint's")
        have = lora_lib.fingerprint(self.params)
        if meta["base_fingerprint"] != have:
            raise LoraFileError(
                f"{path}: adapters for base checkpoint {meta['base_fingerprint']} ({meta.get('base')}), "
                f"but this base is {have}"
            )
        return FLMAudio(self.config, lora_lib.merge(self.params, adapters, lora))

    def save_pretrained(
        self, out_dir: str | os.PathLike, dtype: str | None = None, max_shard_bytes: int = 5 * 2**30
    ) -> None:
        """Write config.json + safetensors (sharded past `max_shard_bytes`) that the official
        `FLMAudioForCausalLM.from_pretrained` loads. Tensors keep the parameters' dtype unless `dtype`
        (e.g. "bfloat16", the release's) is given. A quantised model writes the int8 layout (README,
        "int8 decoding"), which `from_pretrained` loads and the official code does not."""
        dtype = dtype or self.config.numerics.param_dtype
        if not storage.is_remote(out_dir):
            save_hf_params(out_dir, self.config, self.params, np.dtype(jnp.dtype(dtype)), max_shard_bytes)
            return
        with tempfile.TemporaryDirectory() as local:  # written locally, then uploaded (flmjax.storage)
            save_hf_params(local, self.config, self.params, np.dtype(jnp.dtype(dtype)), max_shard_bytes)
            storage.upload_folder(local, out_dir)

    # --- computation -------------------------------------------------------------------------------
    @functools.cached_property
    def _forward(self):
        return jax.jit(lambda params, tokens: self.module.apply({"params": params}, tokens))

    @functools.cached_property
    def _backbone_step(self):
        fn = lambda params, tokens, positions, cache: self.module.apply(  # noqa: E731
            {"params": params}, tokens, positions, cache, method=FLMAudioLM.backbone_step
        )
        return jax.jit(fn, donate_argnums=(3,))

    @functools.cached_property
    def _depformer_step(self):
        fn = lambda params, hidden, prev, position, cache: self.module.apply(  # noqa: E731
            {"params": params}, hidden, prev, position, cache, method=FLMAudioLM.depformer_step
        )
        return jax.jit(fn, donate_argnums=(4,))

    def forward(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """tokens int32 [B, T+1, 17] (delayed columns, column 0 initial) -> text logits [B, T, V],
        audio logits [B, T, 8, 2050] (depformer teacher-forced with the speak codes of column t+1)."""
        tokens = jnp.asarray(tokens, jnp.int32)
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.tokens.num_streams or tokens.shape[1] < 2:
            raise ValueError(
                f"tokens must be int32 [B, T+1 >= 2, {self.config.tokens.num_streams}], got {tokens.shape}"
            )
        return self._forward(self.params, tokens)

    def init_cache(self, batch: int, window: int | None = None) -> KVCache:
        """An empty ring KV cache of `window` columns (default: max_position_embeddings)."""
        return init_kv_cache(self.config, batch, window or self.config.max_position_embeddings)

    def init_depformer_cache(self, batch: int) -> DepformerCache:
        return init_depformer_cache(self.config, batch)

    def backbone_step(self, cache: KVCache, tokens: jax.Array, positions: jax.Array):
        """New columns tokens [B, S, 17] at positions [B, S] -> (text logits [B, S, V], hidden [B, S, E], cache).
        The cache argument is donated."""
        return self._backbone_step(self.params, tokens, positions, cache)

    def depformer_step(self, cache: DepformerCache, hidden: jax.Array, prev_code: jax.Array, position: int | jax.Array):
        """Depformer position `position` for hidden [B, E] given the previous code [B] -> (logits [B, A], cache)."""
        return self._depformer_step(self.params, hidden, prev_code, jnp.asarray(position, jnp.int32), cache)


def lora_of_run(meta: dict[str, Any]) -> LoraConfig:
    """The adapters' settings a LoRA run's checkpoint meta records."""
    fields = meta["lora"]
    return LoraConfig(fields["rank"], fields["alpha"], fields["dropout"], tuple(fields["targets"]))


def restore_adapters(path: str | os.PathLike, base: Any = None) -> tuple[dict, LoraConfig]:
    """The adapters of a LoRA run's checkpoint (onto this host's first device), checked against `base`
    (the base's parameters) when given."""
    meta = trainer_checkpoint.read_meta(path)
    if not meta.get("lora"):
        raise trainer_checkpoint.CheckpointError(f"{path}: not a LoRA run (its checkpoint holds full parameters)")
    lora = lora_of_run(meta)
    if base is not None:
        want, have = meta["lora"]["base_fingerprint"], lora_lib.fingerprint(base)
        if want != have:
            raise trainer_checkpoint.CheckpointError(
                f"{path}: adapters trained on a base with fingerprint {want}, but {meta['lora']['base']} now has {have}"
            )
    shapes = abstract_params(ModelConfig.from_hf_dict(meta["model"]))
    adapters = jax.eval_shape(lambda k: lora_lib.init_adapters(shapes, lora, k), jax.random.PRNGKey(0))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), adapters)
    return trainer_checkpoint.restore_params(path, target), lora
