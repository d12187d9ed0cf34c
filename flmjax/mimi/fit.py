"""Fit a Mimi's quantizer to a corpus, for codecs without trained weights (the `--mimi random` codec).

With random weights the random codebooks are far from where the encoder's latents lie, so one or two
entries win for nearly every frame: speech gets a code or two (besides silence's), which carry nothing of
what was said. `fit_quantizer` keeps the
encoder (and the decoder) and replaces the quantizer's projections and codebooks: each branch's input
projection becomes the latents' principal directions, and its first codebook holds the centroid of the
silent frames (entry 0) and the k-means centroids of the speech frames (frames are told apart by their
audio, so the frames after speech, whose latents still carry it through the encoder's receptive field,
fit the silence entry). Codebook rows beyond the fitted clusters repeat the first ones, so they are
never chosen (a nearest-entry tie goes to the lowest index).

The result is still no speech codec (its decoder is random), but its codes follow the speech: frames of
speech get varied codes, and silence gets the silence code.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from flmjax.mimi.codec import Mimi
from flmjax.mimi.model import MimiModel

CHUNK_S = 20  # latents are computed over fixed 20 s chunks of the concatenated clips (one compiled shape)
QUIET = 1e-3  # |sample| below this everywhere in a frame and the 3 before: a silent frame
LOUD = 0.01  # frame RMS above this (-40 dBFS): a speech frame
SILENT_QUANTILE = 0.99  # silence's cell holds this share of the silent frames (along Fisher's direction)
FRESH_TRANSIENT = 4  # a fresh encoder's first frames of silence, left to the activity detector's transient
DOMINANCE = 10.0  # Fisher's axis, scaled to this many times the speech's spread in the other directions


class Latents(NamedTuple):
    """The quantizer's input of a corpus, frame by frame, with what each frame's audio is."""

    values: np.ndarray  # float [N, dimension]
    silent: np.ndarray  # bool [N]: the frame and the 3 before are silent
    speech: np.ndarray  # bool [N]: the frame holds speech (neither: quiet or a transition, left out of the fit)


def latents(mimi: Mimi, clips: Sequence[np.ndarray], gap_s: float = 1.0) -> Latents:
    """Latents of 24 kHz clips played one after another with `gap_s` of silence after each."""
    gap = np.zeros(int(gap_s * mimi.sample_rate), np.float32)
    signal = np.concatenate([x for c in clips for x in (np.asarray(c, np.float32), gap)])
    chunk = CHUNK_S * mimi.sample_rate
    signal = np.pad(signal, (0, -len(signal) % chunk))
    chunks = signal.reshape(-1, 1, chunk)
    values = np.concatenate([np.asarray(_latent(mimi, chunks[i : i + 1]))[0] for i in range(len(chunks))])
    frames = signal.reshape(-1, mimi.frame_size)
    audible = np.convolve((np.abs(frames) > QUIET).any(axis=1), np.ones(4), mode="full")[: len(frames)] > 0
    return Latents(values, ~audible, np.sqrt((frames**2).mean(axis=1)) > LOUD)


def _latent(mimi: Mimi, pcm: np.ndarray) -> jax.Array:
    return _latent_program(mimi)(mimi.params, pcm)


@functools.lru_cache(maxsize=2)
def _latent_program(mimi: Mimi):
    return jax.jit(lambda params, x: mimi.module.apply({"params": params}, x, method=MimiModel.latent))


def silence_latents(mimi: Mimi, frames: int = 16) -> np.ndarray:
    """Latents of digital silence from a fresh encoder [frames, dimension] (the transient, then steady)."""
    return np.asarray(_latent(mimi, np.zeros((1, 1, frames * mimi.frame_size), np.float32)))[0]


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 12) -> np.ndarray:
    """Lloyd's k-means [k, D] from k distinct random points; an emptied cluster keeps its centroid."""
    k = min(k, len(points))
    centroids = points[rng.choice(len(points), k, replace=False)].astype(np.float64)
    for _ in range(iterations):
        assign = nearest(points, centroids)
        for j in range(k):
            members = points[assign == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
    return centroids


def nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid of every point (the quantizer's rule)."""
    return np.argmin(np.sum(centroids**2, axis=1)[None] - 2 * points @ centroids.T, axis=1)


def _principal(x: np.ndarray, dim: int) -> np.ndarray:
    """[D, dim] the top principal directions of the rows of x."""
    centered = x - x.mean(axis=0)
    _, vectors = np.linalg.eigh(centered.T @ centered)
    return vectors[:, ::-1][:, :dim]


def _codebook(rows: np.ndarray, size: int) -> np.ndarray:
    """[size, D]: the rows, then repeats of them (never the nearest: a tie goes to the first)."""
    return np.resize(rows, (size, rows.shape[1])) if len(rows) < size else rows[:size]


def fit_quantizer(
    mimi: Mimi, corpus: Latents, semantic_codes: int = 128, acoustic_codes: int = 16, seed: int = 0
) -> Mimi:
    """A Mimi with `mimi`'s encoder and decoder and a quantizer fitted to `corpus` (see the module
    docstring). Both branches project onto Fisher's direction between speech and silent frames (scaled
    by `DOMINANCE`, so that it decides speech vs silence first) and the top principal directions of the
    speech; entry 0 of the semantic and of the first acoustic codebook is silence (the silent frames'
    mean), then `semantic_codes` / `acoustic_codes` k-means clusters of the speech frames, all placed on
    Fisher's axis so that silence's cell ends at the `SILENT_QUANTILE` of the silent frames. The later
    acoustic codebooks hold one entry (their code is always 0): activity and content live in the first
    two codebooks, which keeps what a small model must predict small."""
    rng = np.random.default_rng(seed)
    c = mimi.config
    fresh = silence_latents(mimi)[FRESH_TRANSIENT:].astype(np.float64)  # what CodesActivity probes with
    silent = np.concatenate([corpus.values[corpus.silent], fresh]).astype(np.float64)
    speech = corpus.values[corpus.speech].astype(np.float64)
    within = np.cov(speech.T) + np.cov(silent.T) + 1e-8 * np.eye(speech.shape[1])
    fisher = np.linalg.solve(within, speech.mean(axis=0) - silent.mean(axis=0))
    fisher /= np.linalg.norm(fisher)
    rest = _principal(speech - np.outer(speech @ fisher, fisher), c.codebook_dim - 1)
    rest -= np.outer(fisher, fisher @ rest)  # exactly orthogonal to Fisher's direction
    quiet_f = float(np.mean(silent @ fisher))
    # Silence's cell also holds a fresh encoder's silence once past its first frames, so that its encoding
    # settles (the activity detector probes the codec with it).
    edge = max(float(np.quantile(silent @ fisher, SILENT_QUANTILE)), float((fresh @ fisher).max()))
    edge += 0.01 * (edge - quiet_f)
    spread = float(np.sqrt((((speech - speech.mean(axis=0)) @ rest) ** 2).sum(axis=1).mean()))
    scale = DOMINANCE * spread / abs(edge - quiet_f)
    proj = np.concatenate([fisher[:, None] * scale, rest], axis=1)
    quiet = np.concatenate([[quiet_f * scale], silent.mean(axis=0) @ rest])
    loud_f = (2 * edge - quiet_f) * scale  # the speech entries' coordinate: the cells meet at `edge`
    quantizer = {}
    for branch, count in (("semantic", c.n_q_semantic), ("acoustic", mimi.n_q - c.n_q_semantic)):
        if not count:
            continue
        clusters = kmeans(speech @ rest, semantic_codes if branch == "semantic" else acoustic_codes, rng)
        entries = np.concatenate([quiet[None], np.concatenate([np.full((len(clusters), 1), loud_f), clusters], axis=1)])
        old = mimi.params["quantizer"][branch]
        new = {"input_proj": proj.astype(np.float32), "output_proj": np.asarray(old["output_proj"]),
               "codebook_0": _codebook(entries, c.codebook_size).astype(np.float32)}  # fmt: skip
        for i in range(1, count):
            new[f"codebook_{i}"] = np.zeros((c.codebook_size, c.codebook_dim), np.float32)
        quantizer[branch] = new
    return Mimi({**jax.tree.map(np.asarray, mimi.params), "quantizer": quantizer}, mimi.n_q, mimi.config)
