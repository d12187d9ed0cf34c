"""Token sampling as the release does it, vectorised over independent streams.

Order (spec section 3.1): repetition penalty (HF style, over the set of ids in a window) -> temperature
-> top-p (when top_p > 0 it overrides top-k) -> else top-k -> else the full distribution; greedy (or a
temperature of 0) takes the argmax of the penalised logits. Every setting is a per-stream array, so a
stream changing its settings never recompiles the decoder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flmjax.errors import FlmjaxError


class SettingsError(FlmjaxError):
    """Sampling settings that cannot be used (unknown name, value out of range)."""


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    """One stream's sampling settings; the defaults are the release server's (spec section 3.1)."""

    text_temperature: float = 0.01
    text_top_p: float = 0.9
    text_top_k: int = 1
    text_repetition_penalty: float = 1.03
    text_repetition_window: int = 50  # frames; `<wait>` counts
    audio_temperature: float = 0.5
    audio_top_p: float = 0.9
    audio_top_k: int = 1
    audio_repetition_penalty: float = 1.2  # applied to the first `PENALIZED_CODEBOOKS` codebooks only
    audio_repetition_window: int = 50  # frames
    greedy: bool = False  # argmax of the penalised logits (the release's use_sampling=False)
    seed: int = 0

    def validate(self, max_window: int) -> SamplingSettings:
        for field in dataclasses.fields(self):
            if not np.isfinite(getattr(self, field.name)):  # NaN passes every range check below
                raise SettingsError(f"{field.name} must be finite")
        for side in ("text", "audio"):
            if getattr(self, f"{side}_temperature") < 0:
                raise SettingsError(f"{side} temperature must be >= 0")
            if not 0 <= getattr(self, f"{side}_top_p") <= 1:
                raise SettingsError(f"{side} top_p must be in [0, 1]")
            if getattr(self, f"{side}_top_k") < 0:
                raise SettingsError(f"{side} top_k must be >= 0")
            if getattr(self, f"{side}_repetition_penalty") < 1:
                raise SettingsError(f"{side} repetition penalty must be >= 1 (HF style)")
            if getattr(self, f"{side}_repetition_window") > max_window:
                raise SettingsError(f"{side} repetition window must be <= {max_window} frames")
        return self

    def greedy_deterministic(self) -> SamplingSettings:
        """Pure argmax: no sampling and no repetition penalty (what `--greedy` runs)."""
        return dataclasses.replace(self, greedy=True, text_repetition_penalty=1.0, audio_repetition_penalty=1.0)

    def updated(self, release_settings: Mapping[str, Any]) -> SamplingSettings:
        """Apply a `POST /api/settings` body in the release's names (its LMGen attributes)."""
        changes: dict[str, Any] = {}
        for key, value in release_settings.items():
            field = RELEASE_SETTING_NAMES.get(key)
            if field is None:
                raise SettingsError(f"unknown setting {key!r}; known: {', '.join(sorted(RELEASE_SETTING_NAMES))}")
            if isinstance(value, bool) != (key == "use_sampling") or not isinstance(value, (int, float)):
                raise SettingsError(f"setting {key!r} must be a {'boolean' if key == 'use_sampling' else 'number'}")
            if key == "use_sampling":
                changes["greedy"] = not value
            elif field.endswith(("top_k", "window")):
                if value != int(value):
                    raise SettingsError(f"setting {key!r} must be an integer")
                changes[field] = int(value)
            else:
                changes[field] = float(value)
        return dataclasses.replace(self, **changes)

    def release(self) -> dict[str, bool | float | int]:
        """These settings in the release's names (what `updated` takes, what `GET /api/settings` shows)."""
        return {
            key: not self.greedy if key == "use_sampling" else getattr(self, field)
            for key, field in RELEASE_SETTING_NAMES.items()
        }


