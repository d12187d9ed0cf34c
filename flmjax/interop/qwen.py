"""Post-training 1 starts from Qwen2.5-VL's language model (or a Qwen2.5 LM): its decoder layers, final
norm, text embedding and LM head are copied into FLM-Audio's parameters; the audio embedding tables and
the depformer keep their fresh initialisation.

Names: Qwen2.5 and older Qwen2.5-VL files call the LM `model.*`; newer Qwen2.5-VL files call it
`model.language_model.*` (the vision tower, `visual.*` / `model.visual.*`, is ignored). The decoder
tensors have exactly the names and layouts of FLM-Audio's own HF table (`flmjax.interop.hf`), which this
module reuses. Qwen's embedding has 151936 rows (151665 real tokens, the rest padding); FLM-Audio's has
151668: the first rows are copied and the added ids (`<wait>`, `<asr>`, `<answer>`) start as the mean
of the real rows, in the embedding and in the LM head. A tied Qwen (no `lm_head.weight`) uses its
embedding as the head.
"""

from __future__ import annotations

import functools
import json
import operator
import os
from collections import defaultdict

import jax
import numpy as np

from flmjax.config import ModelConfig
from flmjax.interop.hf import CheckpointMismatchError, TensorSpec, tensor_specs
from flmjax.interop.safetensors_io import SafetensorsError, SafetensorsFile, iter_checkpoint_files

_LM_PREFIXES = ("model.language_model.", "model.")
_EMBED = "model.embed_tokens.weight"  # Qwen's name (FLM-Audio's is model.embed_tokens.text_embeddings.weight)
_HEAD = "lm_head.weight"


def _lm_name(name: str) -> str | None:
    """A checkpoint tensor's name in Qwen2.5's own LM naming, or None for anything outside the LM."""
    if name == _HEAD:
        return name
    for prefix in _LM_PREFIXES:
        if name.startswith(prefix) and not name.startswith("model.visual."):
            return "model." + name[len(prefix) :]
    return None


def check_qwen_config(directory: str | os.PathLike, config: ModelConfig) -> None:
    """The Qwen checkpoint's LM must have FLM-Audio's backbone shape (Qwen2.5-VL may nest it in text_config)."""
    path = os.path.join(directory, "config.json")
    try:
        with open(path) as f:
            qwen = json.load(f)
    except FileNotFoundError:
        raise CheckpointMismatchError(
            f"{directory}: no config.json (expected a Qwen2.5 / Qwen2.5-VL HF directory)"
        ) from None
    text = qwen.get("text_config") or qwen
    want = {
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "intermediate_size": config.intermediate_size,
    }
    wrong = [
        f"{k} {text.get(k, qwen.get(k))} (model has {v})" for k, v in want.items() if text.get(k, qwen.get(k)) != v
    ]
    if wrong:
        raise CheckpointMismatchError(f"{directory}: Qwen LM does not fit the model: {', '.join(wrong)}")


def _text_rows(table: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Qwen [V_qwen, E] rows -> FLM-Audio [V, E]: shared ids copied, added ids (and any rows Qwen lacks)
    set to the mean of the real rows (those below the first added id)."""
    ids = config.tokens
    added = sorted({ids.text_wait, ids.text_asr, ids.text_answer})
    real = table[: min(added[0], table.shape[0])].astype(np.float64)
    out = np.empty((config.vocab_size, table.shape[1]), np.float64)
    rows = min(config.vocab_size, table.shape[0])
    out[:rows] = table[:rows]
    out[rows:] = real.mean(axis=0)
    out[added] = real.mean(axis=0)
    return out


def load_qwen_lm(directory: str | os.PathLike, config: ModelConfig, params: dict) -> dict:
    """`params` (a full FLM-Audio parameter tree: host or device arrays) with every LM parameter replaced
    by Qwen's. Device arrays keep their shardings; one stacked parameter is on the host at a time."""
    directory = os.fspath(directory)
    check_qwen_config(directory, config)
    try:
        files: dict[str, tuple[SafetensorsFile, str]] = {}  # Qwen LM name -> (file, name in the file)
        for file in iter_checkpoint_files(directory):
            for name in file.keys():
                lm = _lm_name(name)
                if lm is not None:
                    files[lm] = (file, name)
    except SafetensorsError as e:
        raise CheckpointMismatchError(str(e)) from None

    def tensor(name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        if name not in files:
            raise CheckpointMismatchError(f"{directory}: missing tensor {name} (of the Qwen LM)")
        file, stored = files[name]
        value = file.tensor(stored)
        if shape is not None and value.shape != shape:
            raise CheckpointMismatchError(
                f"{directory}: tensor {name} has shape {value.shape}, the model implies {shape}"
            )
        return value

    by_path: dict[tuple[str, ...], list[TensorSpec]] = defaultdict(list)
    for spec in tensor_specs(config):
        if spec.path[0] == "backbone":
            by_path[spec.path].append(spec)

    def replace(path: tuple[str, ...], host: np.ndarray) -> None:
        node = functools.reduce(operator.getitem, path[:-1], params)
        old = node[path[-1]]
        host = host.astype(old.dtype)
        node[path[-1]] = jax.device_put(host, old.sharding) if isinstance(old, jax.Array) else host

    params = jax.tree_util.tree_map(lambda x: x, params)  # a new tree: the caller's is left as it was
    for path, specs in by_path.items():
        host = np.empty(functools.reduce(operator.getitem, path[:-1], params)[path[-1]].shape, np.float32)
        for spec in specs:
            host[spec.index] = spec.from_hf(tensor(spec.hf_name, spec.hf_shape), host.shape[len(spec.index) :])
        replace(path, host)
    embedding = tensor(_EMBED)
    if embedding.ndim != 2 or embedding.shape[1] != config.hidden_size:
        raise CheckpointMismatchError(
            f"{directory}: {_EMBED} has shape {embedding.shape}, expected [*, {config.hidden_size}]"
        )
    replace(("embed_tokens", "text_embeddings"), _text_rows(embedding, config))
    head = tensor(_HEAD, None) if _HEAD in files else embedding  # tied embeddings (small Qwen2.5 models)
    if head.shape[1] != config.hidden_size:
        raise CheckpointMismatchError(
            f"{directory}: {_HEAD} has shape {head.shape}, expected [*, {config.hidden_size}]"
        )
    replace(("lm_head",), _text_rows(head, config).T)
    return params
