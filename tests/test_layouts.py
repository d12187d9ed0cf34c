"""Stream layouts: hand-built samples asserted frame by frame, plus seeded properties of the random ones."""

import dataclasses
import json

import numpy as np
import pytest

from flmjax.config import ConfigError
from flmjax.data.layouts import (
    AlignedPair,
    LayoutConfig,
    LayoutError,
    SampleTooLongError,
    Segment,
    TranscriptTooLongError,
    WordTiming,
    assemble_post_training,
    delay_sample,
    layout_asr,
    layout_asr_response_tts,
    layout_response_tts,
    layout_response_tts_free,
    layout_tts,
    layout_word_level,
    plan_dialog,
    render_dialog,
)
from flmjax.data.loss_classes import LossClass, loss_classes
from flmjax.tokens import RELEASE_TOKENS as IDS
from flmjax.tokens import delay_streams

W, U, P = IDS.text_wait, IDS.unused_audio_channel, IDS.audio_pad
ASR, ANS = IDS.text_asr, IDS.text_answer
SPEAK, LISTEN = IDS.speak_streams, IDS.listen_streams
SILENCE = (1000 + 10 * np.arange(8)[:, None] + np.arange(2)[None, :]).astype(np.int32)  # [8, 2]


def codes(frames: int, base: int) -> np.ndarray:
    """Distinct, recognisable codes: codebook c, frame f -> base + 20 c + f."""
    return (base + 20 * np.arange(8)[:, None] + np.arange(frames)[None, :]).astype(np.int32)


def silence(frame: int) -> np.ndarray:
    return SILENCE[:, frame % 2]


def turn(role, frames, tokens, start, base):
    return {
        "role": role,
        "codes": codes(frames, base),
        "text_tokens": tokens,
        "start_frame": start,
        "end_frame": start + frames,
    }


class Expected:
    """An expected sample built frame by frame: tokens start as post-training fills (W / U), no weight."""

    def __init__(self, frames: int, sft: bool = False):
        self.tokens = np.full((frames, 17), U, np.int32)
        self.tokens[:, 0] = W
        self.weights = np.zeros((frames, 17), np.float32)
        if sft:
            for f in range(frames):
                self.tokens[f, SPEAK] = self.tokens[f, LISTEN] = silence(f)
        self.tokens[0, SPEAK] = P

    def text(self, frame, token):
        self.tokens[frame, 0] = token

    def audio(self, streams, first, source):
        for k in range(source.shape[1]):
            self.tokens[first + k, streams] = source[:, k]

    def check(self, sample):
        np.testing.assert_array_equal(sample.tokens, self.tokens)
        np.testing.assert_array_equal(sample.weights, self.weights)


def test_tts_speech_starts_two_frames_after_its_text_and_wait_fills_until_it_ends():
    speech = codes(5, 100)
    sample = layout_tts(speech, [10, 11, 12])
    want = Expected(8)
    for frame, token in zip((1, 2, 3), (10, 11, 12)):
        want.text(frame, token)  # frames 4..7 stay <wait> until the speech (frames 3..7) ends
    want.audio(SPEAK, 3, speech)
    want.weights[1:, 0] = 1.0
    want.weights[3:, SPEAK] = 1.0
    want.check(sample)
    assert sample.segments == [
        Segment(
            kind="tts",
            text=(10, 11, 12),
            text_start=1,
            text_end=4,
            audio_start=3,
            audio_end=8,
            channel="speak",
            source=0,
        )
    ]
    assert Segment.from_json(json.loads(json.dumps(sample.segments[0].to_json()))) == sample.segments[0]
    classes = loss_classes(sample.tokens, sample.weights)
    assert list(classes[:, 0]) == [0, 3, 3, 3, 4, 4, 4, 4]
    assert list(classes[:, 1]) == [0, 0, 0, 1, 1, 1, 1, 1]
    assert (classes[3:, 2:9] == LossClass.ACOUSTIC).all() and (classes[:3, 2:9] == 0).all()
    assert (classes[:, LISTEN] == LossClass.NONE).all()


@pytest.mark.parametrize("lead", [0, 1, 3])
def test_tts_lead_is_a_config_value(lead):
    sample = layout_tts(codes(4, 0), [10, 11], cfg=LayoutConfig(lead_frames=lead))
    seg = sample.segments[0]
    assert seg.audio_start - seg.text_start == lead
    np.testing.assert_array_equal(sample.tokens[1 + lead, SPEAK], codes(4, 0)[:, 0])
    assert sample.tokens.shape[0] == 1 + lead + 4


