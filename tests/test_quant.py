"""int8 weight-only decoding: the quantisation itself, its error against the float model, the decoder
on int8 weights, and the int8 export layout (against the float export, and round-tripped)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flmjax import FLMAudio
from flmjax.infer.decoder import Decoder
from flmjax.infer.offline import decode_user_codes
from flmjax.infer.sampling import SamplingSettings
from flmjax.interop.safetensors_io import iter_checkpoint_files
from flmjax.model.quant import CONTRACTED, quantize_array
from tests.infer_helpers import load_launcher
from tests.test_decoder import teacher_forced_columns
from tests.test_model_reference import random_tokens


@pytest.fixture(scope="module")
def int8_model(tiny_model):
    return tiny_model.quantized()


def _flat(params: dict) -> dict[str, jax.Array]:
    return {"/".join(str(k.key) for k in p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}


def _tensors(directory) -> dict[str, np.ndarray]:
    return {k: np.asarray(f.tensor(k)) for f in iter_checkpoint_files(directory) for k in f.keys()}


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> np.ndarray:
    p, q = jax.nn.log_softmax(p_logits, -1), jax.nn.log_softmax(q_logits, -1)
    return np.asarray((jnp.exp(p) * (p - q)).sum(-1))


def test_quantize_array_is_absmax_per_output_channel():
    w = np.array([[1.0, -0.5], [-4.0, 0.25], [2.0, 0.0]], np.float32)  # [in 3, out 2]
    q, scale = quantize_array(w, (0,))
    np.testing.assert_allclose(scale, [[4.0 / 127, 0.5 / 127]])
    np.testing.assert_array_equal(q[:, 0], [32, -127, 64])  # 1 / (4/127) = 31.75 -> 32
    np.testing.assert_array_equal(q[:, 1], [-127, 64, 0])  # 0.25 / (0.5/127) = 63.5 -> 64 (to even)
    q, scale = quantize_array(np.zeros((3, 2), np.float32), (0,))
    assert (q == 0).all() and (scale == 1).all()  # an all-zero channel stays zero


def test_every_matmul_kernel_is_int8_and_nothing_else(tiny_model, int8_model):
    flat, original = _flat(int8_model.params), _flat(tiny_model.params)
    kernels = {"/".join(path) for path in CONTRACTED}
    assert {k for k, x in flat.items() if x.dtype == jnp.int8} == kernels
    assert {k for k in flat if k.endswith("_scale")} == {k + "_scale" for k in kernels}
    for name in kernels:  # every weight within half a step of its channel's scale
        scale = np.asarray(flat[name + "_scale"])
        error = np.abs(np.asarray(flat[name], np.float32) * scale - np.asarray(original[name]))
        assert (error <= scale * (0.5 + 1e-4)).all(), name  # half a step, plus fp32 rounding of w / scale
    for name in set(original) - kernels:
        np.testing.assert_array_equal(flat[name], original[name])
    assert int8_model.is_quantized and not tiny_model.is_quantized


def test_int8_logits_stay_close_to_the_float_model(tiny_model, int8_model):
    tokens = random_tokens(tiny_model.config, 2, 17, seed=11)
    (text, audio), (text8, audio8) = tiny_model.forward(tokens), int8_model.forward(tokens)
    # Measured: relative max error 0.7% (text) and 1.0% (audio); mean KL about 1e-5.
    assert float(jnp.abs(text8 - text).max()) <= 0.02 * float(jnp.abs(text).max())
    assert float(jnp.abs(audio8 - audio).max()) <= 0.02 * float(jnp.abs(audio).max())
    assert _kl(np.asarray(text), np.asarray(text8)).mean() <= 1e-3
    assert _kl(np.asarray(audio), np.asarray(audio8)).mean() <= 1e-3
    assert float(jnp.abs(text8 - text).max()) > 0  # the int8 model really is another model


def test_int8_decoding_reproduces_its_teacher_forced_argmax(tiny_model, int8_model, tmp_path):
    """The decoder runs on int8 weights exactly as on float ones: greedy codes == forward's argmax; the
    codes-level CLI with --quantize int8 on the float checkpoint decodes the same frames."""
    user_codes = np.random.default_rng(3).integers(0, 2048, (1, 8, 8)).astype(np.int32)
    greedy = SamplingSettings().greedy_deterministic()
    frames, sampled, _ = decode_user_codes(Decoder(int8_model, batch_size=1, window=16), user_codes, greedy)
    text, audio = int8_model.forward(teacher_forced_columns(int8_model.config.tokens, user_codes, sampled))
    np.testing.assert_array_equal(sampled[..., 0], np.asarray(text).argmax(-1))
    np.testing.assert_array_equal(sampled[..., 1:], np.asarray(audio)[..., :2048].argmax(-1))

    tiny_model.save_pretrained(tmp_path / "ckpt")
    np.save(tmp_path / "in.npy", user_codes)
    args = ["--user-codes", str(tmp_path / "in.npy"), "--out-codes", str(tmp_path / "out.npy"), "--window", "16"]
    rc = load_launcher("infer").main(["--checkpoint", str(tmp_path / "ckpt"), *args, "--greedy", "--quantize", "int8"])
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), frames)


def test_int8_export_layout_and_round_trip(tiny_model, int8_model, tmp_path):
    tiny_model.save_pretrained(tmp_path / "fp32")
    int8_model.save_pretrained(tmp_path / "int8", dtype="bfloat16")
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "flmjax_int8"
    assert "quantization_config" not in json.loads((tmp_path / "fp32" / "config.json").read_text())
    ref, int8 = _tensors(tmp_path / "fp32"), _tensors(tmp_path / "int8")
    scales = {k for k in int8 if k.endswith("_scale")}
    assert set(int8) - scales == set(ref)
    # Each int8 weight [out, in] times its scale [out, 1] is the float export's tensor, within half a step.
    for name in sorted(scales):
        weight, scale = int8[name.removesuffix("_scale")], int8[name]
        assert weight.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (weight.shape[0], 1), name
        error = np.abs(weight * scale - ref[name.removesuffix("_scale")])
        assert (error <= scale * (0.5 + 1e-4)).all(), name  # half a step, plus fp32 rounding of w / scale
    kept = set(ref) - {n.removesuffix("_scale") for n in scales}
    assert any("embed" in n for n in kept) and all(int8[n].dtype == jnp.bfloat16 for n in kept)
    # Loading the int8 export gives the int8 model back (bf16 where the export was bf16); quantising the
    # float export while loading gives the same kernels.
    loaded = _flat(FLMAudio.from_pretrained(tmp_path / "int8").params)
    again = _flat(FLMAudio.from_pretrained(tmp_path / "fp32", quantize="int8").params)
    for name, value in _flat(int8_model.params).items():
        if value.dtype == jnp.int8 or name.endswith("_scale"):
            np.testing.assert_array_equal(loaded[name], value)
            np.testing.assert_array_equal(again[name], value)
        else:
            np.testing.assert_array_equal(loaded[name], np.asarray(value).astype(jnp.bfloat16).astype(np.float32))
