"""Sessions: audio in -> reply audio (same length) + text, wired exactly as Mimi stream -> decoder -> Mimi
stream; reset equals a fresh session; the text stream; the audio-level CLI."""

import numpy as np
import pytest
import sphn

from flmjax.data.text_tokenizer import load_text_tokenizer
from flmjax.infer.decoder import Decoder
from flmjax.infer.offline import reply_to_audio
from flmjax.infer.sampling import SamplingSettings
from flmjax.infer.session import Session
from flmjax.infer.text import TextStream
from tests.infer_helpers import load_launcher, small_mimi, speech_like, tiny_model

FRAMES = 10
HOT = SamplingSettings(text_temperature=0.8, audio_temperature=0.8, seed=3)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def mimi():
    return small_mimi()


@pytest.fixture(scope="module")
def session(model, mimi):
    return Session(model, mimi, batch_size=1, settings=HOT, window=64)


def run(session, pcm):
    results = [session.step(pcm[k * 1920 : (k + 1) * 1920]) for k in range(len(pcm) // 1920)]
    audio = np.concatenate([r.pcm[0] for r in results])
    return (
        audio,
        "".join(r.text[0] for r in results),
        np.stack([r.tokens[0] for r in results]),
        [r.valid[0] for r in results],
    )


def test_session_is_mimi_encode_then_decoder_then_mimi_decode_and_reset_is_fresh(session, model, mimi):
    pcm = speech_like(FRAMES, seed=1)
    audio, text, tokens, valid = run(session, pcm)  # a fresh session's first conversation
    assert valid == [False] + [True] * (FRAMES - 1)

    # The same pipeline from separate parts: Mimi's own stream object encodes, the decoder decodes (same
    # settings and seed, so the same samples), a second Mimi stream decodes the output frames.
    encoder, speaker = mimi.streaming(1), mimi.streaming(1)
    decoder = Decoder(model, 1, window=64)
    state = decoder.init_state(HOT)
    for k in range(FRAMES):
        codes = np.asarray(encoder.encode(pcm[None, None, k * 1920 : (k + 1) * 1920]))[:, :, 0]
        state, out = decoder.step(state, codes)
        if k == 0:
            np.testing.assert_array_equal(audio[:1920], 0.0)  # no reply yet: silence
            continue
        np.testing.assert_array_equal(np.asarray(out.frame)[0], tokens[k])
        reply = np.asarray(speaker.decode(np.asarray(out.frame)[:, 1:, None]))[0, 0]
        np.testing.assert_allclose(audio[k * 1920 : (k + 1) * 1920], reply, atol=1e-5)
    assert np.abs(audio[1920:]).mean() > 1e-3

    # The text: every id but <wait>, a newline where <wait> follows text.
    wait = model.config.tokens.text_wait
    expected, utterance = "", []
    tokenizer = load_text_tokenizer()
    for t in tokens[1:, 0]:
        if t == wait and utterance:
            expected, utterance = expected + tokenizer.decode(utterance) + "\n", []
        elif t != wait:
            utterance.append(int(t))
    expected += tokenizer.decode(utterance).rstrip("\ufffd")
    assert text == expected and text

    # reset: the same conversation again gives exactly the fresh session's reply (initial tokens
    # restored, caches, Mimi streams, text and sampling seed all restarted).
    session.reset()
    again = run(session, pcm)
    np.testing.assert_array_equal(again[0], audio)
    np.testing.assert_array_equal(again[2], tokens)
    assert again[1] == text


def test_reply_has_the_input_length(session):
    pcm = speech_like(5, seed=4)[: 4 * 1920 + 700]  # not a whole number of frames
    reply, text, times = reply_to_audio(session, pcm)
    assert reply.shape == pcm.shape and reply.dtype == np.float32
    assert np.all(reply[:1920] == 0) and np.abs(reply[1920:]).mean() > 1e-3
    assert len(times) == 5 and isinstance(text, str)


def test_text_stream_holds_partial_characters_and_ends_utterances():
    tokenizer = load_text_tokenizer()
    wait = tokenizer.ids.text_wait
    ids = tokenizer.encode("Hi 😀!")
    stream = TextStream(tokenizer, wait)
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) == "Hi 😀!"
    assert all("\ufffd" not in p for p in pieces)  # the emoji's bytes span several ids: never half shown
    assert stream.push(wait) == "\n" and stream.push(wait) == ""  # a newline only after text
    assert stream.push(tokenizer.encode("ok")[0]) == "ok"


@pytest.mark.slow
def test_cli_audio_level(tmp_path):
    """16 kHz input, random full-size Mimi: the reply wav has the input's rate and length, text is written."""
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt")
    pcm16 = np.asarray(sphn.resample(speech_like(6, seed=6), 24000, 16000), np.float32)[:7000]
    sphn.write_wav(str(tmp_path / "user.wav"), pcm16, 16000)
    infer = load_launcher("infer")
    args = ["--checkpoint", str(tmp_path / "ckpt"), "--mimi", "random", "--input", str(tmp_path / "user.wav"),
            "--output", str(tmp_path / "reply.wav"), "--text", str(tmp_path / "out.txt")]  # fmt: skip
    assert infer.main(args) == 0
    reply, rate = sphn.read(str(tmp_path / "reply.wav"))
    assert rate == 16000 and reply.shape == (1, 7000)
    assert (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert infer.main([*args[:4], "--input", str(tmp_path / "missing.wav"), *args[6:]]) == 2