def test_tts_transcript_longer_than_its_speech_is_an_error():
    layout_tts(codes(5, 0), list(range(10, 17)))  # 7 tokens = 5 frames + lead 2: fits, no <wait> after
    with pytest.raises(TranscriptTooLongError, match="8 text tokens exceed the 7 frames"):
        layout_tts(codes(5, 0), list(range(10, 18)))


def test_asr_text_starts_when_the_listened_audio_ends():
    speech = codes(4, 200)
    sample = layout_asr(speech, [10, 11])
    want = Expected(7)
    want.audio(LISTEN, 1, speech)  # frames 1..4 heard, text <wait>
    want.text(5, 10)
    want.text(6, 11)
    want.weights[1:, 0] = 1.0  # <wait> while listening and the sentence; speak empty, listen never
    want.check(sample)
    classes = loss_classes(sample.tokens, sample.weights)
    assert list(classes[:, 0]) == [0, 4, 4, 4, 4, 3, 3] and (classes[:, 1:] == 0).all()


def test_word_level_places_each_word_at_its_time_with_wait_padding():
    speech = codes(20, 300)
    words = [WordTiming([10, 11], 0.02, 0.45), WordTiming([12], 0.1, 0.5), WordTiming([13], 1.0, 1.21)]
    tts = layout_word_level(speech, words, "tts")
    want = Expected(23)
    for frame, token in ((1, 10), (2, 11), (3, 12), (13, 13)):  # word 1 (frame 1) follows word 0's tokens
        want.text(frame, token)
    want.audio(SPEAK, 3, speech)
    want.weights[1:, 0] = 1.0
    want.weights[3:, SPEAK] = 1.0
    want.check(tts)
    asr = layout_word_level(speech, words, "asr")  # a word's tokens come once it has been heard (ceil of end)
    want = Expected(21)
    for frame, token in ((7, 10), (8, 11), (9, 12), (17, 13)):
        want.text(frame, token)
    want.audio(LISTEN, 1, speech)
    want.weights[1:, 0] = 1.0
    want.check(asr)
    with pytest.raises(LayoutError, match="out of order"):
        layout_word_level(speech, words[::-1], "tts")


