"""Voice activity from Mimi codes, without decoding audio: a frame is speech when its 8 codes differ from
Mimi's encoding of silence.

The silence codes come from the Mimi in use (random weights included) by encoding digital silence. A
stream's first frames are a transient (the encoder's padding and empty context give other codes before
they settle), so frame f < `transient` is also silent when it equals the silence encoding of frame f.
Applies to the model's speak codes (the model learned silence from encoded silence) and to the user's
listen codes alike.

How closely this follows the audio depends on the codec: Mimi's encoder is causal with a receptive
field into the past, so codes stay off silence for a few frames after speech ends (measured in
tests/test_eval_activity.py), and a codec with random weights maps some quiet speech frames onto the
silence codes (the IPU rule's 200 ms filling bridges single such frames).
"""

from __future__ import annotations

import numpy as np

from flmjax.eval import EvalError

PROBE_FRAMES = 16  # frames of silence encoded to find the steady silence codes
STEADY_FRAMES = 4  # the last frames of the probe that must agree


class CodesActivity:
    """Speech / silence per frame from Mimi codes [F, n_q], against `silence` [T, n_q]: the encoding of
    silence frame by frame until it settles (its last row is the steady silence code)."""

    def __init__(self, silence: np.ndarray):
        silence = np.asarray(silence, np.int64)
        if silence.ndim != 2 or len(silence) == 0:
            raise EvalError(f"silence codes must be [frames, codebooks], got shape {list(silence.shape)}")
        self.silence = silence

    @classmethod
    def from_mimi(cls, mimi) -> CodesActivity:
        """Encode PROBE_FRAMES of digital silence with `mimi`; keep the transient and one steady row."""
        zeros = np.zeros((1, 1, PROBE_FRAMES * mimi.frame_size), np.float32)
        codes = np.asarray(mimi.encode(zeros))[0].T  # [F, n_q]
        steady = codes[-1]
        if not (codes[-STEADY_FRAMES:] == steady).all():
            raise EvalError(f"Mimi's encoding of silence does not settle within {PROBE_FRAMES} frames")
        settled = np.flatnonzero(~(codes == steady).all(axis=1))
        transient = int(settled[-1]) + 1 if settled.size else 0
        return cls(codes[: transient + 1])

    @property
    def transient(self) -> int:
        return len(self.silence) - 1

    def speech(self, codes: np.ndarray) -> np.ndarray:
        """codes int [F, n_q] of one stream from its first frame -> bool [F], True where speech."""
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.silence.shape[1]:
            raise EvalError(f"codes must be [frames, {self.silence.shape[1]}], got shape {list(codes.shape)}")
        silent = (codes == self.silence[-1]).all(axis=1)
        head = min(self.transient, len(codes))
        silent[:head] |= (codes[:head] == self.silence[:head]).all(axis=1)
        return ~silent
