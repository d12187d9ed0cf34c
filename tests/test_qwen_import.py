"""Post1's starting point: a Qwen2.5 / Qwen2.5-VL language model imported into FLM-Audio's parameters,
checked against transformers' own Qwen2ForCausalLM (the reference) on the same weights."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from flmjax import FLMAudio
from flmjax.config import get_model_config
from flmjax.interop.hf import CheckpointMismatchError
from flmjax.interop.qwen import load_qwen_lm
from flmjax.interop.safetensors_io import SafetensorsFile, write_safetensors

CFG = get_model_config("tiny")  # vocab 512: ids 509..511 are <wait>/<asr>/<answer>
QWEN_VOCAB = 530  # like Qwen's 151936 rows: more rows than FLM-Audio keeps


def _qwen(tmp_path, tie: bool = False, hidden: int = CFG.hidden_size):
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=QWEN_VOCAB,
        hidden_size=hidden,
        intermediate_size=CFG.intermediate_size,
        num_hidden_layers=CFG.num_layers,
        num_attention_heads=CFG.num_heads,
        num_key_value_heads=CFG.num_kv_heads,
        rms_norm_eps=CFG.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": CFG.rope_theta},
        max_position_embeddings=CFG.max_position_embeddings,
        tie_word_embeddings=tie,
        initializer_range=0.2,  # peaked logits, so a wrong weight shows
        # PreTrainedConfig takes it through __post_init__(**kwargs); the @strict dataclass's fields omit it.
        attn_implementation="eager",  # type: ignore[call-arg]
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # Qwen's q/k/v biases start at zero: make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, 0.2)
    path = tmp_path / ("qwen_tied" if tie else "qwen")
    model.save_pretrained(path, safe_serialization=True)
    return model, path


@functools.lru_cache(maxsize=1)
def _fresh_params() -> dict:
    """Freshly initialised FLM-Audio parameters (host copies: each test gets its own tree)."""
    return jax.tree_util.tree_map(np.asarray, FLMAudio.init(CFG, seed=1).params)


def _fresh() -> dict:
    return jax.tree_util.tree_map(np.array, _fresh_params())


def _as_vl(src, dst):
    """Rewrite a Qwen2.5 directory with newer Qwen2.5-VL names (`model.language_model.*`) plus a vision tensor."""
    dst.mkdir()
    (dst / "config.json").write_text((src / "config.json").read_text())
    file = SafetensorsFile(src / "model.safetensors")
    renamed = {("model.language_model." + n[len("model.") :] if n.startswith("model.") else n): n for n in file.keys()}
    entries = [(new, file.shape(old), file.tensor(old).dtype) for new, old in renamed.items()]
    entries.append(("model.visual.blocks.0.attn.qkv.weight", (3, 4), np.dtype(np.float32)))

    def produce(name):
        return np.ones((3, 4), np.float32) if name.startswith("model.visual") else file.tensor(renamed[name])

    write_safetensors(dst / "model.safetensors", entries, produce)


def test_text_logits_equal_qwen_and_new_ids_start_as_the_mean(tmp_path):
    qwen, path = _qwen(tmp_path)
    fresh = _fresh()
    params = load_qwen_lm(path, CFG, fresh)
    # Audio inputs contribute nothing when their tables are zero: then the backbone sees Qwen's input.
    for table in ("aud_speak_embeddings", "aud_listen_embeddings"):
        params["embed_tokens"][table] = np.zeros_like(params["embed_tokens"][table])
    model = FLMAudio(CFG, params)

    rng = np.random.default_rng(0)
    tokens = np.tile(CFG.tokens.initial_column, (2, 13, 1)).astype(np.int32)
    tokens[:, :, 0] = rng.integers(0, CFG.tokens.text_wait, size=(2, 13))
    tokens[:, :, 1:] = rng.integers(0, CFG.tokens.codebook_size, size=(2, 13, 16))
    text_logits, _ = model.forward(tokens)
    with torch.no_grad():
        want = qwen(torch.from_numpy(tokens[:, :-1, 0]).long()).logits.numpy()
    keep = CFG.tokens.text_wait  # ids below the added ones are Qwen's
    np.testing.assert_allclose(np.asarray(text_logits)[..., :keep], want[..., :keep], rtol=1e-4, atol=1e-4)

    qwen_emb = qwen.model.embed_tokens.weight.detach().numpy()
    qwen_head = qwen.lm_head.weight.detach().numpy()
    emb = np.asarray(params["embed_tokens"]["text_embeddings"])
    head = np.asarray(params["lm_head"])
    np.testing.assert_array_equal(emb[:keep], qwen_emb[:keep])
    for new in (CFG.tokens.text_wait, CFG.tokens.text_asr, CFG.tokens.text_answer):
        np.testing.assert_allclose(emb[new], qwen_emb[:keep].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(head[:, new], qwen_head[:keep].mean(0), rtol=1e-5, atol=1e-6)
    # The depformer keeps its fresh initialisation.
    np.testing.assert_array_equal(np.asarray(params["depformer"]["wtes"]), fresh["depformer"]["wtes"])


def test_qwen25_vl_names_and_tied_heads(tmp_path):
    _, path = _qwen(tmp_path)
    vl = tmp_path / "qwen_vl"
    _as_vl(path, vl)
    plain = load_qwen_lm(path, CFG, _fresh())
    from_vl = load_qwen_lm(vl, CFG, _fresh())
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(from_vl)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    tied, tied_path = _qwen(tmp_path, tie=True)
    assert "lm_head.weight" not in SafetensorsFile(tied_path / "model.safetensors").keys()
    params = load_qwen_lm(tied_path, CFG, _fresh())
    keep = CFG.tokens.text_wait
    np.testing.assert_array_equal(
        np.asarray(params["lm_head"])[:, :keep], tied.model.embed_tokens.weight.detach().numpy()[:keep].T
    )


def test_a_qwen_of_another_size_is_refused_in_one_line(tmp_path):
    _, path = _qwen(tmp_path, hidden=32)
    with pytest.raises(CheckpointMismatchError, match="hidden_size 32 \\(model has 64\\)"):
        load_qwen_lm(path, CFG, _fresh())


def test_post1_starts_from_qwen_through_the_trainer(tmp_path):
    """`init.qwen_from`: the stage's initial parameters are the imported LM plus fresh audio parts."""
    from flmjax.config import Numerics
    from flmjax.train.config import InitConfig, TrainConfig
    from flmjax.train.data import StageData
    from flmjax.train.setup import setup_stage
    from tests.synthetic_data import synthetic_batches

    _, path = _qwen(tmp_path)
    config = TrainConfig(model="tiny", numerics=Numerics(), data=TrainConfig().data.replace(global_batch=2), steps=1,
                         run_root=str(tmp_path / "runs"), compile_cache=False,
                         init=InitConfig(qwen_from=str(path), seed=1))  # fmt: skip
    stage = setup_stage(config, StageData(synthetic_batches(CFG, 8, 4, 2), samples_per_epoch=4))
    assert stage.start_step == 0 and "Qwen" in stage.source
    want = load_qwen_lm(path, CFG, _fresh())  # the same fresh seed under the imported LM
    for a, b in zip(jax.tree_util.tree_leaves(stage.state.params), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
