"""The decoding entry points agree with the teacher-forced forward; the depformer's structure holds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flmjax import FLMAudio
from flmjax.model.backbone import filled_blocks
from tests.test_model_reference import random_tokens


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


# Decoding reads the ring in blocks: one block (0), blocks dividing the window (8) and not (5, 3).
@pytest.mark.parametrize("decode_block", [0, 8, 5])
def test_forward_equals_prefill_plus_steps(tiny_model, decode_block):
    model = FLMAudio(tiny_model.config.with_numerics(decode_block=decode_block), tiny_model.params)
    cfg = model.config
    b, t = 2, 10
    tokens = random_tokens(cfg, b, t + 1, seed=1)
    text, audio = model.forward(tokens)
    scale = float(jnp.abs(text).max())

    cache = model.init_cache(b, window=32)
    prefill = 4
    positions = jnp.broadcast_to(jnp.arange(prefill, dtype=jnp.int32), (b, prefill))
    step_text, step_hidden, cache = model.backbone_step(cache, tokens[:, :prefill], positions)
    texts, hiddens = [step_text], [step_hidden]
    for col in range(prefill, t):
        lg, h, cache = model.backbone_step(cache, tokens[:, col : col + 1], jnp.full((b, 1), col, jnp.int32))
        texts.append(lg)
        hiddens.append(h)
    step_text = jnp.concatenate(texts, axis=1)
    hidden = jnp.concatenate(hiddens, axis=1)
    assert float(jnp.abs(step_text - text).max()) <= 1e-5 * scale

    audio_scale = float(jnp.abs(audio).max())
    for col in range(t):
        dep_cache = model.init_depformer_cache(b)
        prev = jnp.full((b,), cfg.tokens.audio_empty, jnp.int32)
        for c in range(cfg.num_codebooks):
            logits, dep_cache = model.depformer_step(dep_cache, hidden[:, col], prev, c)
            assert float(jnp.abs(logits - audio[:, col, c]).max()) <= 1e-5 * audio_scale, (col, c)
            prev = jnp.asarray(tokens[:, col + 1, 1 + c])


def _sliding_window_text_logits(model, tokens, window):
    """Teacher-forced text logits where every column attends to at most the last `window` columns."""
    t = tokens.shape[1]
    positions = jnp.arange(t, dtype=jnp.int32)[None]
    q, k = positions[:, :, None], positions[:, None, :]
    mask = (k <= q) & (k > q - window)

    def run(m, tok):
        hidden, _ = m.backbone(m.embed_tokens(tok), positions, mask)
        return m.text_logits(hidden)

    return model.module.apply({"params": model.params}, jnp.asarray(tokens), method=run)


@pytest.mark.parametrize("decode_block", [0, 3])
def test_ring_cache_slides_a_window(tiny_model, decode_block):
    """With a window W shorter than the conversation, the ring cache computes sliding-window attention:
    column t attends to columns t-W+1..t (in every layer) and the cache never grows."""
    model = FLMAudio(tiny_model.config.with_numerics(decode_block=decode_block), tiny_model.params)
    cfg = model.config
    window, total = 5, 13
    tokens = random_tokens(cfg, 1, total, seed=2)
    ref = _sliding_window_text_logits(model, tokens, window)
    full = _sliding_window_text_logits(model, tokens, total)
    cache = model.init_cache(1, window=window)
    for col in range(total):
        lg, _, cache = model.backbone_step(cache, tokens[:, col : col + 1], jnp.full((1, 1), col, jnp.int32))
        assert cache.k.shape[2] == window
        assert float(jnp.abs(lg[:, 0] - ref[:, col]).max()) <= 1e-5 * float(jnp.abs(ref).max()), col
    # Past the window the result really differs from full attention (the test can tell them apart).
    assert float(jnp.abs(ref[:, window:] - full[:, window:]).max()) > 1e-3


def test_filled_blocks_follow_the_newest_position(tiny_model):
    cfg = tiny_model.config.with_numerics(decode_block=4)
    pos = np.full((2, 10), -1, np.int32)
    assert int(filled_blocks(cfg, jnp.asarray(pos))) == 0
    pos[0, :4] = np.arange(4)  # slots 0..3: one block
    assert int(filled_blocks(cfg, jnp.asarray(pos))) == 1
    pos[1, :5] = np.arange(5)  # the other stream reaches slot 4: two blocks
    assert int(filled_blocks(cfg, jnp.asarray(pos))) == 2
    pos[0, 2] = 12  # wrapped: position 12 sits in slot 2, every slot may hold a key
    assert int(filled_blocks(cfg, jnp.asarray(pos))) == 3


def test_decoding_never_reads_the_empty_blocks(tiny_model):
    """NaN keys and values in the ring's unfilled blocks change nothing: they are never read (masking
    alone would not do, NaN * 0 is NaN)."""
    model = FLMAudio(tiny_model.config.with_numerics(decode_block=4), tiny_model.params)
    tokens = random_tokens(model.config, 1, 7, seed=3)
    clean = model.init_cache(1, window=32)
    poisoned = model.init_cache(1, window=32)
    poisoned = poisoned._replace(k=poisoned.k.at[:, :, 8:].set(jnp.nan), v=poisoned.v.at[:, :, 8:].set(jnp.nan))
    for col in range(7):  # positions 0..6 fill slots 0..6: blocks 0 and 1 only
        position = jnp.full((1, 1), col, jnp.int32)
        ref, _, clean = model.backbone_step(clean, tokens[:, col : col + 1], position)
        out, _, poisoned = model.backbone_step(poisoned, tokens[:, col : col + 1], position)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))


def test_streams_keep_their_own_positions(model):
    """Row 1 starts three columns later than row 0 (a session joining): each row equals its own forward."""
    cfg = model.config
    tokens = random_tokens(cfg, 2, 8, seed=4)
    cache = model.init_cache(2, window=16)
    outs = {0: [], 1: []}
    for col in range(7):
        positions = jnp.array([[col], [col - 3]], jnp.int32)
        step_tokens = np.stack([tokens[0, col], tokens[1, max(col - 3, 0)]])[:, None]
        # Row 1 is not started yet for col < 3: its cache row is wiped after the step (empty slots = -1).
        lg, _, cache = model.backbone_step(cache, step_tokens, jnp.maximum(positions, 0))
        if col < 3:
            cache = cache._replace(pos=cache.pos.at[1].set(-1))
        else:
            outs[1].append(lg[1, 0])
        outs[0].append(lg[0, 0])
    ref0, _ = model.forward(tokens[:1, :8])
    ref1, _ = model.forward(tokens[1:, :5])
    np.testing.assert_allclose(np.stack(outs[0]), ref0[0, :7], atol=1e-5 * float(jnp.abs(ref0).max()))
    np.testing.assert_allclose(np.stack(outs[1]), ref1[0, :4], atol=1e-5 * float(jnp.abs(ref1).max()))


def _depformer_case(model, seed):
    """A jitted teacher-forced depformer (params, hidden [N, E], prev [N, 8]) -> logits [N, 8, A], random
    inputs for it, and its logits with the model's parameters."""
    depformer = jax.jit(
        lambda params, h, p: model.module.apply({"params": params}, h, p, method=lambda m, h, p: m.depformer(h, p)[0])
    )
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(3, model.config.hidden_size)), jnp.float32)
    prev = jnp.asarray(rng.integers(0, 2048, (3, 8)), jnp.int32)
    return depformer, hidden, prev, depformer(model.params, hidden, prev)


