"""The Grain pipeline on synthetic prepared corpora (random codes, no Mimi): contract, determinism,
exact resume, mixing weights, per-host sharding, dialog variants per epoch."""

import collections
import json
import math

import numpy as np
import pytest

from flmjax.config import ConfigError
from flmjax.data import layouts, records
from flmjax.data.config import POST_TRAINING, CorpusSpec, DataConfig, get_data_config
from flmjax.data.pipeline import EpochMixture, batch_dataset, item_dataset, sample_dataset
from flmjax.data.records import PreparedCorpusError
from flmjax.tokens import RELEASE_TOKENS, undelay_streams

IDS = RELEASE_TOKENS
SILENCE = np.full((8, 1), 7, np.int32)


def write_pairs(root, n, seed, shard_size=64, words=False):
    """n pairs, 10..60 frames of random codes, 3..9 text tokens (with `words`: one word per token)."""
    rng = np.random.default_rng(seed)
    shards = []
    for s, start in enumerate(range(0, n, shard_size)):
        recs = []
        for i in range(start, min(n, start + shard_size)):
            codes = rng.integers(0, 2048, (8, int(rng.integers(10, 60))))
            text = rng.integers(0, 151000, int(rng.integers(3, 10)))
            step = codes.shape[1] / 12.5 / len(text)  # words spread evenly over the clip
            timed = (
                [layouts.WordTiming([int(t)], k * step, (k + 0.8) * step) for k, t in enumerate(text)]
                if words
                else None
            )
            recs.append(records.pair_record({"id": f"{root.name}/{i}"}, codes, text, timed))
        records.write_shard(root, s, recs, {"fingerprint": "test", "errors": []})
        shards.append({"shard": s, "records": len(recs)})
    records.write_index(root, {"kind": "speech", "records": n, "shards": shards, "silence_codes": SILENCE.tolist()})
    return root


