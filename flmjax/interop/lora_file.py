"""The adapters-only file: a LoRA run's factors as one safetensors file, with what they adapt.

Tensors are named by their path in the adapter tree (`backbone/layers/self_attn/q_proj_kernel_a`, layers
stacked as in training), fp32. The header's metadata holds `format` ("flmjax-lora"), `lora` (rank,
alpha, dropout, targets as JSON), `base_fingerprint` (`flmjax.model.lora.fingerprint` of the base the
adapters were trained on), `base_config` (its config.json) and `base` (its path then, for people).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from flax import traverse_util

from flmjax.config import LoraConfig
from flmjax.errors import FlmjaxError
from flmjax.interop.safetensors_io import SafetensorsError, SafetensorsFile, write_safetensors

FORMAT = "flmjax-lora"


class LoraFileError(FlmjaxError):
    """An adapters file that is unreadable, not flmjax's, or made for another base checkpoint."""


def save_adapters(
    path: str | os.PathLike,
    adapters: dict,
    lora: LoraConfig,
    base_fingerprint: str,
    base_config: dict[str, Any],
    base: str,
) -> None:
    flat = {"/".join(k): np.asarray(v, np.float32) for k, v in traverse_util.flatten_dict(adapters).items()}
    metadata = {
        "format": FORMAT,
        "lora": json.dumps(
            {"rank": lora.rank, "alpha": lora.alpha, "dropout": lora.dropout, "targets": list(lora.targets)}
        ),
        "base_fingerprint": base_fingerprint,
        "base_config": json.dumps(base_config),
        "base": base,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    entries = [(name, a.shape, np.dtype(np.float32)) for name, a in sorted(flat.items())]
    write_safetensors(path, entries, flat.__getitem__, metadata)


def read_adapters(path: str | os.PathLike) -> tuple[dict, LoraConfig, dict[str, str]]:
    """(adapter tree of numpy arrays, its LoraConfig, the header's metadata)."""
    try:
        f = SafetensorsFile(path)
    except FileNotFoundError:
        raise LoraFileError(f"{path}: no such adapters file") from None
    except (SafetensorsError, OSError, ValueError) as e:
        raise LoraFileError(f"{path}: not a safetensors file ({e})") from None
    meta = f.metadata or {}
    if meta.get("format") != FORMAT:
        raise LoraFileError(f"{path}: not an flmjax LoRA adapters file (format {meta.get('format')!r})")
    fields = json.loads(meta["lora"])
    lora = LoraConfig(fields["rank"], fields["alpha"], fields["dropout"], tuple(fields["targets"]))
    adapters = traverse_util.unflatten_dict({tuple(n.split("/")): np.array(f.tensor(n)) for n in f.keys()})
    return adapters, lora, meta
