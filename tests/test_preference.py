"""Preference pairs: the rejected side differs from the chosen (the fine-tuning layout) only in the
model's timing, with BayLing-Duplex's delays; hand-built cases frame by frame, then seeded properties."""

import numpy as np
import pytest

from flmjax.config import ConfigError
from flmjax.data.layouts import LayoutConfig, LayoutError, frames, plan_dialog
from flmjax.data.layouts.preference import PairKind, PreferenceConfig, _candidates, plan_pair, render_pair
from tests.test_layouts import LISTEN, SILENCE, SPEAK, Expected, W, long_dialog, turn

FREE = "response_tts_free"


def _pair(dialog, pref, layout_cfg=LayoutConfig(interruption_prob=0.0), seed=0, listen_codes=None):
    rng = np.random.default_rng(seed)
    plan = plan_dialog(dialog, FREE, rng, cfg=layout_cfg)
    pair = plan_pair(plan, dialog, rng, pref)
    return plan, pair, render_pair(pair, dialog, SILENCE, cfg=layout_cfg, listen_codes=listen_codes)


def test_turn_taking_negative_replies_after_the_drawn_gap_frame_by_frame():
    dialog = [turn("user", 3, [20], 0, 100), turn("model", 4, [30, 31, 32], 5, 200)]
    _, pair, samples = _pair(dialog, PreferenceConfig(interruption_ratio=0.0, late_reply_s=(2.0, 2.0)))
    assert pair.kind == samples.kind == PairKind.TURN_TAKING
    gap = 25  # 2 s
    total = 4 + gap + 2 + 4  # the rejected reply's speech ends last
    for side, start in (("chosen", 4), ("rejected", 4 + gap)):
        want = Expected(total, sft=True)
        want.audio(LISTEN, 1, dialog[0]["codes"])  # the same user audio on both sides
        for frame, token in zip(range(start, start + 3), (30, 31, 32)):
            want.text(frame, token)
        want.audio(SPEAK, start + 2, dialog[1]["codes"])
        want.weights[1:, 0] = 1.0
        want.weights[1:, SPEAK] = 1.0  # the silence before and after the reply carries loss on both
        want.check(getattr(samples, side))


def test_interruption_negative_keeps_speaking_for_the_drawn_delay_frame_by_frame():
    # The user barges in at frame 16 (10 frames into the model's 80-frame speech, which starts at 6).
    text = list(range(30, 42))
    dialog = [turn("user", 3, [20], 0, 100), turn("model", 80, text, 3, 200), turn("user", 8, [21], 13, 300),
              turn("model", 2, [33], 30, 400)]  # fmt: skip
    _, pair, samples = _pair(dialog, PreferenceConfig(interruption_ratio=1.0, late_stop_s=(3.0, 3.0)))
    assert pair.kind == PairKind.INTERRUPTION
    onset, late = 16, frames(3.0)  # 38 frames
    total = onset + late  # past the interrupting turn's end (24); the last model turn is left out
    for side, stop in (("chosen", onset + 6), ("rejected", onset + late)):
        want = Expected(total, sft=True)
        want.audio(LISTEN, 1, dialog[0]["codes"])
        want.audio(LISTEN, onset, dialog[2]["codes"])
        for frame, token in zip(range(4, 16), text):
            want.text(frame, token)  # all 12 tokens precede both stops
        want.audio(SPEAK, 6, dialog[1]["codes"][:, : stop - 6])
        want.weights[1:, 0] = 1.0
        want.weights[1:, SPEAK] = 1.0
        want.check(getattr(samples, side))
    assert samples.chosen.segments[1].cut_frame == 22 and samples.rejected.segments[1].cut_frame == 54
    assert [s.kind for s in samples.rejected.segments] == ["user", "response", "user"]


def _text_tokens(sample):
    return [int(t) for t in sample.tokens[:, 0] if t != W]


