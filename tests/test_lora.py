"""LoRA adapters: the adapted model at initialisation is the base, merging changes nothing, and the
adapters reach every targeted weight (random factors change the logits of each group)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flmjax.config import LORA_TARGETS, LoraConfig
from flmjax.model import lora as lora_lib
from flmjax.model.flm_audio import FLMAudioLM

ALL = LoraConfig(rank=4, alpha=12.0, targets=LORA_TARGETS)


def _tokens(config, seed=0, b=2, t=9):
    rng = np.random.default_rng(seed)
    ids = config.tokens
    text = rng.integers(0, ids.text_vocab_size, (b, t, 1))
    audio = rng.integers(0, ids.codebook_size, (b, t, 2 * ids.num_codebooks))
    tokens = np.concatenate([text, audio], -1).astype(np.int32)
    tokens[:, 0] = np.asarray(ids.initial_column)
    return jnp.asarray(tokens)


def _random_adapters(params, lora, seed):
    """Both factors random (B = 0 at init would hide a wrong merge)."""
    adapters = lora_lib.init_adapters(params, lora, jax.random.PRNGKey(seed))
    leaves, tree = jax.tree_util.tree_flatten(adapters)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [0.05 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


def _forward(config, params, tokens, adapters=None, lora=None):
    variables = {"params": params} if adapters is None else {"params": params, lora_lib.LORA: adapters}
    return FLMAudioLM(config.replace(lora=lora)).apply(variables, tokens)


def _rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def test_lora_at_init_is_the_base_exactly(tiny_model):
    config, params = tiny_model.config, tiny_model.params
    tokens = _tokens(config)
    adapters = lora_lib.init_adapters(params, ALL, jax.random.PRNGKey(0))
    base = _forward(config, params, tokens)
    adapted = _forward(config, params, tokens, adapters, ALL)
    for x, y in zip(base, adapted):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_merged_equals_unmerged_and_every_group_matters(tiny_model):
    config, params = tiny_model.config, tiny_model.params
    tokens = _tokens(config, seed=1)
    adapters = _random_adapters(params, ALL, seed=3)
    unmerged = _forward(config, params, tokens, adapters, ALL)
    merged = _forward(config, lora_lib.merge(params, adapters, ALL), tokens)
    assert _rel(merged[0], unmerged[0]) < 1e-6 and _rel(merged[1], unmerged[1]) < 1e-6
    base = _forward(config, params, tokens)
    for group in LORA_TARGETS:  # each group's adapters alone move the logits
        only = LoraConfig(rank=4, alpha=12.0, targets=(group,))
        own = lora_lib.init_adapters(params, only, jax.random.PRNGKey(0))
        sub = jax.tree_util.tree_map(lambda _, a: a, own, _pick(adapters, own))
        text, audio = _forward(config, params, tokens, sub, only)
        assert _rel(audio, base[1]) > 1e-3, group


def _pick(adapters, like):
    return jax.tree_util.tree_map(lambda _, a: a, like, _subtree(adapters, like))


def _subtree(tree, like):
    if not isinstance(like, dict):
        return tree
    return {k: _subtree(tree[k], v) for k, v in like.items()}


def test_factor_shapes_and_specs(tiny_model):
    params = tiny_model.params
    adapters = lora_lib.init_adapters(params, ALL, jax.random.PRNGKey(0))
    attn = adapters["backbone"]["layers"]["self_attn"]
    layers, e, h, d = params["backbone"]["layers"]["self_attn"]["q_proj_kernel"].shape
    assert attn["q_proj_kernel_a"].shape == (layers, e, 4) and attn["q_proj_kernel_b"].shape == (layers, 4, h, d)
    assert attn["o_proj_kernel_a"].shape == (layers, h, d, 4) and attn["o_proj_kernel_b"].shape == (layers, 4, e)
    mlps = adapters["depformer"]["h"]
    assert mlps["mlps_gate_proj_a"].shape[:2] == params["depformer"]["h"]["mlps_gate_proj"].shape[:2]
    assert float(jnp.abs(attn["q_proj_kernel_b"]).max()) == 0.0
    from flmjax.model.pretrained import logical_param_specs

    specs = lora_lib.adapter_specs(logical_param_specs(tiny_model.config), params, ALL)
    assert tuple(specs["backbone"]["layers"]["self_attn"]["q_proj_kernel_a"]) == ("layers", "embed", None)
    assert tuple(specs["backbone"]["layers"]["self_attn"]["q_proj_kernel_b"]) == ("layers", None, "q_heads", "head_dim")


def test_fingerprint_tells_bases_apart_and_ignores_precision(tiny_model):
    params = tiny_model.params
    fp = lora_lib.fingerprint(params)
    assert fp == lora_lib.fingerprint(jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), params))
    other = jax.tree_util.tree_map(lambda x: x * 1.5, params)
    assert fp != lora_lib.fingerprint(other)


def test_config_checks():
    from flmjax.config import ConfigError

    with pytest.raises(ConfigError, match="lora.targets"):
        LoraConfig(targets=("nope",))
    with pytest.raises(ConfigError, match="rank"):
        LoraConfig(rank=0)
    assert LoraConfig(rank=128).scale == 2.0 and LoraConfig(rank=8, alpha=16).scale == 2.0
