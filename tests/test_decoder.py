"""The streaming decoder against the teacher-forced forward, a PyTorch release-style loop, and itself
(independent streams joining late, long conversations on a small window, no recompilation)."""

import json

import jax
import numpy as np
import pytest

from flmjax import FLMAudio
from flmjax.infer.decoder import Decoder
from flmjax.infer.offline import decode_user_codes
from flmjax.infer.sampling import SamplingSettings
from tests.infer_helpers import load_launcher, tiny_model

GREEDY = SamplingSettings().greedy_deterministic()
FRAMES = 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt")
    tiny_model().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model(checkpoint):
    return FLMAudio.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def user_codes():
    return np.random.default_rng(0).integers(0, 2048, (2, FRAMES, 8)).astype(np.int32)


@pytest.fixture(scope="module")
def wide_decoder(model):
    return Decoder(model, batch_size=2, window=64)


@pytest.fixture(scope="module")
def greedy_run(wide_decoder, user_codes):
    return decode_user_codes(wide_decoder, user_codes, GREEDY)


def teacher_forced_columns(ids, user_codes, sampled):
    """Delayed columns 0..S the decoder saw and produced: initial column, then its sampled text/speak
    columns and the user's codes placed with their delays (listen semantic at t, acoustic at t+1)."""
    b, s, _ = user_codes.shape
    tokens = np.zeros((b, s + 1, 17), np.int32)
    tokens[:, 0] = ids.initial_column
    tokens[:, 1:, :9] = sampled
    tokens[:, :s, 9] = user_codes[:, :, 0]
    tokens[:, s, 9] = ids.audio_pad  # never read: column S is only a target
    tokens[:, 1:, 10:] = user_codes[:, :, 1:]
    return tokens


def test_greedy_decoding_reproduces_teacher_forced_argmax(model, user_codes, greedy_run):
    frames, sampled, _ = greedy_run
    text_logits, audio_logits = (
        np.asarray(x) for x in model.forward(teacher_forced_columns(model.config.tokens, user_codes, sampled))
    )
    np.testing.assert_array_equal(sampled[..., 0], text_logits.argmax(-1))
    np.testing.assert_array_equal(sampled[..., 1:], audio_logits[..., :2048].argmax(-1))
    # The output frame of step t: text and semantic code of column t, acoustic codes of column t+1.
    np.testing.assert_array_equal(frames[..., :2], sampled[:, :-1, :2])
    np.testing.assert_array_equal(frames[..., 2:], sampled[:, 1:, 2:])
    assert len(set(sampled[..., 0].ravel())) > 3  # a random model's argmax moves: the test can fail


def test_bf16_decoding_reproduces_bf16_teacher_forced_argmax(checkpoint, user_codes):
    """The serving dtype: the step loop and the forward agree in bf16 too (weights, activations, cache).
    One column at a time and all columns at once round differently in bf16, so ids whose top-2 logits
    lie within bf16 noise of each other are left out (a tie either way is right)."""
    model = FLMAudio.from_pretrained(checkpoint, dtype="bfloat16")
    _, sampled, _ = decode_user_codes(Decoder(model, batch_size=2, window=64), user_codes, GREEDY)
    columns = teacher_forced_columns(model.config.tokens, user_codes, sampled)
    text_logits, audio_logits = (np.asarray(x, np.float32) for x in model.forward(columns))

    def clear_argmax(logits):
        top2 = np.sort(logits, axis=-1)[..., -2:]
        return logits.argmax(-1), top2[..., 1] - top2[..., 0] > 0.1  # bf16 keeps ~3 digits of logits ~1-4

    text, text_clear = clear_argmax(text_logits)
    audio, audio_clear = clear_argmax(audio_logits[..., :2048])
    clear = np.concatenate([text_clear[..., None], audio_clear], axis=-1)
    assert clear.mean() > 0.5  # most ids are clear-cut: the comparison is not vacuous
    np.testing.assert_array_equal(sampled[clear], np.concatenate([text[..., None], audio], axis=-1)[clear])


@pytest.mark.reference
def test_matches_release_style_pytorch_loop(checkpoint, user_codes, greedy_run):
    import torch
    from safetensors.torch import load_file

    from flmjax.reference.flm_audio_torch import TorchFLMAudio
    from flmjax.reference.torch_step_loop import TorchStepLoop

    config = json.loads((checkpoint / "config.json").read_text())
    torch_model = TorchFLMAudio(config)
    torch_model.load_state_dict(load_file(str(checkpoint / "model.safetensors")), strict=True)
    torch_model.eval()
    loop = TorchStepLoop(torch_model, config, batch_size=2, greedy=True)
    outputs = [loop.step(torch.from_numpy(user_codes[:, s]).long()) for s in range(FRAMES)]
    assert outputs[0] is None
    np.testing.assert_array_equal(np.stack([o.numpy() for o in outputs[1:]], 1), greedy_run[0])