def parse_release_settings(values: Mapping[str, str]) -> dict[str, bool | float]:
    """The release's setting names among string `values` (a URL query), parsed for `updated`; other keys
    are not settings and are left out. Raises SettingsError on a value that is not a number (or a boolean)."""
    parsed: dict[str, bool | float] = {}
    for key in RELEASE_SETTING_NAMES.keys() & values.keys():
        value = values[key].strip().lower()
        if key == "use_sampling":
            if value not in ("true", "false", "1", "0"):
                raise SettingsError(f"setting {key!r} must be true or false, got {values[key]!r}")
            parsed[key] = value in ("true", "1")
            continue
        try:
            parsed[key] = float(value)
        except ValueError:
            raise SettingsError(f"setting {key!r} must be a number, got {values[key]!r}") from None
    return parsed


# The release's LMGen attribute names (what its clients POST) -> our fields.
RELEASE_SETTING_NAMES = {
    "use_sampling": "greedy",
    "temp_text": "text_temperature",
    "temp_audio": "audio_temperature",
    "top_p_text": "text_top_p",
    "top_p_audio": "audio_top_p",
    "top_k_text": "text_top_k",
    "top_k_audio": "audio_top_k",
    "repetition_penalty_text": "text_repetition_penalty",
    "repetition_penalty_audio": "audio_repetition_penalty",
    "repetition_penalty_window_text": "text_repetition_window",
    "repetition_penalty_window_audio": "audio_repetition_window",
}

PENALIZED_CODEBOOKS = 4  # the release penalises repeats in codebooks 0..3 only


class StreamSampling(NamedTuple):
    """How each stream samples: one entry per stream (arrays [B]), part of the decoder state (host arrays
    as `stream_sampling` builds them, device arrays once in the state)."""

    temperature: jax.Array | np.ndarray  # float32
    top_p: jax.Array | np.ndarray  # float32
    top_k: jax.Array | np.ndarray  # int32
    penalty: jax.Array | np.ndarray  # float32
    window: jax.Array | np.ndarray  # int32, frames
    greedy: jax.Array | np.ndarray  # bool


def stream_sampling(settings: Sequence[SamplingSettings], side: str) -> StreamSampling:
    """Host arrays for `side` ("text" or "audio") of a batch of settings."""

    def column(name: str, dtype) -> np.ndarray:
        return np.array([getattr(s, f"{side}_{name}") for s in settings], dtype)

    return StreamSampling(
        temperature=column("temperature", np.float32),
        top_p=column("top_p", np.float32),
        top_k=column("top_k", np.int32),
        penalty=column("repetition_penalty", np.float32),
        window=column("repetition_window", np.int32),
        greedy=np.array([s.greedy for s in settings], bool),
    )


def apply_repetition_penalty(
    logits: jax.Array, ids: jax.Array, valid: jax.Array, penalty: jax.Array | np.ndarray
) -> jax.Array:
    """HF style: every id present in the window has its logit divided by `penalty` when positive and
    multiplied by it when negative (once, however often it occurs).

    logits [B, V]; ids [B, W] previous ids; valid [B, W] which of them are in the window; penalty [B].
    """
    rows = jnp.arange(logits.shape[0])[:, None]
    present = jnp.zeros(logits.shape, jnp.int32).at[rows, ids].max(valid.astype(jnp.int32)) > 0
    p = penalty[:, None].astype(logits.dtype)
    return jnp.where(present, jnp.where(logits < 0, logits * p, logits / p), logits)


def _smallest_threshold(probs: jax.Array, above: Callable[[jax.Array], jax.Array], limit: jax.Array) -> jax.Array:
    """Per row, the smallest float32 t >= 0 with above(t) <= limit, for a statistic `above` [B] that does
    not increase with t (and is 0 at t = 1). Bisection over the bit patterns of non-negative floats,
    which order as the floats do: 31 passes over the logits instead of a sort (slow on some backends)."""
    one = jax.lax.bitcast_convert_type(jnp.float32(1.0), jnp.int32)

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        ok = above(jax.lax.bitcast_convert_type(mid, jnp.float32)[:, None]) <= limit
        return jnp.where(ok, lo, mid + 1), jnp.where(ok, mid, hi)

    bounds = (jnp.zeros(probs.shape[:1], jnp.int32), jnp.full(probs.shape[:1], one))
    _, hi = jax.lax.fori_loop(0, 31, halve, bounds)
    return jax.lax.bitcast_convert_type(hi, jnp.float32)[:, None]


