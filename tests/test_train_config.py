"""Stage configs: typed Python modules, command-line overrides parsed and type-checked by tyro, validation
in one line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flmjax import configs
from flmjax.cli.train import main as train_main
from flmjax.config import ConfigError, Numerics
from flmjax.configs import ft2
from flmjax.data.config import CorpusSpec, get_data_config
from flmjax.train.config import TrainConfig, corpus_from_arg, corpus_to_arg, with_overrides


def test_stage_configs_start_from_the_base():
    stage = ft2.config()
    assert stage.stage == "ft2" and stage.epochs == 6.0 and stage.data == get_data_config("ft2")
    assert stage.model == "flm7b" and stage.numerics == Numerics(dtype="bfloat16", param_dtype="float32", remat="full")
    assert (stage.optimizer.b1, stage.optimizer.b2, stage.optimizer.weight_decay, stage.optimizer.clip_norm) == (
        0.9,
        0.95,
        0.1,
        1.0,
    )
    assert configs.load("post2")[0].epochs == 1.0 and configs.load("ft1")[0].epochs == 2.0
    assert {"base", "post1", "post2", "ft1", "ft2", "demo"} <= set(configs.names())
    # What a stage needs is a field of its config, not a test of its name.
    assert "--init.qwen_from" in configs.load("post1")[0].init.start_hint
    assert "--init.params_from" in stage.init.start_hint and not stage.demo_data_ok


def test_overrides_are_typed_and_nested():
    config = with_overrides(
        TrainConfig(),
        ["--optimizer.peak_lr=1e-5", "--steps", "12", "--log.tensorboard=false", "--mesh.fsdp=2",
         "--data.layout_config.gap_s", "0.5", "1.5", "--data.corpora", "name=mine,prepared=/data/mine",
         "name=more,manifest=m.jsonl,weight=5", "--numerics.remat=dots"],
    )  # fmt: skip
    assert config.optimizer.peak_lr == 1e-5 and config.steps == 12 and config.log.tensorboard is False
    assert config.mesh.fsdp == 2 and config.data.layout_config.gap_s == (0.5, 1.5)
    assert config.data.corpora == (CorpusSpec("mine", prepared="/data/mine"), CorpusSpec("more", "m.jsonl", weight=5.0))
    assert config.numerics.remat == "dots" and config.numerics.dtype == TrainConfig().numerics.dtype
    assert config.optimizer.end_lr == TrainConfig().optimizer.end_lr  # untouched fields keep their values


def test_a_corpus_argument_round_trips():
    for corpus in (CorpusSpec("a", prepared="/d/a"), CorpusSpec("b", "gs://bucket/b.jsonl", weight=0.5)):
        assert corpus_from_arg(corpus_to_arg(corpus)) == corpus


@pytest.mark.parametrize(
    "args, message",
    [
        (["--optimizer.peek_lr=1"], "unknown config field 'optimizer.peek_lr'"),
        (["--optimizer.peak_lr=fast"], "--optimizer.peak_lr: could not convert string to float: 'fast'"),
        (["--steps=1.5"], "--steps: invalid literal for int"),
        (["--steps=True"], "--steps: invalid literal for int"),
        (["--numerics.remat=sometimes"], "--numerics.remat must be one of none, full, dots, dots_no_batch"),
        (["--micro_batches=3"], "must be a multiple of micro_batches 3"),
        (["--steps.value=3"], "unknown config field 'steps.value'"),
        (["--data.corpora", "nme=x"], "--data.corpora: 'nme=x' is not one of name=..., manifest=..."),
        (["--data.corpora", "name=x,weight=lots"], "weight must be a number"),
        (["--model=flm70b"], "model must be one of demo, demo_state, flm7b, flm7b_state, school, tiny, tiny_state"),
        (["--optimizer.peak_lr=-1"], "peak_lr must be > 0"),
        (["--log.progress=maybe"], "--log.progress: expected True or False"),
        (["--data.layout_config.gap_s", "0.5"], "--data.layout_config.gap_s"),
    ],
)
def test_bad_overrides_fail_in_one_line(args, message):
    with pytest.raises(ConfigError, match=message) as info:
        with_overrides(ft2.config(), args)
    assert "\n" not in str(info.value)


def test_a_chain_starts_each_stage_from_the_previous_run():
    stages = configs.load("demo", ["--steps=3"])
    assert [s.stage for s in stages] == ["post1", "post2", "ft1", "ft2"]
    assert all(s.steps == 3 and s.model == "demo" and s.demo_data_ok for s in stages)
    assert stages[0].init.random_ok and not stages[0].init.params_from
    for previous, stage in zip(stages, stages[1:]):
        assert stage.init.params_from == previous.resolved_run_dir
        assert stage.data.layout == get_data_config(stage.stage).layout
    assert stages[-1].export.dir


def test_the_school_chain_ends_with_dpo_on_its_ft2_dialogs_as_pairs():
    stages = configs.load("school", [])
    assert [s.stage for s in stages] == ["post1", "ft1", "ft2", "dpo"]
    ft2, dpo = stages[2], stages[3]
    assert dpo.init.params_from == ft2.resolved_run_dir  # the start and pi_ref
    assert dpo.dpo is not None and (dpo.dpo.beta, dpo.dpo.lambda_ftx) == (0.5, 0.5)
    assert dpo.data.preference is not None and dpo.data.layout_config.interruption_prob == 1.0
    assert [c.manifest for c in dpo.data.corpora] == [c.manifest for c in ft2.data.corpora]
    assert dpo.optimizer.peak_lr < ft2.optimizer.peak_lr and dpo.export.dir and not ft2.export.dir


def test_a_config_file_outside_the_package(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(
        "import dataclasses\nfrom flmjax.configs import ft2\n\n\n"
        "def config():\n    return dataclasses.replace(ft2.config(), stage='mine', steps=5)\n"
    )
    (stage,) = configs.load(str(path), ["--steps=6"])
    assert stage.stage == "mine" and stage.steps == 6 and stage.epochs == 6.0


def test_cli_overrides_and_errors(capsys):
    assert (
        train_main(["--config=ft2", "--optimizer.peak_lr", "3e-6", "--set", "log.every_steps=7", "--print-config"]) == 0
    )
    (shown,) = json.loads(capsys.readouterr().out)
    assert shown["optimizer"]["peak_lr"] == 3e-6 and shown["log"]["every_steps"] == 7
    resolved = with_overrides(ft2.config(), ["--optimizer.peak_lr=3e-6", "--log.every_steps=7"])
    assert shown == json.loads(json.dumps(dataclasses.asdict(resolved)))
    assert train_main(["--config=ft2", "--optimizer.beta=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "unknown config field 'optimizer.beta'" in err
    assert train_main(["--config=nope"]) == 2
    assert "unknown config 'nope'" in capsys.readouterr().err


def test_help_lists_every_field_with_its_type_and_the_configs_value(capsys):
    assert train_main(["--config=ft2", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--optimizer.peak_lr FLOAT" in out and "(default: 8e-06)" in out
    assert "--numerics.remat {none,full,dots,dots_no_batch}" in out and "--data.corpora" in out


def test_ft2_without_a_start_or_data_says_what_to_provide(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train_main(["--config=ft2", f"--run_root={tmp_path}"]) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "--init.params_from" in line and "--data.corpora" in line
    assert not any(tmp_path.iterdir())  # nothing was created