def test_depformer_is_causal_over_positions(model):
    depformer, hidden, prev, base = _depformer_case(model, seed=5)
    for c in range(1, 8):
        changed = prev.at[:, c:].set((prev[:, c:] + 7) % 2048)
        out = depformer(model.params, hidden, changed)
        # logits at position p depend on prev_0..prev_p: changing prev_c..prev_7 leaves positions < c alone
        assert float(jnp.abs(out[:, :c] - base[:, :c]).max()) == 0.0
        assert float(jnp.abs(out[:, c] - base[:, c]).max()) > 0.0


def test_depformer_weights_are_per_position(model):
    depformer, hidden, prev, base = _depformer_case(model, seed=6)
    params = jax.tree_util.tree_map(lambda x: x, model.params)
    gate = params["depformer"]["h"]["mlps_gate_proj"]
    params["depformer"]["h"]["mlps_gate_proj"] = gate.at[:, 3].add(0.5)  # mlps[3] of every layer
    out = depformer(params, hidden, prev)
    assert float(jnp.abs(out[:, :3] - base[:, :3]).max()) == 0.0
    assert all(float(jnp.abs(out[:, c] - base[:, c]).max()) > 0.0 for c in range(3, 8))


def test_unrolled_layers_and_remat_give_the_same_forward(model):
    tokens = random_tokens(model.config, 1, 6, seed=7)
    text, audio = model.forward(tokens)
    for changes in ({"scan_layers": False}, {"remat": "full"}, {"attention_chunk": 5}):
        other = FLMAudio(model.config.with_numerics(**changes), model.params)
        t2, a2 = other.forward(tokens)
        np.testing.assert_allclose(t2, text, atol=1e-6)
        np.testing.assert_allclose(a2, audio, atol=1e-6)


def test_forward_rejects_wrong_token_shape(model):
    with pytest.raises(ValueError, match="tokens must be"):
        model.forward(np.zeros((1, 5, 16), np.int32))