def kept_ids(probs: jax.Array, top_p: jax.Array | np.ndarray, top_k: jax.Array | np.ndarray) -> jax.Array:
    """Which ids a row samples from (bool [B, V]): with top_p > 0 the release's nucleus (sorted by
    probability, an id is kept while the mass before it is <= p, i.e. iff the mass of the ids more
    probable than it is <= p); else with top_k > 0 the k most probable ids (ties with the k-th kept);
    else every id. One threshold search serves both rules: each is "keep ids at or above t*"."""
    use_p = (top_p > 0)[:, None]

    def above(t: jax.Array) -> jax.Array:  # mass (top-p) or count (top-k) of the ids more probable than t
        return jnp.sum(jnp.where(probs > t, jnp.where(use_p, probs, 1.0), 0.0), axis=-1)

    limit = jnp.where(top_p > 0, top_p, (top_k - 1).astype(jnp.float32))
    keep = probs >= _smallest_threshold(probs, above, limit)
    return keep | ((top_p <= 0) & (top_k <= 0))[:, None]


def _first_above(w: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per row, the first index whose cumulative weight exceeds u (>= 0), never one of weight 0 (rounding
    can put u at the very top: then the last index with weight), and the cumulative weight before it."""
    cdf = jnp.cumsum(w, axis=-1)
    last = w.shape[-1] - 1 - jnp.argmax(w[:, ::-1] > 0, axis=-1)
    index = jnp.minimum(jnp.sum(cdf <= u[:, None], axis=-1), last)
    before = jnp.take_along_axis(cdf - w, index[:, None], axis=-1)[:, 0]
    return index, before


def _draw(weights: jax.Array, keys: jax.Array, block: int = 64) -> jax.Array:
    """One id per row with probability proportional to weights [B, V] (>= 0, some > 0), by inverse CDF
    with one uniform number a row (V Gumbel numbers a row cost far more on some backends). Two levels,
    a block of ids then an id within it, because long cumulative sums are slow on CPU."""
    b, v = weights.shape
    blocks = jnp.pad(weights, ((0, 0), (0, -v % block))).reshape(b, -1, block)
    mass = jnp.sum(blocks, axis=-1)
    u = jax.vmap(jax.random.uniform)(keys) * jnp.sum(mass, axis=-1)
    j, before = _first_above(mass, u)
    k, _ = _first_above(jnp.take_along_axis(blocks, j[:, None, None], axis=1)[:, 0], jnp.maximum(u - before, 0.0))
    return (j * block + k).astype(jnp.int32)


def sample(logits: jax.Array, keys: jax.Array, params: StreamSampling) -> jax.Array:
    """Penalised logits [B, V] -> ids [B]: temperature, then top-p (if > 0) or top-k (if > 0), else the
    whole distribution; greedy rows (or temperature 0) take the argmax. keys [B, 2]: one PRNG key a stream."""
    logits = logits.astype(jnp.float32)
    argmax = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    sampling = ~params.greedy & (params.temperature > 0)
    scaled = logits / jnp.where(sampling, params.temperature, 1.0)[:, None]
    probs = jax.nn.softmax(scaled, axis=-1)
    sampled = _draw(jnp.where(kept_ids(probs, params.top_p, params.top_k), probs, 0.0), keys)
    return jnp.where(sampling, sampled, argmax)


def mask_ids_from(logits: jax.Array, first_masked: int) -> jax.Array:
    """Forbid ids >= `first_masked` (audio: 2048 pad and 2049 empty are not Mimi codes)."""
    allowed = jnp.arange(logits.shape[-1]) < first_masked
    return jnp.where(allowed, logits, -jnp.inf)
