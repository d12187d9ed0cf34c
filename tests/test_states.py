"""BayLing-Duplex's dialogue-state tokens: hand-built dialogs frame by frame (onset, [PAD] after the text,
[EPAD] at the speech's end, [SILENCE] elsewhere, interruption cuts), their loss terms, the vocabulary
they extend, and a monologue that never shows them."""

import math

import numpy as np
import pytest

from flmjax.config import ConfigError, ModelConfig, get_model_config
from flmjax.data.layouts import (
    LayoutConfig,
    LayoutError,
    layout_asr_response_tts,
    layout_response_tts,
    layout_response_tts_free,
)
from flmjax.data.loss_classes import LossClass, loss_classes
from flmjax.infer.text import TextStream
from flmjax.tokens import RELEASE_TOKENS, TokenIds
from flmjax.train.loss import LossCoefficients, flm_loss
from tests.test_layouts import LISTEN, SILENCE, SPEAK, W, overlapping_dialog, two_exchanges

IDS = RELEASE_TOKENS.with_state_tokens()
assert IDS.state_tokens is not None  # with_state_tokens() appends them
S, A, P, E = IDS.state_tokens
STATES = LayoutConfig(text_states="bayling", interruption_prob=0.0)


def _text(sample):
    return sample.tokens[:, 0].tolist()


def test_state_ids_follow_the_release_vocabulary_and_the_export_records_them():
    assert (S, A, P, E) == (151668, 151669, 151670, 151671) and IDS.text_vocab_size == 151672
    assert RELEASE_TOKENS.state_tokens is None and IDS.with_state_tokens() == IDS
    model = get_model_config("flm7b_state")
    assert model.vocab_size == 151672 and model.tokens == IDS
    info = model.to_hf_dict()["mm_token_info"]
    assert info["text_silence_token_id"] == S and info["text_epad_token_id"] == E
    assert ModelConfig.from_hf_dict(model.to_hf_dict()).tokens == IDS
    assert ModelConfig.from_hf_dict(get_model_config("flm7b").to_hf_dict()).tokens.state_tokens is None
    tiny = get_model_config("tiny_state").tokens
    assert tiny.state_tokens == (512, 513, 514, 515) and tiny.text_vocab_size == 516


def test_response_tts_onset_text_pad_epad_and_silence_frame_by_frame():
    dialog = two_exchanges()
    sample = layout_response_tts(dialog, SILENCE, IDS, STATES)
    plain = layout_response_tts(dialog, SILENCE)  # the same dialog with FLM-Audio's <wait>
    # user 1..3; [ASSISTANT] on 3, the reply 4..6, its speech 6..9 ([PAD] 7..9), [EPAD] on 10; silence;
    # user 13..14; [ASSISTANT] 14, reply 15, speech 17..19 ([PAD] 16..19), [EPAD] on the extra frame 20.
    want = [W, S, S, A, 30, 31, 32, P, P, P, E, S, S, S, A, 33, P, P, P, P, E]
    assert _text(sample) == want
    np.testing.assert_array_equal(sample.tokens[:20, 1:], plain.tokens[:, 1:])  # audio untouched
    np.testing.assert_array_equal(sample.tokens[20, SPEAK], SILENCE[:, 0])
    np.testing.assert_array_equal(sample.weights[:20], plain.weights)
    assert (sample.weights[20, :9] == 1).all() and (sample.weights[20, LISTEN] == 0).all()
    classes = loss_classes(sample.tokens, sample.weights, IDS)[:, 0]
    assert classes[1] == LossClass.SILENCE and classes[3] == classes[10] == LossClass.ROLE
    assert classes[4] == classes[7] == LossClass.MONOLOGUE  # [PAD] counts as monologue


def test_asr_response_tts_onset_precedes_the_asr_span():
    sample = layout_asr_response_tts(two_exchanges(), SILENCE, IDS, STATES)
    asr, ans = IDS.text_asr, IDS.text_answer
    assert _text(sample)[:15] == [W, S, S, A, asr, 20, 21, ans, 30, 31, 32, P, P, P, E]


def test_an_interruption_cut_ends_the_reply_with_epad():
    dialog = overlapping_dialog(8)
    sample = layout_response_tts_free(dialog, SILENCE, np.random.default_rng(0), IDS, STATES)
    # The reply's text 4..13 and speech 6..13 stop at the cut (frame 14): [EPAD] there, no [PAD]; the user
    # speaks 8..15; [ASSISTANT] 15, reply 16, speech 18..19, [EPAD] 20.
    want = [W, S, S, A, *range(30, 40), E, A, 33, P, P, P, E]
    assert _text(sample) == want
    assert sample.segments[1].cut_frame == 14


