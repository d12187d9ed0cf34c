"""Fitting a random Mimi's quantizer to speech: speech gets varied codes, silence (before and after speech)
the silence code, so the codes-level activity detector follows the audio."""

import shutil

import numpy as np
import pytest

from flmjax import audio
from flmjax.data import curriculum
from flmjax.eval.activity import CodesActivity
from flmjax.mimi import Mimi
from flmjax.mimi.fit import fit_quantizer, kmeans, latents, nearest

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

# Training recordings as the benchmark fits them: curriculum questions in training voices, answers in the model's.
TRAIN = [(q.question, curriculum.TRAIN_VOICES[i % 6]) for i, q in enumerate(curriculum.qa_items()[::9])] + [
    (q.reply, curriculum.MODEL_VOICE) for q in curriculum.qa_items()[4::9]
]


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(0, 0.5, (50, 2)) for c in centres])
    found = kmeans(points, 3, np.random.default_rng(1))
    assert np.sort(nearest(centres, found)).tolist() == [0, 1, 2]
    assert np.abs(np.sort(found, axis=0) - np.sort(centres, axis=0)).max() < 0.3


def test_fitted_codes_follow_speech(tmp_path):
    random = Mimi.random(seed=0)
    clips = [curriculum.speech(text, voice, 165) for text, voice in TRAIN]
    fitted = fit_quantizer(random, latents(random, clips), semantic_codes=32, acoustic_codes=4)
    path = tmp_path / "mimi.safetensors"
    fitted.save_pretrained(path)
    fitted = Mimi.from_pretrained(path)

    # An unseen sentence in an unseen voice, between stretches of silence.
    clip = audio.espeak("What is the capital of France?", "en-us+m7", 180)
    rate, frame = fitted.sample_rate, fitted.frame_size
    pcm = np.concatenate([np.zeros(rate // 2), clip, np.zeros(rate * 3 // 2), clip, np.zeros(rate)]).astype(np.float32)
    pcm = np.pad(pcm, (0, -len(pcm) % frame))
    loud = np.sqrt((pcm.reshape(-1, frame) ** 2).mean(axis=1)) > 0.01
    quiet = ~np.convolve(np.abs(pcm.reshape(-1, frame)).max(axis=1) > 1e-3, np.ones(4))[: len(loud)].astype(bool)
    heard, held, distinct = {}, {}, {}
    for mimi, name in ((random, "random"), (fitted, "fitted")):
        codes = np.asarray(mimi.encode(pcm[None, None]))[0].T
        speech = CodesActivity.from_mimi(mimi).speech(codes)
        heard[name], held[name] = speech[loud].mean(), (~speech[quiet]).mean()
        distinct[name] = len({tuple(c) for c in codes[loud, :2]})
    print(heard, held, distinct)
    # What fitting buys: speech frames get varied codes (the question's content reaches the model) and
    # silence after speech is silence again; it hears about as much of the speech as the random codec.
    assert distinct["fitted"] >= 2 * distinct["random"], distinct
    assert held["fitted"] >= 0.95 and heard["fitted"] >= 0.5, (heard, held)
    assert (codes[:, 2:] == 0).all()  # the later acoustic codebooks hold one entry
