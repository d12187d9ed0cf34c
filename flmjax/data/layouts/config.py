"""`LayoutConfig`: every choice of the layouts."""

from __future__ import annotations

import dataclasses
import math

from flmjax.config import ConfigError
from flmjax.tokens import FRAME_RATE_HZ

ALIGNMENTS = ("contiguous", "word")
TEXT_STATES = ("wait", "bayling")


@dataclasses.dataclass(frozen=True)
class LayoutConfig:
    """Every choice of the layouts; defaults are the spec's (training.md sections 1-2)."""

    lead_frames: int = 2  # TTS style: speech begins this many frames after its text starts
    tts_ratio: float = 0.5  # post-training: fraction of pairs laid out TTS style (1:1 with ASR style)
    gap_s: tuple[float, float] = (0.2, 2.0)  # post-training: random silence before every pair
    sample_frames: int = 8192  # post-training samples are padded to this; no sample is longer
    pad_dialogs: bool = False  # dialogs: pad to sample_frames (else their own length, at most sample_frames)
    interruption_prob: float = 0.7  # free user inputs: probability that a dialog gets an interruption
    reaction_s: float = 0.5  # free user inputs: the model stops within this delay of the user's onset
    alignment: str = "contiguous"  # post-training text: "contiguous" sentences or "word" (Moshi-like ablation)
    sentence_gap_s: float = 0.6  # recorded conversations (moshi:): a longer silence between words ends a sentence
    # Dialogs' text channel outside the text: FLM-Audio's "wait" (`<wait>`), or "bayling": BayLing-Duplex's
    # state tokens [SILENCE] / [ASSISTANT] / [PAD] / [EPAD] (`layouts.states`; needs a *_state model).
    text_states: str = "wait"

    def __post_init__(self) -> None:
        lo, hi = self.gap_s
        checks = {
            "lead_frames must be >= 0": self.lead_frames >= 0,
            "tts_ratio must lie in [0, 1]": 0.0 <= self.tts_ratio <= 1.0,
            "gap_s must be (low, high) with 0 <= low <= high": 0.0 <= lo <= hi,
            "sample_frames must be >= 2": self.sample_frames >= 2,
            "interruption_prob must lie in [0, 1]": 0.0 <= self.interruption_prob <= 1.0,
            "reaction_s must be >= 0": self.reaction_s >= 0.0,
            "sentence_gap_s must be >= 0": self.sentence_gap_s >= 0.0,
            "alignment must be 'contiguous' or 'word'": self.alignment in ALIGNMENTS,
            "text_states must be 'wait' or 'bayling'": self.text_states in TEXT_STATES,
        }
        for message, ok in checks.items():
            if not ok:
                raise ConfigError(f"LayoutConfig: {message}")

    @property
    def reaction_frames(self) -> int:
        """Whole frames of reaction: floor, so that the cut stays within the reaction delay (0.5 s -> 6)."""
        return int(math.floor(self.reaction_s * FRAME_RATE_HZ + 1e-9))
