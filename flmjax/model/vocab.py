"""Growing the text vocabulary of trained parameters (e.g. BayLing-Duplex's four state tokens appended
after the release's ids: `TokenIds.with_state_tokens`).

A new id's embedding row starts as the mean of the trained rows (an input the model has seen the like
of); its text-head column starts at zero (logit 0: below every trained token that a trained model
prefers, above none it has learnt to avoid). Every other parameter is unchanged.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from flmjax.config import ConfigError, ModelConfig


def grows_text_vocab(old: ModelConfig, new: ModelConfig) -> bool:
    """Whether `new` is `old` with ids appended to its text vocabulary (and nothing else changed)."""
    if new.vocab_size <= old.vocab_size:
        return False
    grown = old.replace(tokens=old.tokens.with_state_tokens())
    return grown.to_hf_dict() == new.to_hf_dict()


def grow_text_vocab(params: Any, old: ModelConfig, new: ModelConfig) -> Any:
    """`params` of `old` as parameters of `new` (see the module docstring); host or device arrays."""
    if not grows_text_vocab(old, new):
        raise ConfigError(f"cannot grow a text vocabulary of {old.vocab_size} ids into this model's {new.vocab_size}")
    extra = new.vocab_size - old.vocab_size
    embeddings = params["embed_tokens"]["text_embeddings"]  # [V, E]
    head = params["lm_head"]  # [E, V]
    rows = jnp.broadcast_to(jnp.mean(embeddings, axis=0, keepdims=True), (extra, embeddings.shape[1]))
    return {
        **params,
        "embed_tokens": {
            **params["embed_tokens"],
            "text_embeddings": jnp.concatenate([embeddings, rows.astype(embeddings.dtype)]),
        },
        "lm_head": jnp.concatenate([head, jnp.zeros((head.shape[0], extra), head.dtype)], axis=1),
    }
