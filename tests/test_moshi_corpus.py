"""moshi-finetune's dataset format: a test-made dataset (stereo espeak-ng conversations, left the model,
right the user, with alignment files) prepared into windows; the plans place the model's sentences (or
words) ahead of their speech; bad files are one line each naming the file, the rest is prepared; and a
LoRA fine-tune on the prepared corpus lowers the loss."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from flmjax import FLMAudio
from flmjax.config import DepformerConfig, ModelConfig
from flmjax.data import moshi, records
from flmjax.data.corpus import CorpusError
from flmjax.data.encoding import encode_batched
from flmjax.data.layouts import Layout, LayoutConfig, SegmentKind, render_dialog
from flmjax.data.prepare import PrepareOptions, prepare_corpus
from flmjax.data.text_tokenizer import load_text_tokenizer
from flmjax.tokens import RELEASE_TOKENS
from tests.eval_helpers import place, speech, write_wav

RATE = 16_000
SECONDS = 6.0
WINDOW = LayoutConfig(sample_frames=40, pad_dialogs=True)  # 39 content frames (3.1 s) per sample
CONVERSATIONS = {
    "a": ([(0.3, "hello there how are you"), (3.6, "fine thanks. and you")], [(2.0, "good morning"), (5.0, "well")]),
    "b": ([(0.5, "the weather is nice today")], [(2.4, "yes it is sunny"), (4.5, "let us go out")]),
}


def _alignments(lines):
    """Each line's words share its speech evenly (the test's stand-in for an aligner)."""
    out = []
    for start, text in lines:
        words, length = text.split(), len(speech(text)) / RATE
        step = length / len(words)
        out += [[w, [round(start + i * step, 3), round(start + (i + 1) * step - 0.02, 3)], "SPEAKER_MAIN"]
                for i, w in enumerate(words)]  # fmt: skip
    return out


def _track(lines):
    return place(SECONDS, [(t, speech(s)) for t, s in lines], RATE)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("moshi")
    lines = []
    for name, (model, user) in CONVERSATIONS.items():
        write_wav(root / "data" / f"{name}.wav", np.stack([_track(model), _track(user)], -1), RATE)
        (root / "data" / f"{name}.json").write_text(json.dumps({"alignments": _alignments(model)}))
        lines.append({"path": f"data/{name}.wav", "duration": SECONDS})
    model, user = CONVERSATIONS["a"]
    write_wav(root / "data" / "mono.wav", _track(model), RATE)  # not stereo
    (root / "data" / "mono.json").write_text(json.dumps({"alignments": _alignments(model)}))
    write_wav(root / "data" / "unaligned.wav", np.stack([_track(model), _track(user)], -1), RATE)  # no .json
    write_wav(root / "data" / "broken.wav", np.stack([_track(model), _track(user)], -1), RATE)
    (root / "data" / "broken.json").write_text('{"alignments": [["hi", [0.1]')
    write_wav(root / "data" / "late.wav", np.stack([_track(model), _track(user)], -1), RATE)
    late = [["hi", [0.1, 0.4], "SPEAKER_MAIN"], ["bye", [9.0, 9.5], "SPEAKER_MAIN"]]  # 9 s: past the 6 s file
    (root / "data" / "late.json").write_text(json.dumps({"alignments": late}))
    lines += [{"path": f"data/{n}.wav", "duration": SECONDS} for n in ("mono", "unaligned", "broken", "late")]
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = root / "prepared"
    report = prepare_corpus(f"moshi:{manifest}", out, PrepareOptions(layout_config=WINDOW), workers=1, progress=False)
    return root, out, report


def test_windows_of_both_channels_with_the_monologue_ahead(dataset):
    root, out, report = dataset
    assert report.records == 4  # 2 recordings x 2 windows (75 frames: 39 + 36)
    corpus = records.PreparedCorpus(out)
    assert corpus.kind == "dialogs" and corpus.index["layout"] == "recorded"
    from flmjax.mimi import Mimi

    tok = load_text_tokenizer()
    mimi = Mimi.random(seed=0)  # the random codec preparation used
    from flmjax import audio

    stereo, rate = audio.load_audio(root / "data" / "a.wav")
    left, right = (encode_batched(mimi, [audio.prepare_for_mimi(stereo[c], rate)[0]])[0] for c in (0, 1))
    ids = RELEASE_TOKENS
    windows = {}
    for i in range(len(corpus)):
        meta, arrays = corpus[i]
        if meta["id"].startswith("data/a.wav#"):
            windows[meta["window"]] = records.dialog_from_record(meta, arrays, 0)
    assert sorted(windows) == [0, 1]
    for k, (turns, plan, listen) in windows.items():
        assert plan.layout == Layout.RECORDED and listen is None
        sample = render_dialog(plan, turns, corpus.silence_codes, ids, WINDOW)
        n = 39 if k == 0 else 36
        first = 39 * k
        np.testing.assert_array_equal(sample.tokens[1 : 1 + n, ids.speak_streams], left[:, first : first + n].T)
        np.testing.assert_array_equal(sample.tokens[1 : 1 + n, ids.listen_streams], right[:, first : first + n].T)
        assert (
            sample.weights[1 : 1 + n, ids.speak_streams].min() == 1 and sample.weights[:, ids.listen_streams].max() == 0
        )
        text = sample.tokens[:, 0]
        if k == 0:  # "hello there how are you" heard from 0.3 s (frame 3): its tokens from frame 3 + 1 - lead 2
            want = tok.encode("hello there how are you")
            np.testing.assert_array_equal(text[2 : 2 + len(want)], want)
            assert set(text[2 + len(want) :].tolist()) == {ids.text_wait}
        else:  # "fine thanks." from 3.6 s: frame 45 of the recording, 6 of the window -> 6 + 1 - 2 = 5
            first_sentence, second = tok.encode("fine thanks."), tok.encode("and you")
            np.testing.assert_array_equal(text[5 : 5 + len(first_sentence)], first_sentence)
            assert [s.kind for s in plan.segments].count(SegmentKind.RESPONSE) == 3  # speak + two sentences
            assert second[0] in text.tolist()


def test_bad_files_are_one_line_each_and_the_rest_is_prepared(dataset):
    _, _, report = dataset
    errors = sorted(report.errors)
    assert len(errors) == 4, errors
    assert all("\n" not in e for e in errors)
    expect = {
        "broken.json": "not valid JSON",
        "late.json": "outside the audio",
        "unaligned.json": "alignment file not found",
        "mono.wav": "1 channel(s); moshi-finetune files are stereo",
    }
    for name, what in expect.items():
        assert any(name in e and what in e for e in errors), (name, errors)


def test_word_level_and_sentences_from_silences():
    tok = load_text_tokenizer()
    words = (
        moshi.AlignedWord("one", 0.40, 0.6),
        moshi.AlignedWord("two", 0.70, 0.9),
        moshi.AlignedWord("three", 2.0, 2.3),
    )
    sentences = moshi._pieces(words, tok, LayoutConfig(sentence_gap_s=0.5))  # 1.1 s of silence before "three"
    assert [(t, s) for t, s in sentences] == [(tok.encode("one two"), 0.40), (tok.encode("three"), 2.0)]
    merged = moshi._pieces(words, tok, LayoutConfig(sentence_gap_s=1.5))  # 1.1 s is no break
    assert len(merged) == 1
    cfg = LayoutConfig(sample_frames=40, alignment="word")
    pieces = moshi._pieces(words, tok, cfg)
    assert [t for t, _ in pieces] == [tok.encode("one"), tok.encode(" two"), tok.encode(" three")]
    plan, text = moshi.window_plan(pieces, 0, 39, cfg)
    placed = [s for s in plan.segments if s.kind == SegmentKind.WORD]
    # floor(start * 12.5) + 1 - lead: "one" 5 + 1 - 2 = 4; "two" 8 + 1 - 2 = 7 (or after "one"'s tokens);
    # "three" 25 + 1 - 2 = 24
    assert [s.text_start for s in placed] == [4, max(7, 4 + len(pieces[0][0])), 24]
    assert text == [t for p, _ in pieces for t in p]


def test_parse_errors_name_the_file(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"alignments": [["w", "bad", "SPEAKER_MAIN"]]}))
    (tmp_path / "list.jsonl").write_text(json.dumps({"path": "x.wav", "duration": 3.0}) + "\n" + "{nope\n")
    with pytest.raises(CorpusError, match=r"x.json: alignment 0 is not \[word, \[start, end\], speaker\]"):
        moshi.read_recordings(f"moshi:{tmp_path / 'list.jsonl'}")


def test_lora_fine_tune_on_the_dataset_lowers_the_loss(dataset, tmp_path):
    """The issue's command: --config=finetune on a base's HF directory and the prepared corpus."""
    _, out, _ = dataset
    small = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16, intermediate_size=64,
                        max_position_embeddings=256, depformer=DepformerConfig(dim=32, num_layers=1, num_heads=2),
                        tokens=RELEASE_TOKENS)  # fmt: skip  # the real text vocabulary: the corpus's Qwen ids
    FLMAudio.init(small, seed=0).save_pretrained(tmp_path / "base")
    from flmjax.cli.train import main

    run = tmp_path / "run"
    argv = [
        "--config=finetune", f"--init.params_from={tmp_path / 'base'}", f"--corpus={out}", "--lora.rank=8",
        "--lora.targets", "attention", "mlp", "depformer", "audio_tables",
        "--steps=24", f"--run_dir={run}", f"--run_root={tmp_path}",
        # CPU-sized: fp32, the test's 40-frame windows, 2 sequences a step, a fast constant rate
        "--numerics.dtype=float32", "--numerics.remat=none", "--data.layout_config.sample_frames=40",
        "--data.global_batch=2", "--optimizer.peak_lr=2e-2", "--optimizer.end_lr=2e-2", "--log.progress=false",
        "--log.tensorboard=false",
    ]  # fmt: skip
    previous = jax.config.jax_compilation_cache_dir
    try:
        assert main(argv) == 0
    finally:
        jax.config.update("jax_compilation_cache_dir", previous)
    losses = [json.loads(line)["loss"] for line in open(run / "metrics.jsonl")]
    assert len(losses) == 24 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4]), losses


def test_the_cache_folder_follows_the_window_and_the_alignment(tmp_path):
    """A changed window or alignment prepares afresh: the records are cut and planned by them."""
    from flmjax.data.config import CorpusSpec, get_data_config
    from flmjax.data.prepare import corpus_roots

    base = get_data_config("ft2", cache_dir=str(tmp_path))
    spec = CorpusSpec(name="mine", manifest=f"moshi:{tmp_path / 'train.jsonl'}")

    def root(**layout):
        config = base.replace(corpora=(spec,), layout_config=dataclasses.replace(base.layout_config, **layout))
        return corpus_roots(config)[0]

    assert root(sample_frames=40) == root(sample_frames=40)
    assert root(sample_frames=40) != root(sample_frames=80)
    assert root(alignment="word") != root(alignment="contiguous")
    assert root(sentence_gap_s=0.5) != root(sentence_gap_s=1.5)


def test_recordings_take_the_configured_tokenizer(dataset, tmp_path):
    from flmjax.data.text_tokenizer import named_tokenizer
    from flmjax.tokens import WORD_TOKENS

    root, _, _ = dataset
    out = tmp_path / "words"
    opts = PrepareOptions(layout_config=WINDOW, tokenizer="words")
    prepare_corpus(f"moshi:{root / 'train.jsonl'}", out, opts, workers=1, progress=False)
    corpus = records.PreparedCorpus(out)
    words, _ = named_tokenizer("words")
    meta, arrays = next(corpus[i] for i in range(len(corpus)) if corpus[i][0]["id"] == "data/a.wav#0")
    turns, plan, _ = records.dialog_from_record(meta, arrays, 0)
    model = next(t for t in turns if t["role"] == "model")
    want = list(words.encode("hello there how are you"))
    assert list(model["text_tokens"][: len(want)]) == want
    assert max(model["text_tokens"]) < WORD_TOKENS.text_vocab_size