def write_dialogs(root, n, variants, layout="response_tts_free", seed=0):
    """n dialogs user/model/user/model; variant v of dialog i has its own plan and listen codes."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        turns, start = [], 0
        for role in ["user", "model", "user", "model"]:
            f = int(rng.integers(15, 30))
            turns.append(layouts.Turn(role=role, codes=rng.integers(0, 2048, (8, f)),
                                      text_tokens=rng.integers(0, 151000, 6).tolist(),
                                      start_frame=start, end_frame=start + f))  # fmt: skip
            start += f + 3
        plans = [layouts.plan_dialog(turns, layout, np.random.default_rng([i, v]), IDS) for v in range(variants)]
        listen = [rng.integers(0, 2048, (8, p.num_frames - 1)) for p in plans]
        recs.append(records.dialog_record({"id": f"d{i}"}, turns, plans, listen))
    records.write_shard(root, 0, recs, {"fingerprint": "test", "errors": []})
    records.write_index(root, {"kind": "dialogs", "records": n, "shards": [{"shard": 0, "records": n}],
                               "layout": layout, "variants": variants, "silence_codes": SILENCE.tolist()})  # fmt: skip
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("prepared")
    return {
        "auto": write_pairs(base / "auto", 300, 0),
        "human": write_pairs(base / "human", 40, 1),
        "dialogs": write_dialogs(base / "dialogs", 6, variants=3),
        "worded": write_pairs(base / "worded", 30, 2, words=True),
    }


def post_config(corpora, **changes):
    config = DataConfig(
        "test_post", POST_TRAINING,
        (CorpusSpec("auto", prepared=str(corpora["auto"]), weight=0.5),
         CorpusSpec("human", prepared=str(corpora["human"]), weight=5.0)),
        global_batch=4, layout_config=layouts.LayoutConfig(sample_frames=600), seed=3,
    )  # fmt: skip
    return config.replace(**changes)


def roots(config):
    return [c.prepared for c in config.corpora]


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_batches_follow_the_contract_and_carry_the_records(corpora):
    config = post_config(corpora)
    batch = next(iter(batch_dataset(config, roots(config))))
    t = config.seq_len
    assert batch["tokens"].shape == (4, t + 1, 17) and batch["tokens"].dtype == np.int32
    assert batch["weights"].shape == (4, t + 1, 17) and batch["weights"].dtype == np.float32
    # Batches are the layouts' samples, delayed; the samples hold the records' codes where placed.
    laid = next(iter(sample_dataset(config, roots(config))))
    raw = undelay_streams(batch["tokens"][0])
    np.testing.assert_array_equal(raw, laid.sample.tokens)
    assert np.all(batch["weights"][:, :, IDS.listen_streams] == 0)
    corpus = [records.PreparedCorpus(r) for r in roots(config)]
    for seg in laid.sample.segments:
        if seg.channel is None:
            continue
        c, r, _ = laid.items[seg.source]
        pair = records.pair_from_record(*corpus[c][r])
        streams = IDS.speak_streams if seg.channel == "speak" else IDS.listen_streams
        np.testing.assert_array_equal(laid.sample.tokens[seg.audio_start : seg.audio_end, streams], pair.codes.T)
        assert list(seg.text) == pair.text_tokens
    assert len(laid.items) > 5  # a 600-frame sample packs many 10..60-frame pairs


def test_word_level_alignment_reads_word_timings(corpora):
    config = DataConfig("test_words", POST_TRAINING, (CorpusSpec("w", prepared=str(corpora["worded"])),),
                        layout_config=layouts.LayoutConfig(sample_frames=300, alignment="word"))  # fmt: skip
    laid = next(iter(sample_dataset(config, roots(config))))
    corpus = records.PreparedCorpus(corpora["worded"])
    audio = [s for s in laid.sample.segments if s.channel is not None]
    words = [s for s in laid.sample.segments if s.kind == "word"]
    assert laid.sample.layout == "post_training_word" and audio and words
    for seg in audio:  # every word of each pair sits on the text channel, one token per word
        _, r, _ = laid.items[seg.source]
        pair = records.pair_from_record(*corpus[r])
        assert [w.tokens for w in pair.words] == [[t] for t in pair.text_tokens]
    placed = [t for s in words for t in s.text]
    expected = [t for s in audio for t in records.pair_from_record(*corpus[laid.items[s.source][1]]).text_tokens]
    assert placed == expected


def test_same_seed_same_batches(corpora):
    config = post_config(corpora)
    a = take(iter(batch_dataset(config, roots(config))), 3)
    b = take(iter(batch_dataset(config, roots(config))), 3)
    c = take(iter(batch_dataset(config.replace(seed=4), roots(config))), 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["tokens"], y["tokens"])
        np.testing.assert_array_equal(x["weights"], y["weights"])
    assert not np.array_equal(a[0]["tokens"], c[0]["tokens"])


@pytest.mark.parametrize("stage", ["post", "dialogs"])
def test_restored_iterator_yields_the_batches_that_would_have_followed(corpora, stage):
    if stage == "post":
        config = post_config(corpora)
    else:
        config = DataConfig("test_ft", "response_tts_free", (CorpusSpec("d", prepared=str(corpora["dialogs"])),),
                            global_batch=2,
                            layout_config=layouts.LayoutConfig(sample_frames=200, pad_dialogs=True))  # fmt: skip
    it = iter(batch_dataset(config, roots(config)))
    take(it, 5)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    expected = take(it, 6)
    restored = iter(batch_dataset(config, roots(config)))
    restored.set_state(state)
    for want, got in zip(expected, take(restored, 6)):
        np.testing.assert_array_equal(want["tokens"], got["tokens"])
        np.testing.assert_array_equal(want["weights"], got["weights"])


def test_mixture_epoch_counts_are_exact():
    mix = EpochMixture([600, 40], [0.5, 5.0], seed=0)
    assert len(mix) == 300 + 200
    epochs = [[mix[e * len(mix) + k] for k in range(len(mix))] for e in range(2)]
    for items in epochs:
        counts = collections.Counter((c, r) for c, r, _ in items)
        assert all(counts[(1, r)] == 5 for r in range(40))  # x5: every record exactly five times
        assert sum(1 for c, _ in counts if c == 0) == 300 and max(n for (c, _), n in counts.items() if c == 0) == 1
    halves = [{r for c, r, _ in items if c == 0} for items in epochs]
    assert halves[0] != halves[1]  # x0.5: a fresh random half every epoch
    # Two independent random halves of 600 share 150 records on average (hypergeometric sd ~ 6.1).
    assert abs(len(halves[0] & halves[1]) - 150) < 5 * 6.2


def test_mixing_weights_hold_statistically():
    """Shares of the first draws of the shuffled stream against a binomial bound (4 sd, p ~ 6e-5)."""
    sizes, weights = [10_000, 1_000], [0.5, 5.0]
    p = 0.5 * 10_000 / (0.5 * 10_000 + 5.0 * 1_000)  # 0.5: the expected share of the automatic corpus
    ds = item_dataset(sizes, weights, seed=11)
    draws = 4000  # less than one epoch (10,000 items): the order decides the shares
    count = sum(1 for k in range(draws) if ds[k][0] == 0)
    sd = math.sqrt(draws * p * (1 - p))
    assert abs(count - draws * p) <= 4 * sd, (count, draws * p, sd)
    # The first half of the epoch must not be biased either way (a concatenation would give 4000 or 0).
    tail = sum(1 for k in range(5000, 5000 + draws) if ds[k][0] == 0)
    assert abs(tail - draws * p) <= 4 * sd


def test_hosts_see_disjoint_data_whose_union_is_the_whole():
    sizes, weights = [301, 40], [0.5, 5.0]
    whole = item_dataset(sizes, weights, seed=5)
    epoch = len(EpochMixture(sizes, weights, seed=5))  # 150 + 200 = 350
    everything = collections.Counter(whole[k] for k in range(epoch))
    assert len(everything) == epoch  # items (corpus, record, copy) of one epoch are distinct
    hosts = [item_dataset(sizes, weights, seed=5, process_index=h, process_count=2) for h in range(2)]
    seen = [collections.Counter(hosts[h][k] for k in range(epoch // 2)) for h in range(2)]
    assert not set(seen[0]) & set(seen[1])
    assert seen[0] + seen[1] == everything
    with pytest.raises(ValueError, match="process_index"):
        item_dataset(sizes, weights, seed=5, process_index=2, process_count=2)


def test_per_host_batches_split_the_global_batch(corpora):
    config = post_config(corpora)
    batches = [next(iter(batch_dataset(config, roots(config), h, 2))) for h in range(2)]
    assert all(b["tokens"].shape[0] == 2 for b in batches)
    assert not np.array_equal(batches[0]["tokens"], batches[1]["tokens"])
    with pytest.raises(ConfigError, match="does not split over 3 hosts"):
        batch_dataset(config, roots(config), 0, 3)


def test_dialog_epochs_read_successive_variants(corpora):
    config = DataConfig("test_ft", "response_tts_free", (CorpusSpec("d", prepared=str(corpora["dialogs"])),),
                        global_batch=1, layout_config=layouts.LayoutConfig(sample_frames=400))  # fmt: skip
    corpus = records.PreparedCorpus(corpora["dialogs"])
    it = iter(sample_dataset(config, roots(config)))
    seen = collections.defaultdict(list)
    for _ in range(6 * 4):  # four epochs of six dialogs
        laid = next(it)
        ((c, r, copy),) = laid.items
        meta, arrays = corpus[r]
        seen[r].append(copy)
        listen = arrays[f"listen{copy % 3}"]
        n = laid.sample.tokens.shape[0]
        np.testing.assert_array_equal(laid.sample.tokens[1:n, IDS.listen_streams], listen[:, : n - 1].T)
        assert laid.sample.layout == "response_tts_free"
    assert all(sorted(copies) == [0, 1, 2, 3] for copies in seen.values())


def test_corpora_must_fit_the_layout(corpora, tmp_path):
    speech_for_ft = DataConfig("x", "asr_response_tts", (CorpusSpec("a", prepared=str(corpora["auto"])),))
    with pytest.raises(PreparedCorpusError, match="holds speech"):
        sample_dataset(speech_for_ft, roots(speech_for_ft))
    other_layout = DataConfig("x", "asr_response_tts", (CorpusSpec("d", prepared=str(corpora["dialogs"])),))
    with pytest.raises(PreparedCorpusError, match="planned for 'response_tts_free'"):
        sample_dataset(other_layout, roots(other_layout))
    missing = DataConfig("x", POST_TRAINING, (CorpusSpec("m", prepared=str(tmp_path / "nowhere")),))
    with pytest.raises(PreparedCorpusError, match="not a prepared corpus"):
        sample_dataset(missing, roots(missing))


def test_stage_configs_follow_the_spec():
    post2 = get_data_config("post2")
    assert [c.weight for c in post2.corpora] == [0.5, 5.0]
    assert post2.seq_len == 8192 and post2.global_batch == 256
    assert get_data_config("ft1").layout == "asr_response_tts" and get_data_config("ft1").augment.leakage_prob == 0
    ft2 = get_data_config("ft2")
    assert ft2.layout == "response_tts_free" and ft2.augment.leakage_prob == 0.3 and ft2.variants == 6
    assert ft2.layout_config.interruption_prob == 0.7 and ft2.layout_config.reaction_s == 0.5
    assert get_data_config("demo", global_batch=2).global_batch == 2
    with pytest.raises(ConfigError, match="unknown data config 'post3'"):
        get_data_config("post3")


def _load_launch(name):
    import importlib

    return importlib.import_module(f"flmjax.cli.{name}")


def test_inspector_prints_the_pipelines_sample(corpora, capsys):
    from flmjax.data.config import register_data_config
    from flmjax.data.layouts import SEGMENT_FIELDS, Segment
    from flmjax.data.text_tokenizer import load_text_tokenizer

    inspect_data = _load_launch("inspect_data")
    config = post_config(corpora, name="test_inspect")
    register_data_config(config)
    it = iter(sample_dataset(config, roots(config)))
    take(it, 2)
    sample = next(it).sample

    assert inspect_data.main(["--config=test_inspect", "--index", "2", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown) == {"layout", "text", "speak", "listen", "weights", "segments"}
    assert shown["layout"] == sample.layout
    np.testing.assert_array_equal(shown["text"], sample.tokens[:, 0])
    np.testing.assert_array_equal(shown["speak"], sample.tokens[:, IDS.speak_streams])
    np.testing.assert_array_equal(shown["listen"], sample.tokens[:, IDS.listen_streams])
    np.testing.assert_array_equal(shown["weights"]["text"], sample.weights[:, 0])
    np.testing.assert_array_equal(shown["weights"]["speak"], sample.weights[:, IDS.speak_streams])
    assert [tuple(s) for s in shown["segments"]] == [SEGMENT_FIELDS] * len(sample.segments)
    assert [Segment.from_json(s) for s in shown["segments"]] == sample.segments

    assert inspect_data.main(["--config=test_inspect", "--index", "2", "--all-frames"]) == 0
    lines = capsys.readouterr().out.splitlines()
    frames = {int(line.split()[0]): line for line in lines if line[:5].strip().isdigit()}
    assert len(frames) == config.seq_len  # one line per frame
    decode = load_text_tokenizer().decode
    tts = next(s for s in sample.segments if s.kind == "tts")
    assert repr(decode([tts.text[0]])) in frames[tts.text_start] and "[monologue" in frames[tts.text_start]
    assert "speak: speech" in frames[tts.audio_start] and "[sem+ac" in frames[tts.audio_start]
    asr = next(s for s in sample.segments if s.kind == "asr")
    assert "listen: speech" in frames[asr.audio_start] and "<wait>" in frames[asr.audio_start]

    assert inspect_data.main(["--config=no_such_stage", "--index", "0"]) == 2
    assert "unknown data config 'no_such_stage'" in capsys.readouterr().err


def test_preference_pairs_share_the_listen_track_and_the_inspector_shows_both_sides(corpora, capsys):
    from flmjax.data.config import register_data_config
    from flmjax.data.layouts.preference import PreferenceConfig

    config = DataConfig("test_dpo", "response_tts_free", (CorpusSpec("d", prepared=str(corpora["dialogs"])),),
                        global_batch=2, layout_config=layouts.LayoutConfig(sample_frames=400, pad_dialogs=True),
                        preference=PreferenceConfig())  # fmt: skip
    corpus = records.PreparedCorpus(corpora["dialogs"])
    it = iter(sample_dataset(config, roots(config)))
    kinds = set()
    for _ in range(6):
        laid = next(it)
        ((_, r, copy),) = laid.items
        listen = corpus[r][1][f"listen{copy % 3}"]
        kinds.add(laid.kind)
        chosen, rejected = laid.sample, laid.rejected
        np.testing.assert_array_equal(chosen.tokens[:, IDS.listen_streams], rejected.tokens[:, IDS.listen_streams])
        user_end = max(s.audio_start for s in chosen.segments if s.kind == "user")  # the dialog's track up to there
        np.testing.assert_array_equal(chosen.tokens[1:user_end, IDS.listen_streams], listen[:, : user_end - 1].T)
        assert not np.array_equal(chosen.tokens[:, IDS.speak_streams], rejected.tokens[:, IDS.speak_streams])
    assert kinds <= {"turn_taking", "interruption"} and kinds
    batch = next(iter(batch_dataset(config, roots(config))))
    assert set(batch) == {"tokens", "weights", "rejected_tokens", "rejected_weights"}
    assert batch["rejected_tokens"].shape == batch["tokens"].shape == (2, 401, 17)

    with pytest.raises(ConfigError, match="leakage_prob"):
        get_data_config("dpo", augment=get_data_config("ft2").augment)
    register_data_config(config)
    inspect_data = _load_launch("inspect_data")
    assert inspect_data.main(["--config=test_dpo", "--index", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    it = iter(sample_dataset(config, roots(config)))
    next(it)
    laid = next(it)
    assert set(shown) == {"kind", "chosen", "rejected"} and shown["kind"] == laid.kind
    np.testing.assert_array_equal(shown["rejected"]["speak"], laid.rejected.tokens[:, IDS.speak_streams])
    assert set(shown["chosen"]) == {"layout", "text", "speak", "listen", "weights", "segments"}
    assert inspect_data.main(["--config=test_dpo", "--index", "1"]) == 0
    out = capsys.readouterr().out
    assert "=== chosen ===" in out and "=== rejected ===" in out
