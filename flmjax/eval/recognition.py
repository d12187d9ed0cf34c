"""Recognition metrics: corpus WER (Whisper's English normaliser), Chinese CER, Seed-TTS mean WER, spoken QA.

Edit counts come from `jiwer` (Levenshtein alignment over words; Chinese as one "word" per character).
- Corpus WER: (substitutions + deletions + insertions) summed over the corpus / reference words.
- Chinese CER: Whisper's basic normaliser (drops punctuation and symbols), converted to simplified
  characters (OpenCC `t2s`), whitespace removed, one token per character.
- Seed-TTS WER: the mean of per-utterance WERs, with punctuation and symbols stripped except apostrophes
  and English lower-cased (its `run_wer.py` convention; Chinese: simplified characters).
- Spoken QA: an answer counts when its normalised words (Chinese: characters) appear as a contiguous
  run in the normalised transcript (the Moshi / BayLing substring protocol, at word boundaries so that
  "5" does not match inside "55").
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Sequence

import jiwer

from flmjax.eval import EvalError

NORMALIZERS = ("whisper", "seedtts", "none")


@functools.cache
def _english() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@functools.cache
def _basic() -> Callable[[str], str]:
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


@functools.cache
def _simplifier():
    import opencc

    return opencc.OpenCC("t2s")


def simplify(text: str) -> str:
    """Traditional -> simplified Chinese characters (OpenCC's t2s); other text unchanged."""
    return _simplifier().convert(text)


def _strip_punctuation(text: str) -> str:
    """Seed-TTS style: punctuation and symbols become spaces, apostrophes stay."""
    kept = (" " if unicodedata.category(c)[0] in "PS" and c != "'" else c for c in text)
    return re.sub(r"\s+", " ", "".join(kept)).strip()


def words(text: str, normalizer: str = "whisper") -> list[str]:
    """English text -> its words after `normalizer` (whisper | seedtts | none)."""
    if normalizer == "whisper":
        text = _english()(text)
    elif normalizer == "seedtts":
        text = _strip_punctuation(text).lower()
    elif normalizer != "none":
        raise EvalError(f"unknown normalizer {normalizer!r}; known: {', '.join(NORMALIZERS)}")
    return text.split()


def characters(text: str, normalizer: str = "whisper") -> list[str]:
    """Chinese text -> simplified characters, whitespace removed, punctuation dropped (whisper's basic
    normaliser, or seedtts' stripping)."""
    if normalizer == "whisper":
        text = _basic()(text)
    elif normalizer == "seedtts":
        text = _strip_punctuation(text)
    elif normalizer != "none":
        raise EvalError(f"unknown normalizer {normalizer!r}; known: {', '.join(NORMALIZERS)}")
    return [c for c in simplify(text) if not c.isspace()]


def tokens(text: str, lang: str = "en", normalizer: str = "whisper") -> list[str]:
    if lang == "en":
        return words(text, normalizer)
    if lang == "zh":
        return characters(text, normalizer)
    raise EvalError(f"unknown language {lang!r}; known: en, zh")


def _counts(refs: Sequence[list[str]], hyps: Sequence[list[str]]) -> dict[str, int]:
    if len(refs) != len(hyps):
        raise EvalError(f"{len(refs)} references but {len(hyps)} hypotheses")
    # jiwer aligns strings of space-separated tokens; tokens hold no spaces (split above).
    out = jiwer.process_words([" ".join(r) for r in refs], [" ".join(h) for h in hyps]) if refs else None
    return {
        "reference": sum(len(r) for r in refs),
        "substitutions": out.substitutions if out else 0,
        "deletions": out.deletions if out else 0,
        "insertions": out.insertions if out else 0,
    }


def error_rate(
    references: Sequence[str], hypotheses: Sequence[str], lang: str = "en", normalizer: str = "whisper"
) -> dict[str, float | int]:
    """Corpus-level error rate. English: {"wer", "words", "substitutions", "deletions", "insertions"};
    Chinese: {"cer", "chars", ...}. Edits summed over the corpus / reference tokens."""
    refs = [tokens(r, lang, normalizer) for r in references]
    hyps = [tokens(h, lang, normalizer) for h in hypotheses]
    counts = _counts(refs, hyps)
    n = counts.pop("reference")
    if n == 0:
        raise EvalError("the references hold no words after normalisation: the error rate is undefined")
    rate = (counts["substitutions"] + counts["deletions"] + counts["insertions"]) / n
    unit = ("wer", "words") if lang == "en" else ("cer", "chars")
    return {unit[0]: rate, unit[1]: n, **counts}


def utterance_error_rates(
    references: Sequence[str], hypotheses: Sequence[str], lang: str = "en", normalizer: str = "seedtts"
) -> list[float]:
    """The error rate of each utterance on its own (Seed-TTS's WER is their mean)."""
    if len(references) != len(hypotheses):
        raise EvalError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    rates = []
    for i, (r, h) in enumerate(zip(references, hypotheses)):
        ref, hyp = tokens(r, lang, normalizer), tokens(h, lang, normalizer)
        if not ref:
            raise EvalError(f"reference {i + 1} is empty after normalisation: its error rate is undefined")
        c = _counts([ref], [hyp])
        rates.append((c["substitutions"] + c["deletions"] + c["insertions"]) / len(ref))
    return rates


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def contains_answer(transcript: str, answers: str | Sequence[str], lang: str = "en") -> bool:
    """True when any of `answers` appears in `transcript` (normalised, at word boundaries)."""
    answers = [answers] if isinstance(answers, str) else list(answers)
    said = tokens(transcript, lang)
    return any(_contains(said, tokens(a, lang)) for a in answers)


def qa_accuracy(transcripts: Sequence[str], answers: Sequence[str | Sequence[str]], lang: str = "en") -> float:
    """Spoken-QA accuracy: the fraction of transcripts containing one of their item's answers."""
    if len(transcripts) != len(answers) or not transcripts:
        raise EvalError(f"{len(transcripts)} transcripts for {len(answers)} answer sets (need the same, > 0)")
    return sum(contains_answer(t, a, lang) for t, a in zip(transcripts, answers)) / len(transcripts)