def pairs_for(seed: int, count: int) -> list[AlignedPair]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(20, 120))
        out.append(
            AlignedPair(
                rng.integers(0, 2048, (8, n), dtype=np.int32),
                rng.integers(0, 150000, int(rng.integers(1, n // 3))).tolist(),
            )
        )
    return out


def test_post_training_packs_tts_and_asr_pairs_separated_by_random_silence():
    pairs = pairs_for(0, 200)
    cfg = LayoutConfig()
    sample, used = assemble_post_training(pairs, np.random.default_rng(1), cfg=cfg)
    tokens, weights, segs = sample.tokens, sample.weights, sample.segments
    assert tokens.shape == (8192, 17) and weights.shape == (8192, 17) and 40 < used < 200
    assert [s.source for s in segs] == list(range(used))
    end = 1
    for seg in segs:
        pair = pairs[seg.source]
        start = min(seg.text_start, seg.audio_start)
        assert 2 <= start - end <= 25  # 0.2..2.0 s of silence before every pair
        np.testing.assert_array_equal(tokens[end:start, 0], W)
        assert (tokens[end:start, 1:] == U).all() and (weights[end:start, 1:] == 0).all()
        n = pair.codes.shape[1]
        text_end = seg.text_start + len(pair.text_tokens)
        np.testing.assert_array_equal(tokens[seg.text_start : text_end, 0], pair.text_tokens)
        if seg.kind == "tts":
            assert seg.audio_start == seg.text_start + 2
            np.testing.assert_array_equal(tokens[seg.audio_start : seg.audio_end, SPEAK], pair.codes.T)
            np.testing.assert_array_equal(tokens[text_end : seg.audio_end, 0], W)
            assert (weights[seg.audio_start : seg.audio_end, SPEAK] == 1).all()
            assert (tokens[start : seg.audio_end, LISTEN] == U).all()
            end = seg.audio_end
        else:
            assert seg.kind == "asr" and seg.text_start == seg.audio_end == seg.audio_start + n
            np.testing.assert_array_equal(tokens[seg.audio_start : seg.audio_end, LISTEN], pair.codes.T)
            np.testing.assert_array_equal(tokens[seg.audio_start : seg.audio_end, 0], W)
            assert (tokens[start:text_end, SPEAK] == U).all() and (weights[start:text_end, SPEAK] == 0).all()
            end = text_end
        assert (weights[start:end, 0] == 1).all()
    # The pair that did not fit would have ended past 8192; padding after the content carries no weight.
    assert end > 8192 - 25 - 120 - 40
    assert (weights[end:] == 0).all() and (tokens[end:, 0] == W).all() and (tokens[end:, 1:] == U).all()
    assert (weights[0] == 0).all() and (tokens[0, :9] == IDS.initial_column[:9]).all()
    assert (weights[:, LISTEN] == 0).all()
    kinds = [s.kind for s in assemble_post_training(pairs_for(2, 2000), np.random.default_rng(3))[0].segments]
    assert abs(kinds.count("tts") / len(kinds) - 0.5) < 0.12  # 1:1 mix


def test_post_training_is_deterministic_per_seed_and_stops_at_the_first_pair_that_does_not_fit():
    pairs = pairs_for(5, 100)
    a, used_a = assemble_post_training(pairs, np.random.default_rng(7))
    b, used_b = assemble_post_training(pairs, np.random.default_rng(7))
    c, _ = assemble_post_training(pairs, np.random.default_rng(8))
    assert used_a == used_b and a.segments == b.segments
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert not np.array_equal(a.tokens, c.tokens)
    cfg = LayoutConfig(sample_frames=300, gap_s=(0.4, 0.4), tts_ratio=1.0)
    few = [AlignedPair(codes(100, 0), [10]) for _ in range(5)]  # each: gap 5 + lead 2 + 100 frames
    sample, used = assemble_post_training(few, np.random.default_rng(0), cfg=cfg)
    assert used == 2 and [s.audio_end for s in sample.segments] == [108, 215]
    with pytest.raises(SampleTooLongError):
        assemble_post_training([AlignedPair(codes(400, 0), [10])], np.random.default_rng(0), cfg=cfg)


def test_post_training_word_level_alignment():
    pair = AlignedPair(codes(20, 0), [10, 11, 12], [WordTiming([10, 11], 0.0, 0.4), WordTiming([12], 0.9, 1.5)])
    cfg = LayoutConfig(alignment="word", tts_ratio=1.0, gap_s=(0.4, 0.4))
    sample, used = assemble_post_training([pair], np.random.default_rng(0), cfg=cfg)
    assert used == 1 and sample.layout == "post_training_word"
    assert [s.kind for s in sample.segments] == ["tts", "word", "word"]
    assert [s.text_start for s in sample.segments[1:]] == [6, 6 + 11]  # start 6; 0.9 s -> frame 11
    with pytest.raises(LayoutError, match="needs word timings"):
        assemble_post_training([AlignedPair(codes(20, 0), [10])], np.random.default_rng(0), cfg=cfg)


def two_exchanges():
    return [
        turn("user", 3, [20, 21], 0, 100),
        turn("model", 4, [30, 31, 32], 5, 200),
        turn("user", 2, [22], 12, 300),
        turn("model", 3, [33], 15, 400),
    ]


def test_asr_response_tts_span_is_asr_transcript_answer_then_the_response():
    dialog = two_exchanges()
    sample = layout_asr_response_tts(dialog, SILENCE)
    want = Expected(27, sft=True)
    want.audio(LISTEN, 1, dialog[0]["codes"])
    for frame, token in zip(range(4, 11), (ASR, 20, 21, ANS, 30, 31, 32)):
        want.text(frame, token)
    want.audio(SPEAK, 10, dialog[1]["codes"])  # speech 2 frames after the response text, silent before
    want.audio(LISTEN, 17, dialog[2]["codes"])  # the corpus' 3-frame gap after the model's speech (ends 14)
    for frame, token in zip(range(19, 23), (ASR, 22, ANS, 33)):
        want.text(frame, token)
    want.audio(SPEAK, 24, dialog[3]["codes"])
    want.weights[1:, 0] = 1.0
    want.weights[1:, SPEAK] = 1.0  # speech and the silence the model keeps while listening
    want.check(sample)
    assert [s.kind for s in sample.segments] == ["user", "asr", "response", "user", "asr", "response"]
    assert sample.layout == "asr_response_tts"


def test_response_tts_response_starts_when_the_user_turn_ends():
    dialog = two_exchanges()
    sample = layout_response_tts(dialog, SILENCE)
    want = Expected(20, sft=True)
    want.audio(LISTEN, 1, dialog[0]["codes"])
    for frame, token in zip(range(4, 7), (30, 31, 32)):
        want.text(frame, token)
    want.audio(SPEAK, 6, dialog[1]["codes"])
    want.audio(LISTEN, 13, dialog[2]["codes"])
    want.text(15, 33)
    want.audio(SPEAK, 17, dialog[3]["codes"])
    want.weights[1:, 0] = 1.0
    want.weights[1:, SPEAK] = 1.0
    want.check(sample)


def overlapping_dialog(user2_frames: int):
    # The corpus has user 2 start 8 frames before the model's first turn ends.
    return [
        turn("user", 3, [20], 0, 100),
        turn("model", 10, list(range(30, 42)), 3, 200),
        turn("user", user2_frames, [21], 5, 300),
        turn("model", 2, [33], 13, 400),
    ]


def test_interruption_cuts_text_and_speech_within_the_reaction_delay():
    dialog = overlapping_dialog(8)
    cfg = LayoutConfig(interruption_prob=0.0)  # only the corpus' own interruption
    sample = layout_response_tts_free(dialog, SILENCE, np.random.default_rng(0), cfg=cfg)
    want = Expected(20, sft=True)
    want.audio(LISTEN, 1, dialog[0]["codes"])
    for frame, token in zip(range(4, 14), range(30, 40)):
        want.text(frame, token)  # response text 4..15 is cut at frame 14 = onset 8 + 6 (0.48 s)
    want.audio(SPEAK, 6, dialog[1]["codes"][:, :8])  # speech 6..13, then silence with weight
    want.audio(LISTEN, 8, dialog[2]["codes"])  # the user's onset: 2 frames before the speech would end
    want.text(16, 33)  # the next response starts when the interrupting turn ends (frame 16)
    want.audio(SPEAK, 18, dialog[3]["codes"])
    want.weights[1:, 0] = 1.0
    want.weights[1:, SPEAK] = 1.0
    want.check(sample)
    response, user = sample.segments[1], sample.segments[2]
    assert response.cut_frame == 14 and response.text_end == 14 and response.audio_end == 14
    assert user.interrupts and user.audio_start == 8
    classes = loss_classes(sample.tokens, sample.weights)
    assert (classes[14:16, 0] == LossClass.WAIT).all() and (classes[14:18, 1] == LossClass.SEMANTIC).all()


def test_a_back_channel_shorter_than_the_reaction_delay_does_not_stop_the_model():
    dialog = overlapping_dialog(6)  # 6 frames = 0.48 s: not more than the reaction delay
    sample = layout_response_tts_free(
        dialog, SILENCE, np.random.default_rng(0), cfg=LayoutConfig(interruption_prob=0.0)
    )
    response, user, answer = sample.segments[1], sample.segments[2], sample.segments[3]
    assert response.cut_frame is None and response.audio_end == 16 and response.text_end == 16
    assert user.audio_start == 8 and not user.interrupts
    assert answer.text_start == 16  # after both the model's speech (16) and the back-channel (14)
    np.testing.assert_array_equal(sample.tokens[6:16, SPEAK], dialog[1]["codes"].T)


def test_semi_duplex_layouts_ignore_corpus_overlaps():
    sample = layout_response_tts(overlapping_dialog(8), SILENCE)
    user = sample.segments[2]
    assert user.audio_start == 16 and sample.segments[1].cut_frame is None


def long_dialog(rng):
    turns, t = [], 0
    for k in range(6):
        role = "user" if k % 2 == 0 else "model"
        n = int(rng.integers(8, 40))
        turns.append(turn(role, n, list(range(10, 10 + int(rng.integers(1, n)))), t, 100 * k))
        t += n + int(rng.integers(0, 5))
    return turns


def test_random_interruptions_are_drawn_with_their_probability_and_stop_the_model():
    cut_count = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        dialog = long_dialog(rng)
        sample = layout_response_tts_free(dialog, SILENCE, rng)
        segs = sample.segments
        cuts = [k for k, s in enumerate(segs) if s.cut_frame is not None]
        assert len(cuts) <= 1
        cut_count += len(cuts)
        for k in cuts:
            response, user, answer = segs[k], segs[k + 1], segs[k + 2]
            cut = response.cut_frame
            assert user.interrupts and user.audio_start == cut - 6
            speech_end = response.audio_start + dialog[response.source]["codes"].shape[1]
            assert response.audio_start <= user.audio_start and cut < speech_end
            np.testing.assert_array_equal(
                sample.tokens[response.audio_start : cut, SPEAK],
                dialog[response.source]["codes"][:, : cut - response.audio_start].T,
            )
            after = np.arange(cut, answer.audio_start)
            np.testing.assert_array_equal(sample.tokens[after, SPEAK], SILENCE[:, after % 2].T)
            assert (sample.weights[after][:, SPEAK] == 1).all()
            assert (sample.tokens[cut : answer.text_start, 0] == W).all()
            assert (sample.weights[cut : answer.text_start, 0] == 1).all()
            assert answer.text_start == user.audio_end
        assert (sample.weights[:, LISTEN] == 0).all()
    assert abs(cut_count / 300 - 0.7) < 0.08
    a = layout_response_tts_free(long_dialog(np.random.default_rng(1)), SILENCE, np.random.default_rng(9))
    b = layout_response_tts_free(long_dialog(np.random.default_rng(1)), SILENCE, np.random.default_rng(9))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.segments == b.segments


def test_dialog_padding_truncation_and_a_rendered_listen_track():
    dialog = two_exchanges()
    padded = layout_response_tts(dialog, SILENCE, cfg=LayoutConfig(sample_frames=32, pad_dialogs=True))
    assert padded.tokens.shape == (32, 17)
    assert (
        (padded.weights[20:] == 0).all() and (padded.tokens[20:, 0] == W).all() and (padded.tokens[20:, 1:] == U).all()
    )
    np.testing.assert_array_equal(padded.tokens[:20], layout_response_tts(dialog, SILENCE).tokens)
    short = layout_response_tts(dialog, SILENCE, cfg=LayoutConfig(sample_frames=12))
    assert short.tokens.shape == (12, 17)
    assert [s.kind for s in short.segments] == ["user", "response"] and short.segments[1].audio_end == 10
    plan = plan_dialog(dialog, "response_tts")
    track = codes(plan.num_frames - 1, 1500)
    sample = render_dialog(plan, dialog, SILENCE, listen_codes=track)
    np.testing.assert_array_equal(sample.tokens[1:, LISTEN], track.T)
    with pytest.raises(LayoutError, match="listen_codes has 5 frames"):
        render_dialog(plan, dialog, SILENCE, listen_codes=track[:, :5])


def test_delay_sample_shifts_weights_with_zero_fill():
    sample = layout_tts(codes(5, 100), [10, 11, 12])
    tokens, weights = delay_sample(sample)
    np.testing.assert_array_equal(tokens, delay_streams(sample.tokens))
    assert weights.shape == (9, 17) and (weights[0, 2:9] == 0).all() and (weights[8, :2] == 0).all()
    np.testing.assert_array_equal(weights[1:, 2:9], sample.weights[:, 2:9])
    raw, delayed = loss_classes(sample.tokens, sample.weights), loss_classes(tokens, weights)
    # Every weighted position keeps its class (the extra column is all NONE).
    assert np.bincount(raw.ravel(), minlength=5)[1:].tolist() == np.bincount(delayed.ravel(), minlength=5)[1:].tolist()


def test_bad_input_gets_a_clear_error():
    with pytest.raises(LayoutError, match=r"shape \[8, frames>=1\]"):
        layout_tts(np.zeros((4, 5), np.int32), [10])
    with pytest.raises(LayoutError, match="must lie in"):
        layout_tts(np.full((8, 5), 2048, np.int32), [10])
    with pytest.raises(LayoutError, match="empty transcript"):
        layout_asr(codes(5, 0), [])
    bad = two_exchanges()
    bad[1] = dict(bad[1], end_frame=99)
    with pytest.raises(LayoutError, match="turn 1: end_frame - start_frame"):
        layout_response_tts(bad, SILENCE)
    with pytest.raises(TranscriptTooLongError, match="turn 1"):
        layout_response_tts([turn("user", 3, [20], 0, 0), turn("model", 2, [1, 2, 3, 4, 5], 3, 0)], SILENCE)
    with pytest.raises(LayoutError, match="unknown dialog layout"):
        plan_dialog(two_exchanges(), "duplex")
    with pytest.raises(LayoutError, match="needs a random generator"):
        plan_dialog(two_exchanges(), "response_tts_free")
    with pytest.raises(ConfigError, match="tts_ratio"):
        LayoutConfig(tts_ratio=1.5)
    with pytest.raises(ConfigError, match="alignment"):
        dataclasses.replace(LayoutConfig(), alignment="phoneme")
