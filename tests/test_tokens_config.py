"""Token ids, delays, and model configurations (including the release's exact parameter count)."""

import json

import numpy as np
import pytest

from flmjax.config import ConfigError, ModelConfig, Numerics, get_model_config
from flmjax.model.pretrained import abstract_params
from flmjax.tokens import RELEASE_TOKENS, TokenIds, delay_streams, undelay_streams


def test_release_ids_and_delays():
    t = RELEASE_TOKENS
    assert (t.text_wait, t.text_asr, t.text_answer, t.bos, t.eos) == (151665, 151666, 151667, 151643, 151645)
    assert (t.audio_pad, t.audio_empty, t.audio_vocab_size, t.num_streams) == (2048, 2049, 2050, 17)
    assert t.delays.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
    assert t.initial_column.tolist() == [151665] + [2048] * 16


def test_delay_streams_by_hand():
    raw = np.arange(3 * 17).reshape(3, 17) + 1000
    delayed = delay_streams(raw)
    assert delayed.shape == (4, 17)
    # text and semantic streams: raw frame c at column c; the column after their end holds the fill
    assert delayed[:3, 0].tolist() == raw[:, 0].tolist() and delayed[3, 0] == 151665
    assert delayed[:3, 9].tolist() == raw[:, 9].tolist() and delayed[3, 9] == 2048
    # acoustic streams: column 0 is the initial token, raw frame c at column c+1
    assert delayed[0, 2] == 2048 and delayed[1:, 2].tolist() == raw[:, 2].tolist()
    np.testing.assert_array_equal(undelay_streams(delayed), raw)
    np.testing.assert_array_equal(delay_streams(raw[None])[0], delayed)  # leading batch axes
    weights = delay_streams(np.ones((3, 17), np.float32), fill=np.zeros(17))
    assert weights[0, 2] == 0 and weights[3, 0] == 0 and weights[1, 2] == 1


def test_flm7b_parameter_count_is_the_release():
    shapes = abstract_params(get_model_config("flm7b"))
    count = lambda tree: sum(int(np.prod(x.shape)) for x in __import__("jax").tree_util.tree_leaves(tree))  # noqa: E731
    assert count(shapes) == 8_221_022_720
    assert count(shapes["depformer"]) == 490_689_536


def test_hf_config_round_trip_and_unused_fields():
    cfg = get_model_config("flm7b")
    hf = cfg.to_hf_dict()
    hf["rope_scaling"] = {"type": "mrope", "mrope_section": [16, 24, 24]}  # carried by the release, unused
    back = ModelConfig.from_hf_dict(json.loads(json.dumps(hf)))
    assert back == cfg
    assert back.depformer.mlp_dim == 2730 and back.depformer.head_dim == 64


def test_tokens_follow_the_checkpoint_config():
    hf = get_model_config("flm7b").to_hf_dict()
    hf["mm_token_info"] = {"text_wait_token_id": 100, "aud_pad_token_id": 2048, "aud_emp_token_id": 2049}
    hf.update(vocab_size=200, bos_token_id=1, eos_token_id=2)
    t = ModelConfig.from_hf_dict(hf).tokens
    assert (t.text_wait, t.text_asr, t.text_answer, t.text_vocab_size, t.bos, t.eos) == (100, 101, 102, 200, 1, 2)
    assert TokenIds.from_hf_config({}) == RELEASE_TOKENS


@pytest.mark.parametrize(
    "change, message",
    [
        ({"numerics": {"remat": "sometimes"}}, "remat must be one of"),
        ({"numerics": {"dtype": "int8"}}, "dtype must be one of"),
        ({"numerics": {"attention_chunk": -1}}, "attention_chunk must be >= 0"),
        ({"num_kv_heads": 3}, "not a multiple of num_kv_heads"),
    ],
)
def test_bad_model_configs_fail_clearly(change, message):
    with pytest.raises(ConfigError, match=message):
        if "numerics" in change:
            change = {"numerics": Numerics(**change["numerics"])}
        get_model_config("tiny", **change)


def test_numerics_are_not_part_of_the_architecture():
    fast = get_model_config("tiny", numerics=Numerics(dtype="bfloat16", remat="full", scan_layers=False))
    assert fast.to_hf_dict() == get_model_config("tiny").to_hf_dict()
    assert ModelConfig.from_hf_dict(fast.to_hf_dict()) == get_model_config("tiny")  # the default numerics


def test_bad_hf_configs_fail_clearly():
    with pytest.raises(ConfigError, match="unknown model config 'huge'"):
        get_model_config("huge")
    hf = get_model_config("tiny").to_hf_dict()
    del hf["aud_depthgpt"]
    with pytest.raises(ConfigError, match="lacks aud_depthgpt"):
        ModelConfig.from_hf_dict(hf)
    hf = get_model_config("tiny").to_hf_dict()
    hf["aud_depthgpt"]["use_swiglu"] = False
    with pytest.raises(ConfigError, match="use_swiglu=False is not supported"):
        ModelConfig.from_hf_dict(hf)
