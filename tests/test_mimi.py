"""flmjax.mimi against kyutai's `moshi` package (random weights, randomised codebooks) and on its own.

The reference model is built once per module; its weights reach flmjax through a kyutai-named
safetensors file, which also exercises the loader on real kyutai naming.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from flmjax.mimi import Mimi, MimiWeightsError
from flmjax.mimi.config import MimiConfig
from flmjax.mimi.transformer import Transformer, banded_attention
from flmjax.mimi.weights import kyutai_layout

FRAME = 1920
SAMPLE_RATE = 24_000
DECODE_ATOL = 1e-4  # decoded audio vs moshi (fp32; the measured gap is printed, ~1e-7)


def varied_audio(seconds: float = 3.0, extra: int = 700) -> np.ndarray:
    """[2, 1, N] with N not a multiple of the frame: tones + noise bursts, and a chirp + buzzy 'vowel'."""
    n = int(seconds * SAMPLE_RATE) + extra
    t = np.arange(n) / SAMPLE_RATE
    rng = np.random.default_rng(0)
    bursts = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.5 * t) > 0.6)
    first = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.15 * np.sin(2 * np.pi * 1250 * t) + 0.1 * bursts
    chirp = 0.3 * np.sin(2 * np.pi * (80 * t + 900 * t**2))
    vowel = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 25)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    second = chirp + 0.1 * vowel
    return np.stack([first, second])[:, None].astype(np.float32)


def frames_of(audio: np.ndarray) -> list[np.ndarray]:
    padded = np.pad(audio, ((0, 0), (0, 0), (0, -audio.shape[-1] % FRAME)))
    return [padded[..., i : i + FRAME] for i in range(0, padded.shape[-1], FRAME)]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """moshi on one thread: two OpenMP threads on a busy 2-core machine run over 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference():
    from moshi.models import loaders

    torch.manual_seed(1234)
    model = loaders.get_mimi(None, device="cpu")
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("embedding_sum"):
                buffer.normal_(0.0, 0.01)  # zero codebooks would map everything to code 0
    for module in model.modules():
        if hasattr(module, "_embedding"):
            module._embedding = None  # drop the cached embedding_sum / cluster_usage
    return model


