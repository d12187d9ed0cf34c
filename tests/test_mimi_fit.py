"""Fitting a random Mimi's quantizer to speech: speech gets varied codes, silence (before and after speech)
the silence code, so the codes-level activity detector follows the audio."""

import shutil

import numpy as np
import pytest

from flmjax import audio
from flmjax.eval.activity import CodesActivity
from flmjax.mimi import Mimi
from flmjax.mimi.fit import fit_quantizer, kmeans, latents, nearest

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

TRAIN = [("What is seven plus three?", "en-us+m1"), ("Seven plus three is ten.", "en-us+f3"),
         ("What colour is the sky?", "en-gb+m3"), ("The sky is blue.", "en-us+f3"),
         ("How do you spell cat?", "en-us+f2"), ("Cat is spelled C A T.", "en-us+f3")]  # fmt: skip


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([c + rng.normal(0, 0.5, (50, 2)) for c in centres])
    found = kmeans(points, 3, np.random.default_rng(1))
    assert np.sort(nearest(centres, found)).tolist() == [0, 1, 2]
    assert np.abs(np.sort(found, axis=0) - np.sort(centres, axis=0)).max() < 0.3


def test_fitted_codes_follow_speech(tmp_path):
    random = Mimi.random(seed=0)
    clips = [audio.espeak(text, voice, 165) for text, voice in TRAIN]
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
    heard = {}
    for mimi, name in ((random, "random"), (fitted, "fitted")):
        codes = np.asarray(mimi.encode(pcm[None, None]))[0].T
        speech = CodesActivity.from_mimi(mimi).speech(codes)
        heard[name], held = speech[loud].mean(), (~speech[quiet]).mean()
    assert heard["fitted"] > max(0.75, heard["random"]) and held > 0.95, (heard, held)
    assert len(set(codes[loud, 0])) >= 8  # speech gets varied codes, not one "speech" code
    assert (codes[:, 2:] == 0).all()  # the later acoustic codebooks hold one entry