@pytest.mark.parametrize("ratio", [0.0, 1.0, 0.5])
def test_pairs_differ_only_in_timing_with_the_specified_delays(ratio):
    pref = PreferenceConfig(interruption_ratio=ratio)
    kinds = []
    for seed in range(120):
        dialog = long_dialog(np.random.default_rng(seed))
        try:
            plan, pair, samples = _pair(dialog, pref, LayoutConfig(), seed)
        except LayoutError:
            continue
        available = _candidates(plan.segments)
        drawn_kind_missing = not available[PairKind.INTERRUPTION if ratio == 1.0 else PairKind.TURN_TAKING]
        if ratio in (0.0, 1.0):  # the other kind only where a dialog lacks the drawn one
            assert (pair.kind == PairKind.INTERRUPTION) == (ratio == 1.0) or drawn_kind_missing
        elif all(available.values()):
            kinds.append(pair.kind)
        chosen, rejected = samples.chosen, samples.rejected
        assert chosen.tokens.shape == rejected.tokens.shape
        np.testing.assert_array_equal(chosen.tokens[:, LISTEN], rejected.tokens[:, LISTEN])  # same user stream
        j = pair.perturbed
        good, bad = pair.chosen.segments[j], pair.rejected.segments[j]
        # Every other segment is the same, and the chosen side is the fine-tuning plan's.
        others = [k for k in range(len(pair.chosen.segments)) if k != j]
        assert [pair.chosen.segments[k] for k in others] == [pair.rejected.segments[k] for k in others]
        assert pair.chosen.segments == plan.segments[: len(pair.chosen.segments)]
        full = list(dialog[good.source]["text_tokens"])
        codes = dialog[good.source]["codes"]
        if pair.kind == PairKind.TURN_TAKING:
            gap = bad.text_start - pair.chosen.segments[j - 1].end
            assert frames(2.0) <= gap <= frames(5.0) and good.text_start == pair.chosen.segments[j - 1].end
            assert _text_tokens(chosen) == _text_tokens(rejected)  # the same response tokens, in order
            assert bad.audio_start - bad.text_start == good.audio_start - good.text_start
            n = good.audio_end - good.audio_start
            np.testing.assert_array_equal(rejected.tokens[bad.audio_start : bad.audio_end, SPEAK], codes[:, :n].T)
        else:
            onset = pair.chosen.segments[j + 1].audio_start
            assert good.cut_frame == onset + 6  # the 0.5 s reaction delay
            natural_end = bad.audio_start + codes.shape[1]
            stop = bad.audio_end
            assert frames(3.0) <= stop - onset <= frames(5.0) or (stop == natural_end and bad.cut_frame is None)
            assert bad.text_start == good.text_start and bad.audio_start == good.audio_start
            said, longer = _text_tokens(chosen), _text_tokens(rejected)
            assert longer[: len(said)] == said and bad.text == tuple(full[: len(bad.text)])
            np.testing.assert_array_equal(
                rejected.tokens[bad.audio_start : stop, SPEAK], codes[:, : stop - bad.audio_start].T
            )
        # The speak channel holds silence wherever the rejected reply does not speak.
        quiet = np.ones(len(rejected.tokens), bool)
        for seg in pair.rejected.segments:
            if seg.kind == "response":
                quiet[seg.audio_start : seg.audio_end] = False
        quiet[0] = False
        f = np.flatnonzero(quiet)
        np.testing.assert_array_equal(rejected.tokens[f][:, SPEAK], SILENCE[:, f % 2].T)
    if ratio == 0.5:  # 1:1 among the dialogs that offer both kinds (76 of these 120)
        assert len(kinds) > 60 and abs(np.mean([k == PairKind.INTERRUPTION for k in kinds]) - 0.5) < 0.15


def test_listen_after_the_pair_is_silence_and_a_rendered_track_is_kept_before():
    dialog = [turn("user", 3, [20], 0, 100), turn("model", 4, [30, 31, 32], 5, 200), turn("user", 4, [21], 12, 300),
              turn("model", 3, [33], 20, 400)]  # fmt: skip
    pref = PreferenceConfig(interruption_ratio=0.0, late_reply_s=(3.0, 3.0))
    rng = np.random.default_rng(0)
    plan = plan_dialog(dialog, FREE, rng, cfg=LayoutConfig(interruption_prob=0.0))
    track = np.arange(8 * 60, dtype=np.int32).reshape(8, 60) % 2048
    while (pair := plan_pair(plan, dialog, rng, pref)).perturbed != 1:
        pass  # the first reply: the second user turn is left out
    samples = render_pair(pair, dialog, SILENCE, listen_codes=track)
    second_user = plan.segments[2].audio_start
    assert pair.listen_end == second_user
    for side in (samples.chosen, samples.rejected):
        np.testing.assert_array_equal(side.tokens[1:second_user, LISTEN], track[:, : second_user - 1].T)
        f = np.arange(second_user, len(side.tokens))
        np.testing.assert_array_equal(side.tokens[f][:, LISTEN], SILENCE[:, f % 2].T)


def test_config_checks_and_a_dialog_without_a_reply_to_perturb():
    with pytest.raises(ConfigError, match="interruption_ratio"):
        PreferenceConfig(interruption_ratio=1.5)
    with pytest.raises(ConfigError, match="late_reply_s"):
        PreferenceConfig(late_reply_s=(5.0, 2.0))
    lonely = [turn("model", 4, [30], 0, 200)]
    with pytest.raises(LayoutError, match="no reply to perturb"):
        _pair(lonely, PreferenceConfig())