@pytest.fixture(scope="module")
def kyutai_file(reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("mimi") / "tokenizer-e351c8d8-checkpoint125.safetensors"
    save_file({k: v.contiguous().numpy() for k, v in reference.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def mimi(kyutai_file):
    return Mimi.from_pretrained(kyutai_file)


@pytest.fixture(scope="module")
def audio():
    return varied_audio()


@pytest.fixture(scope="module")
def reference_outputs(reference, audio):
    """moshi's batch codes and audio, and its streaming codes and audio, frame by frame."""
    with torch.no_grad():
        codes = reference.encode(torch.from_numpy(audio))
        decoded = reference.decode(codes).numpy()
        with reference.streaming(audio.shape[0]):
            stream_codes = np.concatenate([reference.encode(torch.from_numpy(f)).numpy() for f in frames_of(audio)], -1)
        with reference.streaming(audio.shape[0]):
            stream_decoded = np.concatenate(
                [reference.decode(codes[..., i : i + 1]).numpy() for i in range(codes.shape[-1])], -1
            )
    return {"codes": codes.numpy(), "decoded": decoded, "stream_codes": stream_codes, "stream_decoded": stream_decoded}


@pytest.fixture(scope="module")
def stream_outputs(mimi, audio, reference_outputs):
    stream = mimi.streaming(batch_size=audio.shape[0])
    codes = [np.asarray(stream.encode(frame)) for frame in frames_of(audio)]
    ref_codes = reference_outputs["codes"]
    decoded = [np.asarray(stream.decode(ref_codes[..., i : i + 1])) for i in range(ref_codes.shape[-1])]
    return {"codes": np.concatenate(codes, -1), "decoded": np.concatenate(decoded, -1), "stream": stream}


@pytest.mark.reference
def test_batch_encode_matches_moshi(mimi, audio, reference_outputs):
    codes = np.asarray(mimi.encode(audio))
    assert codes.dtype == np.int32 and codes.shape == (2, 8, math.ceil(audio.shape[-1] / FRAME))
    np.testing.assert_array_equal(codes, reference_outputs["codes"])
    # The codes follow the audio (with the codebooks left at zero, every code would be 0).
    assert all(len(np.unique(codes[:, q])) >= 5 for q in range(8)) and (codes[0] != codes[1]).mean() > 0.5


@pytest.mark.reference
def test_batch_decode_matches_moshi(mimi, reference_outputs):
    decoded = np.asarray(mimi.decode(reference_outputs["codes"]))
    assert decoded.dtype == np.float32 and decoded.shape == reference_outputs["decoded"].shape
    gap = np.abs(decoded - reference_outputs["decoded"]).max()
    print(f"batch decode: max |flmjax - moshi| = {gap:.2e} (audio peak {np.abs(decoded).max():.3f})")
    assert gap < DECODE_ATOL


@pytest.mark.reference
def test_streaming_matches_moshi_and_batch(mimi, reference_outputs, stream_outputs):
    np.testing.assert_array_equal(stream_outputs["codes"], reference_outputs["stream_codes"])
    np.testing.assert_array_equal(stream_outputs["codes"], reference_outputs["codes"])
    gap = np.abs(stream_outputs["decoded"] - reference_outputs["stream_decoded"]).max()
    print(f"streaming decode: max |flmjax - moshi| = {gap:.2e}")
    assert gap < DECODE_ATOL
    own_gap = np.abs(stream_outputs["decoded"] - np.asarray(mimi.decode(reference_outputs["codes"]))).max()
    print(f"flmjax streaming vs batch decode: max gap {own_gap:.2e}")
    assert own_gap < 1e-6


def _state_node(state: dict, param_path: tuple[str, ...]) -> dict:
    """The streaming state of the module owning parameter `param_path` (minus the leaf name)."""
    half = "encode" if param_path[0] in ("encoder", "encoder_transformer", "downsample") else "decode"
    node = state[half][param_path[0]]
    for part in param_path[1:-1]:
        node = node["stages"][int(part.split("_")[1])] if part.startswith("stages_") else node[part]
    return node


@pytest.mark.reference
def test_streaming_state_sizes_match_moshi(mimi, reference):
    batch = 3
    ours = mimi.init_state(batch)
    with reference.streaming(batch):
        theirs = reference.get_streaming_state()
    entries, _ = kyutai_layout(mimi.config, mimi.n_q)
    checked = 0
    for entry in entries:
        if entry.path[-1] != "kernel" or entry.kind not in ("conv", "convtr", "depthwise_convtr"):
            continue
        module = entry.name.removesuffix(".conv.conv.weight").removesuffix(".convtr.convtr.weight")
        node, reference_state = _state_node(ours, entry.path), theirs[module]
        if entry.kind == "conv":
            assert node.get("previous", jnp.zeros(0)).size == reference_state.previous.numel(), module
        else:
            assert node["partial"].size == reference_state.partial.numel(), module
        checked += 1
    assert checked == 2 * 14 + 2  # every SEANet conv, the downsample and the upsample
    for side in ("encoder_transformer", "decoder_transformer"):
        half = "encode" if side.startswith("encoder") else "decode"
        for i, layer in enumerate(ours[half][side]["layers"]):
            ring = theirs[f"{side}.transformer.layers.{i}.self_attn"].kv_cache.cache
            assert layer["keys"].size + layer["values"].size == ring.numel()
        assert ours[half][side]["offset"].shape == theirs[f"{side}.transformer"].offsets.shape == (batch,)
    # Nothing else is kept: the conv contexts, transposed-conv tails, KV rings, offsets and the
    # replicate-padding flag of the downsample.
    leaves = jax.tree_util.tree_leaves_with_path(ours)
    assert all(str(path[-1].key) in ("previous", "first", "partial", "keys", "values", "offset") for path, _ in leaves)


@pytest.mark.reference
def test_transformer_ring_wraps_like_moshi(mimi, reference):
    """The encoder transformer alone, streamed 10 steps per call to 300 steps, past its 250-slot ring."""
    chunk, calls = 10, 30
    x = np.random.default_rng(1).standard_normal((1, 512, chunk * calls)).astype(np.float32)
    pieces = [x[..., i * chunk : (i + 1) * chunk] for i in range(calls)]
    with torch.no_grad(), reference.encoder_transformer.streaming(1):
        expected = np.concatenate([reference.encoder_transformer(torch.from_numpy(p))[0].numpy() for p in pieces], -1)
    transformer = Transformer(mimi.config)
    params = mimi.params["encoder_transformer"]
    step = jax.jit(lambda state, p: transformer.apply({"params": params}, p, state, method=Transformer.step))
    state = transformer.apply({}, 1, method=Transformer.init_state)
    outputs = []
    for p in pieces:
        y, state = step(state, p.transpose(0, 2, 1))
        outputs.append(np.asarray(y).transpose(0, 2, 1))
    np.testing.assert_allclose(np.concatenate(outputs, -1), expected, atol=2e-5, rtol=0)


def test_banded_attention_equals_full_masked_attention():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 600, 3, 8)), jnp.float32) for _ in range(3))
    context = 250
    steps = jnp.arange(600)
    delta = steps[:, None] - steps[None, :]
    mask = (delta >= 0) & (delta < context)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(8)
    full = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(jnp.where(mask, scores, -jnp.inf), -1), v)
    banded = jax.jit(banded_attention, static_argnums=3)
    np.testing.assert_allclose(banded(q, k, v, context), full, atol=1e-5)
    np.testing.assert_allclose(banded(q[:, :100], k[:, :100], v[:, :100], context), full[:, :100], atol=1e-5)


