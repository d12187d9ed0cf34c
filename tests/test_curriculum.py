"""The synthetic curriculum: questions and answers, the word tokenizer, dialogs in the corpus formats, the
held-out split (unseen voices, rates, pauses and arithmetic) as valid conversation scripts."""

import json
import shutil

import numpy as np
import pytest

from flmjax.data import curriculum
from flmjax.data.corpus import read_manifest
from flmjax.data.layouts import LayoutConfig
from flmjax.data.text_tokenizer import WordTokenizer, named_tokenizer, tokenizer_for
from flmjax.eval.script import parse_script
from flmjax.tokens import WORD_TOKENS

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("curriculum")
    return curriculum.generate(root, curriculum.CurriculumSize(train_dialogs=6, held_out_dialogs=4), seed=3)


def test_questions_have_their_answer_in_the_reply():
    items = curriculum.qa_items()
    assert 200 <= len(items) <= 400
    assert len({q.key for q in items}) == len(items)
    assert len({q.question for q in items}) == len(items)
    for q in items:
        assert q.answer.lower() in q.reply.lower().replace(".", ""), q
    seven_plus_three = next(q for q in items if q.key == "plus-7-3")
    assert (seven_plus_three.question, seven_plus_three.reply, seven_plus_three.answer) == (
        "What is seven plus three?",
        "Seven plus three is ten.",
        "ten",
    )
    spell = next(q for q in items if q.key == "spell-cat")
    assert (spell.reply, spell.answer) == ("Cat is spelled C A T.", "c a t")
    assert spell.split() == ("How do you spell um", "cat?")


def test_held_out_arithmetic_is_never_trained_on():
    train, held = curriculum.split_items(seed=0)
    assert {q.kind for q in held} == {"arithmetic"} and len(held) == int(0.2 * 117)
    assert not {q.key for q in train} & {q.key for q in held}
    assert curriculum.split_items(seed=0) == (train, held)
    assert curriculum.split_items(seed=1)[1] != held


def test_word_tokenizer_round_trips_and_is_compact():
    tok = tokenizer_for(WORD_TOKENS)
    assert isinstance(tok, WordTokenizer) and tok is tokenizer_for(WORD_TOKENS)
    for q in curriculum.qa_items():
        for text in (q.question, q.reply):
            ids = tok.encode(text)
            assert tok.decode(ids) == text
            assert len(ids) <= len(text.split()) + 1  # a word an id, and the final punctuation
            assert max(ids) < WORD_TOKENS.text_vocab_size
    # Anything else is spelled in bytes, and decodes back (UTF-8 included).
    for text in ("Zebra-crossing 42!", "naïve café", ""):
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("cat") == [tok.token_to_id("cat")] and tok.encode(" cat") == [tok.token_to_id(" cat")]
    wait = [WORD_TOKENS.text_wait]
    assert tok.decode(tok.encode("Snow is") + wait + tok.encode(" white.")) == "Snow is<wait> white."
    assert tok.decode(tok.encode("Snow is") + wait, skip_special_tokens=True) == "Snow is"
    assert named_tokenizer("words") == (tok, WORD_TOKENS)


def test_backchannels_are_shorter_than_the_reaction_delay():
    reaction = LayoutConfig().reaction_s
    for voice in curriculum.TRAIN_VOICES + curriculum.HELD_OUT_VOICES:
        word = curriculum.backchannel(voice, np.random.default_rng(0))
        duration = len(curriculum.speech(word, voice, curriculum.BACKCHANNEL_SPEED)) / curriculum.SAMPLE_RATE
        assert duration <= curriculum.BACKCHANNEL_MAX_S < reaction


def test_generated_manifests_read_and_follow_the_timings(generated):
    for manifest, kind in (
        (generated.speech, "speech"),
        (generated.dialogs_ft1, "dialogs"),
        (generated.dialogs_ft2, "dialogs"),
    ):
        found, entries = read_manifest(manifest)
        assert found == kind and entries and not [e for e in entries if isinstance(e, Exception)]
    ft1 = [json.loads(line) for line in generated.dialogs_ft1.read_text().splitlines()]
    ft2 = [json.loads(line) for line in generated.dialogs_ft2.read_text().splitlines()]
    assert len(ft1) == len(ft2) == 6
    for a, b in zip(ft1, ft2):
        assert [t for t in b["turns"] if t["text"] not in curriculum.BACKCHANNELS] == a["turns"]
        starts = [t["start"] for t in b["turns"]]
        assert starts == sorted(starts)
        for prev, turn in zip(b["turns"], b["turns"][1:]):
            if turn["role"] == "model":  # the reply starts LEAD_S after the user's turn ends
                clip = curriculum.audio.load_audio(generated.root / prev["audio"])[0][0]
                assert turn["start"] == pytest.approx(prev["start"] + len(clip) / 24_000 + curriculum.LEAD_S, abs=2e-3)
    texts = {t["text"] for d in ft2 for t in d["turns"]}
    train_keys = {q.question for q in curriculum.split_items(3)[0]}
    held = {q.question for q in curriculum.split_items(3)[1]}
    assert not texts & held and texts & train_keys


def test_held_out_scripts_are_valid_and_unseen(generated):
    scripts = sorted(generated.scripts.glob("*.json"))
    assert len(scripts) == 4
    reference = json.loads(generated.reference.read_text())
    kinds = set()
    for path in scripts:
        script = parse_script(path)
        kinds |= {e.kind for e in script.events}
        assert {e.voice for e in script.events} <= set(curriculum.HELD_OUT_VOICES)
        assert {e.speed for e in script.events if e.kind != "backchannel"} <= set(curriculum.HELD_OUT_SPEEDS)
        assert all(e.answer for e in script.events if e.kind == "turn")
        ref = reference[script.name]
        assert ref["duration_s"] == script.duration_s and len(ref["user"]) == len(script.events)
        assert all(s < e <= script.duration_s for s, e in ref["model"])
    assert {"turn", "barge_in"} <= kinds
    # Every held-out dialog starts with a question never trained on.
    held = {q.question for q in curriculum.split_items(3)[1]}
    for path in scripts:
        events = parse_script(path).events
        first = next(i for i, e in enumerate(events) if e.kind == "turn")
        assert " ".join(e.text for e in events[: first + 1]).replace(" um ", " ") in held


def test_generation_is_deterministic(generated, tmp_path):
    again = curriculum.generate(tmp_path, curriculum.CurriculumSize(train_dialogs=6, held_out_dialogs=4), seed=3)
    for name in ("speech.jsonl", "dialogs_ft2.jsonl", "heldout/reference.json"):
        assert (again.root / name).read_text() == (generated.root / name).read_text()
    first = sorted(generated.scripts.glob("*.json"))[0].name
    assert (again.scripts / first).read_text() == (generated.scripts / first).read_text()