def test_a_reply_on_frame_one_has_no_onset_and_bad_vocabularies_are_refused():
    first = [{"role": "model", "codes": SILENCE[:, :1].repeat(3, 1), "text_tokens": [30], "start_frame": 0,
              "end_frame": 3}]  # fmt: skip
    assert _text(layout_response_tts(first, SILENCE, IDS, STATES)) == [W, 30, P, P, P, P, E]
    with pytest.raises(LayoutError, match="state tokens"):
        layout_response_tts(two_exchanges(), SILENCE, RELEASE_TOKENS, STATES)
    with pytest.raises(ConfigError, match="text_states"):
        LayoutConfig(text_states="moshi")


def test_state_token_loss_terms_by_hand():
    base = TokenIds(text_vocab_size=4, text_wait=3, text_asr=2, text_answer=2, bos=0, eos=0, num_codebooks=2,
                    codebook_size=2)  # fmt: skip
    small = base.with_state_tokens()
    s, a, p, e = small.state_tokens
    targets = [s, s, a, p, e, 1]
    t = len(targets)
    tokens = np.zeros((1, t + 1, small.num_streams), np.int32)
    tokens[0, 1:, 0] = targets
    weights = np.zeros(tokens.shape, np.float32)
    weights[0, 1:, 0] = 1.0
    text_logits = np.zeros((1, t, 8), np.float32)  # uniform: every CE is log 8
    audio_logits = np.zeros((1, t, 2, 4), np.float32)
    out = flm_loss(text_logits, audio_logits, tokens, weights, small, LossCoefficients(silence=0.1, role=10.0))
    assert float(out["silence_tokens"]) == 2 and float(out["role_tokens"]) == 2 and float(out["monologue_tokens"]) == 2
    l8 = math.log(8)
    assert float(out["loss"]) == pytest.approx(1.0 * l8 + 0.1 * l8 + 10.0 * l8, rel=1e-6)
    plain = flm_loss(text_logits[..., :4], audio_logits, np.minimum(tokens, 3), weights, base)
    assert "silence" not in plain and "role" not in plain


def test_the_monologue_shows_no_state_token():
    class Tokenizer:
        def decode(self, ids):
            return "".join(chr(ord("a") + i) for i in ids)

    stream = TextStream(Tokenizer(), W, IDS.state_tokens)
    shown = "".join(stream.push(i) for i in [S, S, A, 0, 1, P, P, E, S, A, 2, E])
    assert shown == "ab\nc\n"


def test_trained_parameters_grow_the_state_tokens_and_keep_every_old_logit(tiny_model):
    from flmjax import FLMAudio
    from flmjax.model.vocab import grow_text_vocab, grows_text_vocab

    old, new = tiny_model.config, get_model_config("tiny_state")
    assert grows_text_vocab(old, new) and not grows_text_vocab(new, old)
    assert not grows_text_vocab(old, get_model_config("demo_state"))  # another architecture
    params = grow_text_vocab(tiny_model.params, old, new)
    emb, head = params["embed_tokens"]["text_embeddings"], params["lm_head"]
    assert emb.shape == (516, 64) and head.shape == (64, 516)
    old_emb = np.asarray(tiny_model.params["embed_tokens"]["text_embeddings"])
    mean = old_emb.astype(np.float64).mean(0)  # float32 sums of 512 rows: within a few ulps of the rows' size
    ulps = 4 * float(np.finfo(np.float32).eps * np.abs(old_emb).max())
    np.testing.assert_allclose(np.asarray(emb[512:]), np.broadcast_to(mean, (4, 64)), rtol=0, atol=ulps)
    assert not np.asarray(head[:, 512:]).any()
    grown = FLMAudio(new, params)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 2048, (1, 6, 17)).astype(np.int32)
    tokens[..., 0] = rng.integers(0, 512, (1, 6))
    text_old, audio_old = tiny_model.forward(tokens)
    text_new, audio_new = grown.forward(tokens)
    # One more column changes how XLA tiles the text head's matmul: float32 dot products of 64 terms,
    # logits up to ~0.3, agree to a few ulps (rtol 1e-6 is ~8 ulps), not bit for bit.
    np.testing.assert_allclose(np.asarray(text_new[..., :512]), np.asarray(text_old), rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(np.asarray(audio_new), np.asarray(audio_old))
    assert not np.asarray(text_new[..., 512:]).any()