@pytest.mark.reference
def test_reset_restarts_one_stream(mimi, audio, reference_outputs, stream_outputs):
    """After 6 frames, stream 0 is reset and fed the clip from its start again; stream 1 goes on."""
    frames = frames_of(audio)
    codes = reference_outputs["codes"]
    decoded = stream_outputs["decoded"]
    stream = mimi.streaming(batch_size=2)  # same shapes as the stream_outputs one: no new compilation
    for t in range(6):
        stream.encode(frames[t])
        stream.decode(codes[..., t : t + 1])
    stream.reset(np.array([True, False]))
    for i in range(4):
        got = np.asarray(stream.encode(np.concatenate([frames[i][:1], frames[6 + i][1:]])))
        np.testing.assert_array_equal(got[0], codes[0, :, i : i + 1])
        np.testing.assert_array_equal(got[1], codes[1, :, 6 + i : 7 + i])
        pcm = np.asarray(stream.decode(np.stack([codes[0, :, i : i + 1], codes[1, :, 6 + i : 7 + i]])))
        np.testing.assert_allclose(pcm[0], decoded[0, :, i * FRAME : (i + 1) * FRAME], atol=1e-6)
        np.testing.assert_allclose(pcm[1], decoded[1, :, (6 + i) * FRAME : (7 + i) * FRAME], atol=1e-6)
    with pytest.raises(ValueError, match="mask"):
        stream.reset(np.array([True]))


@pytest.mark.reference
def test_loader_reads_old_kyutai_names(mimi, kyutai_file, tmp_path):
    renames = {
        "self_attn.in_projs.0.weight": "self_attn.in_proj_weight",
        "self_attn.out_projs.0.weight": "self_attn.out_proj.weight",
        "_codebook.embedding_sum": "_codebook.embed_avg",
        "_codebook.cluster_usage": "_codebook.cluster_size",
        "_codebook._initialized": "_codebook.inited",
    }
    tensors = load_file(kyutai_file)
    old = {}
    for name, value in tensors.items():
        for new_suffix, old_suffix in renames.items():
            if name.endswith(new_suffix):
                name = name[: -len(new_suffix)] + old_suffix
        old[name] = value
    old_path = tmp_path / "old_names.safetensors"
    save_file(old, old_path)
    loaded = Mimi.from_pretrained(old_path).params
    jax.tree.map(np.testing.assert_array_equal, loaded, mimi.params)


