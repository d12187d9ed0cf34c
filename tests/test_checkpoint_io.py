"""The release's HF layout, both directions: round trip, sharded and single-file, clear errors."""

import json

import jax
import numpy as np
import pytest

from flmjax import FLMAudio
from flmjax.interop.hf import CheckpointMismatchError, tensor_specs
from flmjax.interop.safetensors_io import SafetensorsFile, write_safetensors


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def _assert_identical(a, b):
    flat_a, tree_a = jax.tree_util.tree_flatten(a)
    flat_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(flat_a, flat_b):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_bit_identical(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    _assert_identical(model.params, FLMAudio.from_pretrained(tmp_path).params)


def test_sharded_layout_loads(model, tmp_path):
    model.save_pretrained(tmp_path, max_shard_bytes=1_500_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and all((tmp_path / s).exists() for s in shards)
    assert set(index["weight_map"]) == {s.hf_name for s in tensor_specs(model.config)}
    _assert_identical(model.params, FLMAudio.from_pretrained(tmp_path).params)


def test_release_names_shapes_and_config(model, tmp_path):
    model.save_pretrained(tmp_path, dtype="bfloat16")
    f = SafetensorsFile(tmp_path / "model.safetensors")
    cfg = model.config
    assert f.shape("model.layers.1.self_attn.k_proj.weight") == (cfg.num_kv_heads * cfg.head_dim, cfg.hidden_size)
    assert f.shape("model.layers.0.self_attn.q_proj.bias") == (cfg.num_heads * cfg.head_dim,)
    assert "model.layers.0.self_attn.o_proj.bias" not in f.keys()
    assert f.shape("aud_output_layers.transformer.h.1.mlps.7.down_proj.weight") == (
        cfg.depformer.dim,
        cfg.depformer.mlp_dim,
    )
    assert f.header["lm_head.weight"]["dtype"] == "BF16"
    # The q block of c_attn is rows 0..D-1 (q; k; v), heads contiguous inside it.
    c_attn = f.tensor("aud_output_layers.transformer.h.0.attn.c_attn.weight").astype(np.float32)
    kernel = np.asarray(model.params["depformer"]["h"]["c_attn_kernel"][0], np.float32)  # [D, 3, H, hd]
    d = cfg.depformer.dim
    np.testing.assert_allclose(c_attn[d : 2 * d], kernel[:, 1].reshape(d, d).T, rtol=1e-2, atol=1e-3)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["model_type"] == "FLMAudio" and hf["architectures"] == ["FLMAudioForCausalLM"]
    assert hf["mm_token_info"] == {"text_wait_token_id": 509, "aud_pad_token_id": 2048, "aud_emp_token_id": 2049}
    assert hf["torch_dtype"] == "bfloat16" and hf["disable_att_o_bias"] is True
    loaded = FLMAudio.from_pretrained(tmp_path, dtype="bfloat16")
    assert loaded.params["lm_head"].dtype == jax.numpy.bfloat16


def _rewrite_without(src, dst, drop=None, reshape=None, extra=None):
    f = SafetensorsFile(src / "model.safetensors")
    names = [n for n in f.keys() if n != drop]
    entries = [
        (n, (f.shape(n) if n != reshape else (f.shape(n)[0] + 1, *f.shape(n)[1:])), f.tensor(n).dtype) for n in names
    ]
    if extra:
        entries.append((extra, (2,), np.dtype(np.float32)))

    def produce(name):
        if name == extra:
            return np.zeros(2, np.float32)
        t = f.tensor(name)
        return np.concatenate([t, t[:1]]) if name == reshape else t

    dst.mkdir()
    write_safetensors(dst / "model.safetensors", entries, produce)
    (dst / "config.json").write_text((src / "config.json").read_text())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"drop": "model.layers.1.mlp.up_proj.weight"}, "missing tensor model.layers.1.mlp.up_proj.weight"),
        (
            {"reshape": "model.layers.0.self_attn.v_proj.weight"},
            "tensor model.layers.0.self_attn.v_proj.weight has shape",
        ),
        ({"extra": "model.layers.9.mlp.up_proj.weight"}, "unexpected tensor model.layers.9.mlp.up_proj.weight"),
    ],
)
def test_mismatched_checkpoint_names_the_tensor(model, tmp_path, change, message):
    src = tmp_path / "good"
    model.save_pretrained(src)
    bad = tmp_path / "bad"
    _rewrite_without(src, bad, **change)
    with pytest.raises(CheckpointMismatchError, match=message):
        FLMAudio.from_pretrained(bad)


def test_missing_or_broken_files_are_clear_errors(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        FLMAudio.from_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        FLMAudio.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_hf_dict()))
    with pytest.raises(CheckpointMismatchError, match="no model.safetensors"):
        FLMAudio.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage!garbage!")
    with pytest.raises(CheckpointMismatchError, match="not a safetensors file"):
        FLMAudio.from_pretrained(tmp_path)
