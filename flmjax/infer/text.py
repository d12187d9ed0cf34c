"""The monologue shown to a user: sampled text ids -> printable pieces, as the release streams them.

Every sampled id except `<wait>` (and BayLing-Duplex's state tokens, when the vocabulary has them) is
text; such an id that follows text ends the utterance with a newline, and none is ever printed.
Byte-level BPE ids can end in the middle of a UTF-8 character; such a tail decodes to U+FFFD and is held
back until the ids completing it arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Detokenizer(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


class TextStream:
    """One stream's text: `push(id)` returns the text that became printable (often "")."""

    def __init__(self, tokenizer: Detokenizer, wait_id: int, state_ids: tuple[int, ...] = ()):
        self.tokenizer = tokenizer
        self.silent = {wait_id, *state_ids}  # ids that are not words
        self.reset()

    def reset(self) -> None:
        self._utterance: list[int] = []  # ids since the last `<wait>`
        self._shown = 0  # characters of the utterance already returned

    def push(self, token_id: int) -> str:
        if token_id in self.silent:
            if not self._utterance:
                return ""
            rest = self.tokenizer.decode(self._utterance)[self._shown :]
            self.reset()
            return rest + "\n"
        self._utterance.append(int(token_id))
        printable = self.tokenizer.decode(self._utterance).rstrip("\ufffd")
        piece = printable[self._shown :]
        self._shown = max(self._shown, len(printable))
        return piece
