"""Which term of the training loss (paper Eq. 3) each position of a sample feeds.

Layouts give every position a weight (1 = in the loss, 0 = not); the class follows from the position and
the token, never from the layout: speak codebook 0 is semantic (alpha_1), speak codebooks 1..7 acoustic
(alpha_2), a text `<wait>` is a wait position (gamma), with state tokens a `[SILENCE]` silence (omega_sil)
and an `[ASSISTANT]` / `[EPAD]` role position (omega_role), any other text token monologue (beta). Listen
streams and speak tokens that are not Mimi codes (pad / empty ids) never carry loss. The rule is the same
in raw and in delayed coordinates, since delays move frames but not streams.
"""

from __future__ import annotations

import enum

import numpy as np

from flmjax.tokens import RELEASE_TOKENS, TEXT_STREAM, TokenIds


class LossClass(enum.IntEnum):
    NONE = 0
    SEMANTIC = 1  # speak codebook 0: alpha_1
    ACOUSTIC = 2  # speak codebooks 1..7: alpha_2
    MONOLOGUE = 3  # text other than <wait>: beta
    WAIT = 4  # text <wait>: gamma
    SILENCE = 5  # text [SILENCE] (state tokens): omega_sil
    ROLE = 6  # text [ASSISTANT] / [EPAD] (state tokens): omega_role


def loss_classes(tokens: np.ndarray, weights: np.ndarray, ids: TokenIds = RELEASE_TOKENS) -> np.ndarray:
    """Per-position `LossClass` codes, int8 [..., T, 17], of a sample's tokens and weights."""
    tokens = np.asarray(tokens)
    weights = np.asarray(weights)
    if tokens.shape != weights.shape or tokens.shape[-1] != ids.num_streams:
        raise ValueError(
            f"tokens {tokens.shape} and weights {weights.shape} must share one shape [..., T, {ids.num_streams}]"
        )
    classes = np.full(tokens.shape, LossClass.NONE, dtype=np.int8)
    text = tokens[..., TEXT_STREAM]
    classes[..., TEXT_STREAM] = np.where(text == ids.text_wait, LossClass.WAIT, LossClass.MONOLOGUE)
    if ids.state_tokens is not None:
        silence, assistant, _, epad = ids.state_tokens
        classes[..., TEXT_STREAM][text == silence] = LossClass.SILENCE
        classes[..., TEXT_STREAM][(text == assistant) | (text == epad)] = LossClass.ROLE
    speak = ids.speak_streams
    classes[..., speak.start] = LossClass.SEMANTIC
    classes[..., speak.start + 1 : speak.stop] = LossClass.ACOUSTIC
    not_a_code = np.zeros(tokens.shape, dtype=bool)
    not_a_code[..., speak] = tokens[..., speak] >= ids.codebook_size
    classes[(weights <= 0) | not_a_code] = LossClass.NONE
    return classes
