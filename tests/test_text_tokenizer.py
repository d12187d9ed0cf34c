"""The FLM-Audio text tokenizer against Qwen's own vocab.json/merges.txt (an independent build path)."""

import json

import pytest
import transformers

from flmjax.data.text_tokenizer import TextTokenizer, TokenizerFilesError, default_tokenizer_dir, load_text_tokenizer
from flmjax.tokens import RELEASE_TOKENS

SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog, doesn't it? 123 apples.",
    "今天天气很好，我们去公园散步吧。",
    "Mixed 中文 and English, with  two spaces\nand a newline.",
]


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return load_text_tokenizer()


@pytest.fixture(scope="module")
def vocab() -> dict:
    return json.loads((default_tokenizer_dir() / "vocab.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def reference():
    """transformers' Qwen2 BPE built from vocab.json + merges.txt, not from the tokenizer.json we patch."""
    d = default_tokenizer_dir()
    merges = [tuple(line.split()) for line in (d / "merges.txt").read_text(encoding="utf-8").splitlines()[1:] if line]
    return transformers.Qwen2Tokenizer(vocab=json.loads((d / "vocab.json").read_text(encoding="utf-8")), merges=merges)


def test_known_strings_give_vocab_json_ids(tok, vocab):
    # Byte-level pieces: 'Ġ' is the space byte; '你好' is the two characters' UTF-8 bytes in GPT-2's byte map.
    assert tok.encode("Hello world") == [vocab["Hello"], vocab["Ġworld"]] == [9707, 1879]
    assert tok.encode("你好") == [vocab["ä½łå¥½"]] == [108386]


@pytest.mark.parametrize("text", SENTENCES)
def test_matches_reference_bpe_and_round_trips(tok, reference, text):
    ids = tok.encode(text)
    assert ids == reference(text)["input_ids"]
    assert tok.decode(ids) == text


def test_specials_sit_at_flm_ids(tok):
    assert tok.vocab_size == RELEASE_TOKENS.text_vocab_size == 151668
    assert tok.encode("<wait>") == [RELEASE_TOKENS.text_wait] == [151665]
    assert tok.encode("<asr>") == [RELEASE_TOKENS.text_asr] == [151666]
    assert tok.encode("<answer>") == [RELEASE_TOKENS.text_answer] == [151667]
    assert tok.id_to_token(RELEASE_TOKENS.bos) == "<|endoftext|>"
    assert tok.id_to_token(RELEASE_TOKENS.eos) == "<|im_end|>"
    assert tok.id_to_token(151664) == "<|file_sep|>"  # Qwen2.5's last id is untouched
    ids = tok.encode("<asr>what time is it<answer>It is noon.<wait>")
    assert ids[0] == 151666 and 151667 in ids and ids[-1] == 151665
    assert tok.decode(ids) == "<asr>what time is it<answer>It is noon.<wait>"
    assert tok.decode(ids, skip_special_tokens=True) == "what time is itIt is noon."


def test_qwen3_additions_are_gone(tok, reference):
    for name in ("<think>", "</think>", "<tool_response>", "</tool_response>"):
        assert tok.token_to_id(name) is None
        ids = tok.encode(name)  # now plain text, split into ordinary BPE pieces
        assert len(ids) > 1 and max(ids) < 151643
        assert ids == reference(name)["input_ids"]
    assert tok.id_to_token(151668) is None


def test_foreign_tokenizer_files_are_refused(tmp_path):
    raw = json.loads((default_tokenizer_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    raw["added_tokens"] = [t for t in raw["added_tokens"] if t["content"] != "<|im_end|>"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(TokenizerFilesError, match="151645"):
        TextTokenizer.from_dir(tmp_path)
    with pytest.raises(TokenizerFilesError, match="no tokenizer.json"):
        TextTokenizer.from_dir(tmp_path / "missing")