@pytest.mark.reference
def test_loader_errors_name_the_problem(kyutai_file, tmp_path):
    tensors = load_file(kyutai_file)
    name = "decoder_transformer.transformer.layers.3.linear1.weight"
    missing = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in tensors.items() if k != name}, missing)
    with pytest.raises(MimiWeightsError, match=f"lacks 1 Mimi tensor.*{name}"):
        Mimi.from_pretrained(missing)
    misshaped = tmp_path / "misshaped.safetensors"
    save_file({**tensors, name: tensors[name].T.copy()}, misshaped)
    with pytest.raises(MimiWeightsError, match=rf"{name}.*shape \(512, 2048\), expected \(2048, 512\)"):
        Mimi.from_pretrained(misshaped)
    other_model = tmp_path / "model.safetensors"
    save_file({"model.embed_tokens.weight": np.zeros((4, 4), np.float32)}, other_model)
    with pytest.raises(MimiWeightsError, match="not a kyutai Mimi checkpoint"):
        Mimi.from_pretrained(other_model)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(MimiWeightsError, match="garbage.safetensors is not a readable safetensors file"):
        Mimi.from_pretrained(garbage)
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        Mimi.from_pretrained(tmp_path / "nowhere.safetensors")


@pytest.mark.reference
def test_saved_names_and_shapes_are_kyutai(reference, tmp_path):
    path = tmp_path / "random.safetensors"
    Mimi.random(seed=0, n_q=32).save_pretrained(path)
    saved = {k: v.shape for k, v in load_file(path).items()}
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert saved == expected


def test_random_save_load_round_trip(tmp_path):
    a = Mimi.random(seed=0)
    path = tmp_path / "mimi.safetensors"
    a.save_pretrained(path)
    b = Mimi.from_pretrained(path)
    jax.tree.map(np.testing.assert_array_equal, b.params, a.params)
    c = Mimi.random(seed=1)
    assert not np.array_equal(
        c.params["decoder"]["output_conv"]["kernel"], a.params["decoder"]["output_conv"]["kernel"]
    )
    with pytest.raises(MimiWeightsError, match="lacks .*rvq_rest.vq.layers.7._codebook"):
        Mimi.from_pretrained(path, n_q=9)  # the file holds the 8 codebooks in use


def test_bad_inputs_are_clear_errors():
    mimi = Mimi.random(seed=0)
    with pytest.raises(ValueError, match=r"mono pcm shaped \[batch, 1, samples\]"):
        mimi.encode(np.zeros((1, 2, FRAME), np.float32))
    with pytest.raises(ValueError, match="float pcm"):
        mimi.encode(np.zeros((1, 1, FRAME), np.int16))
    with pytest.raises(ValueError, match="empty"):
        mimi.encode(np.zeros((1, 1, 0), np.float32))
    with pytest.raises(ValueError, match="24000 Hz.*16000 Hz.*prepare_for_mimi"):
        mimi.encode(np.zeros((1, 1, FRAME), np.float32), sample_rate=16000)
    with pytest.raises(ValueError, match=r"codes shaped \[batch, 8, frames\]"):
        mimi.decode(np.zeros((1, 4, 3), np.int32))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 2048\)"):
        mimi.decode(np.full((1, 8, 3), 2048, np.int32))
    stream = mimi.streaming(batch_size=2)
    with pytest.raises(ValueError, match="whole 80 ms frames: got 1000 samples"):
        stream.encode(np.zeros((2, 1, 1000), np.float32))
    with pytest.raises(ValueError, match="whole 80 ms frames: got 0 samples"):
        mimi.encode_step(mimi.params, mimi.init_state(2), jnp.zeros((2, 1, 0)))
    with pytest.raises(ValueError, match="this stream has 2 rows"):
        stream.encode(np.zeros((3, 1, FRAME), np.float32))
    with pytest.raises(ValueError, match=r"codes \[2, 8, k >= 1\]"):
        stream.decode(np.zeros((2, 8, 0), np.int32))
    with pytest.raises(ValueError, match="n_q must be between 1 and 32"):
        Mimi(mimi.params, n_q=33)
    with pytest.raises(ValueError, match="quantizer/acoustic/codebook_7: expected shape \\(2048, 256\\), got None"):
        Mimi(mimi.params, n_q=9)


def test_config_numbers():
    c = MimiConfig()
    assert (c.hop_length, c.resample_stride, c.frame_size, c.encoder_frame_rate) == (960, 2, 1920, 25.0)