def test_cli_codes_level(checkpoint, user_codes, greedy_run, tmp_path, capsys):
    infer = load_launcher("infer")
    np.save(tmp_path / "in.npy", user_codes)
    rc = infer.main(["--checkpoint", str(checkpoint), "--user-codes", str(tmp_path / "in.npy"),
                     "--out-codes", str(tmp_path / "out.npy"), "--greedy", "--stats"])  # fmt: skip
    assert rc == 0
    out = np.load(tmp_path / "out.npy")
    assert out.dtype == np.int32 and out.shape == (2, FRAMES - 1, 9)
    np.testing.assert_array_equal(out, greedy_run[0])
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["frames"] == FRAMES and stats["p50_ms"] > 0


def test_cli_rejects_bad_input(checkpoint, tmp_path, capsys):
    infer = load_launcher("infer")
    np.save(tmp_path / "bad.npy", np.full((1, 4, 8), 2048, np.int32))  # 2048 is not a Mimi code
    args = ["--user-codes", str(tmp_path / "bad.npy"), "--out-codes", str(tmp_path / "o.npy")]
    assert infer.main(["--checkpoint", str(checkpoint), *args]) == 2
    assert "[0, 2048)" in capsys.readouterr().err
    np.save(tmp_path / "good.npy", np.zeros((1, 4, 8), np.int32))
    good = ["--user-codes", str(tmp_path / "good.npy"), "--out-codes", str(tmp_path / "o.npy")]
    assert infer.main(["--checkpoint", str(tmp_path / "nowhere"), *good]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()


def run_frames(decoder, state, codes_per_frame, resets=None, active=None):
    """Step through frames; `resets` maps frame -> {row: settings} applied before that frame."""
    frames, valid = [], []
    for i, codes in enumerate(codes_per_frame):
        if resets and i in resets:
            state = decoder.reset(state, resets[i])
        state, out = decoder.step(state, codes, None if active is None else active[i])
        frames.append(np.asarray(out.frame))
        valid.append(np.asarray(out.valid))
    return state, np.stack(frames, 1), np.stack(valid, 1)


def test_streams_are_independent_join_and_rest_without_recompiling(model):
    # Sampling (not greedy) so per-stream PRNG keys matter too.
    hot = SamplingSettings(text_temperature=1.0, audio_temperature=1.0, text_top_p=0.0, audio_top_p=0.0, seed=7)
    decoder = Decoder(model, batch_size=3, window=32)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2048, (16, 8)).astype(np.int32)
    noise = rng.integers(0, 2048, (16, 3, 8)).astype(np.int32)
    everyone_hears_x = [np.stack([x[i]] * 3) for i in range(16)]
    _, alone, _ = run_frames(decoder, decoder.init_state(hot), everyone_hears_x)
    _, alone_greedy, _ = run_frames(decoder, decoder.init_state(GREEDY), everyone_hears_x)

    # Row 0 hears x throughout. Row 1 hears noise, then a new greedy conversation hearing x joins it at
    # frame 6. Row 2 hears x but has no input during frames 4..7 (it rests; its codes there are noise).
    rests = np.zeros((16, 3), bool)
    rests[4:8, 2] = True
    heard = [np.stack([x[i], noise[i, 1] if i < 6 else x[i - 6],
                       noise[i, 2] if rests[i, 2] else x[i - rests[:i, 2].sum()]]) for i in range(16)]  # fmt: skip
    state, mixed, valid = run_frames(decoder, decoder.init_state(hot), heard, {6: {1: GREEDY}}, ~rests)
    np.testing.assert_array_equal(mixed[0], alone[0])  # undisturbed by the others
    np.testing.assert_array_equal(mixed[1, 6:], alone_greedy[0, :10])  # the joiner equals a fresh stream
    np.testing.assert_array_equal(mixed[2, ~rests[:, 2]], alone[0, :12])  # resting changes nothing
    np.testing.assert_array_equal(valid[2], ~rests[:, 2] & (np.arange(16) > 0))
    assert not np.array_equal(alone[0], alone_greedy[0])
    assert decoder._step._cache_size() == 1 and decoder._reset._cache_size() == 1
    np.testing.assert_array_equal(np.asarray(state.offset), [16, 10, 12])


def test_long_conversation_slides_over_a_fixed_window(model, wide_decoder):
    window, frames = 6, 20
    codes = np.random.default_rng(2).integers(0, 2048, (frames, 2, 8)).astype(np.int32)
    small, wide = Decoder(model, 2, window=window), wide_decoder
    state = small.init_state(GREEDY)
    shapes = jax.tree.map(lambda a: a.shape, state)
    state, out_small, _ = run_frames(small, state, codes)
    _, out_wide, _ = run_frames(wide, wide.init_state(GREEDY), codes)
    # Identical while the conversation fits the window (one frame later the window starts to bite).
    np.testing.assert_array_equal(out_small[:, : window - 1], out_wide[:, : window - 1])
    assert jax.tree.map(lambda a: a.shape, state) == shapes and small._step._cache_size() == 1
    # The ring holds exactly the last `window` frames, at their ever-growing positions.
    for row in np.asarray(state.kv.pos):
        assert sorted(row.tolist()) == list(range(frames - window, frames))
    assert not np.array_equal(out_small, out_wide)  # the window is really in effect
