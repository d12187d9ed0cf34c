"""WER / CER / Seed-TTS mean WER / spoken QA against hand-counted edits, with the normalisers' effects."""

import pytest

from flmjax.eval import EvalError
from flmjax.eval.recognition import contains_answer, error_rate, qa_accuracy, utterance_error_rates


def test_corpus_wer_sums_edits_over_the_corpus():
    # ref 1: "the cat sat on the mat" (6) vs "the cat sit on mat": 1 substitution, 1 deletion.
    # ref 2: "hello world" (2) vs "hello big world": 1 insertion.  (1 + 1 + 1) / 8.
    out = error_rate(["The cat sat on the mat.", "Hello, world!"], ["the cat sit on mat", "hello big world"])
    assert out == {"wer": 3 / 8, "words": 8, "substitutions": 1, "deletions": 1, "insertions": 1}


def test_whisper_normaliser_numbers_punctuation_case_contractions():
    # Spelled-out numbers become digits, contractions expand, case and punctuation go: no edits at all.
    out = error_rate(["I won't pay twenty-five dollars, Mr. Smith."], ["i will not pay $25 mister smith"])
    assert out["wer"] == 0.0 and out["words"] == 7  # i will not pay $25 mister smith
    # Without normalisation the same pair has edits (case, punctuation, the number, the contraction).
    assert error_rate(["I won't pay twenty-five dollars"], ["i will not pay $25"], normalizer="none")["wer"] > 0


def test_empty_hypothesis_is_all_deletions_and_empty_references_fail():
    assert error_rate(["the quick fox"], [""]) == {
        "wer": 1.0, "words": 3, "substitutions": 0, "deletions": 3, "insertions": 0,
    }  # fmt: skip
    with pytest.raises(EvalError, match="no words"):
        error_rate([""], ["something"])
    with pytest.raises(EvalError, match="2 references but 1"):
        error_rate(["a", "b"], ["a"])


def test_chinese_cer_simplifies_and_drops_punctuation():
    # Traditional 漢語 -> 汉语; punctuation and spaces dropped: ref 汉语很难 (4 chars), hyp 汉语很 难了: 1 insertion.
    out = error_rate(["漢語很難。"], ["汉语很 难了！"], lang="zh")
    assert out == {"cer": 0.25, "chars": 4, "substitutions": 0, "deletions": 0, "insertions": 1}


def test_seed_tts_mean_of_per_utterance_rates():
    # Seed-TTS strips punctuation but keeps apostrophes and lower-cases: "it's" vs "its" is a substitution.
    rates = utterance_error_rates(["It's fine.", "a b c d"], ["its fine", "a b c"])
    assert rates == [0.5, 0.25]
    with pytest.raises(EvalError, match="reference 1 is empty"):
        utterance_error_rates(["!"], ["x"])


def test_spoken_qa_answer_at_word_boundaries():
    assert contains_answer("The answer is five.", "five")
    assert contains_answer("it is 5", ["five", "5"])
    assert not contains_answer("fifty-five apples", "five")  # normalised to "55": no match inside a word
    assert contains_answer("巴黎是法國的首都", "法国", lang="zh")
    assert qa_accuracy(["Paris, of course", "I do not know"], [["Paris"], "London"]) == 0.5
