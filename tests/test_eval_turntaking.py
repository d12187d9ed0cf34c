"""Turn-taking statistics: hand-computed timelines, and espeak-ng speech placed at known times measured
through Silero VAD (counts exact, seconds within the VAD's boundary error)."""

import numpy as np
import pytest

from flmjax.eval import turntaking, vad
from tests.eval_helpers import place, speech


def test_hand_computed_timeline():
    user = [(1.0, 2.0), (2.1, 3.0), (3.5, 4.0), (6.0, 6.3), (8.0, 9.5)]  # 2.0-2.1: < 200 ms, filled
    model = [(4.6, 7.0), (7.5, 8.4)]
    assert turntaking.ipus(user) == [(1.0, 3.0), (3.5, 4.0), (6.0, 6.3), (8.0, 9.5)]
    out = turntaking.timing(user, model, duration_s=12.0)
    ev = out["events"]
    # 0-1 s (start) and 9.5-12 s (end) are ignored; 3.0-3.5 user pause; 4.0-4.6 gap user->model;
    # 6.0-6.3 overlap (a backchannel); 7.0-7.5 model pause; 8.0-8.4 overlap (the user barges in).
    assert [(e["start"], e["end"], e["speaker"]) for e in ev["pause"]] == [(3.0, 3.5, "user"), (7.0, 7.5, "model")]
    assert [(e["start"], e["end"], e["from"], e["to"]) for e in ev["gap"]] == [(4.0, 4.6, "user", "model")]
    assert [(e["start"], e["end"]) for e in ev["overlap"]] == [(6.0, 6.3), (8.0, 8.4)]
    pm = out["per_minute"]  # 12 s = 0.2 min
    assert pm["pause"] == {"count": 10.0, "seconds": pytest.approx(5.0)}
    assert pm["gap"] == {"count": 5.0, "seconds": pytest.approx(3.0)}
    assert pm["overlap"] == {"count": 10.0, "seconds": pytest.approx(3.5)}
    other = turntaking.per_minute({"pause": [], "gap": [{"start": 0, "end": 1.2}], "overlap": []}, 12.0)
    assert turntaking.deviation(pm, other) == pytest.approx({"pause": 5.0, "gap": 3.0, "overlap": 3.5})


def test_a_silence_after_an_overlap_is_a_pause_of_whoever_continues():
    # Both speak, both stop, only the model goes on: the model paused.
    ev = turntaking.events([(0.0, 2.0), (5.0, 6.0)], [(1.0, 2.0), (2.5, 3.0)])
    assert [(e["start"], e["speaker"]) for e in ev["pause"]] == [(2.0, "model")]
    assert [(e["start"], e["from"], e["to"]) for e in ev["gap"]] == [(3.0, "model", "user")]


def test_frames_to_segments():
    assert turntaking.frames_to_segments(np.array([0, 1, 1, 0, 1], bool), 0.08) == [(0.08, 0.24), (0.32, 0.4)]


# Placed speech, each clip placed relative to the previous ones' measured lengths (no punctuation inside
# a clip: espeak-ng pauses at commas).
ONSET_ERROR_S = 0.06  # Silero finds onsets within ~40 ms here (32 ms windows, 30 ms padding) ...
OFFSET_ERROR_S = 0.15  # ... and ends up to ~130 ms late (100 ms of silence to close a segment, padding)


def test_placed_speech_counts_exact_and_seconds_within_the_vad_error():
    def clip(text, voice):
        return speech(text, voice)

    u1, u2, yeah, u3 = (clip(t, "en-us") for t in ("hello how are you doing today", "I have a question for you",
                                                     "yeah", "tell me more about it"))  # fmt: skip
    m1, m2, m3 = (clip(t, "en-gb+f3") for t in ("I am fine thank you what is your question for me",
                                                  "it is about the weather", "sure thing"))  # fmt: skip
    sec = 1 / 16_000
    t_u1 = 0.5
    t_u2 = t_u1 + len(u1) * sec + 0.7  # user pause 0.7 s
    t_m1 = t_u2 + len(u2) * sec + 0.8  # gap user -> model 0.8 s
    t_yeah = t_m1 + 1.0  # a backchannel inside the model's speech: overlap
    t_m2 = t_m1 + len(m1) * sec + 0.7  # model pause 0.7 s
    t_u3 = t_m2 + len(m2) * sec + 0.6  # gap model -> user 0.6 s
    t_m3 = t_u3 + len(u3) * sec - 0.5  # the model starts 0.5 s before the user ends: overlap
    duration = t_m3 + len(m3) * sec + 1.0
    users = [(t_u1, u1), (t_u2, u2), (t_yeah, yeah), (t_u3, u3)]
    models = [(t_m1, m1), (t_m2, m2), (t_m3, m3)]
    truth = turntaking.timing([(t, t + len(c) * sec) for t, c in users], [(t, t + len(c) * sec) for t, c in models],
                              duration)  # fmt: skip
    assert {k: len(v) for k, v in truth["events"].items()} == {"pause": 2, "gap": 2, "overlap": 2}

    u, m = vad.speech_seconds(np.stack([place(duration, users), place(duration, models)]), 16_000)
    measured = turntaking.timing(u, m, duration)
    assert {k: len(v) for k, v in measured["events"].items()} == {"pause": 2, "gap": 2, "overlap": 2}
    for channel in turntaking.CHANNELS:
        assert len(measured["ipus"][channel]) == len(truth["ipus"][channel])
        for got, want in zip(measured["ipus"][channel], truth["ipus"][channel]):
            assert abs(got[0] - want[0]) < ONSET_ERROR_S and -ONSET_ERROR_S < got[1] - want[1] < OFFSET_ERROR_S
    for kind in turntaking.KINDS:  # an event's length is off by at most one onset and one offset error
        for got, want in zip(measured["events"][kind], truth["events"][kind]):
            assert abs((got["end"] - got["start"]) - (want["end"] - want["start"])) < ONSET_ERROR_S + OFFSET_ERROR_S
