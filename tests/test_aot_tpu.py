"""TPU lowering never breaks silently: the tiny model's train step and decode frame program are compiled
by libtpu for a v5e:2x2 slice (no TPU needed), and loop bodies are counted as often as they run."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest

from flmjax.aot.cost import LoopAwareCost, _trip_count
from flmjax.cli import aot

TRAIN_KEYS = ("chips", "device_kind", "per_device_gb", "hbm_gb", "fits", "flops_per_device", "bytes_per_device",
              "roofline_step_s", "mfu_at_roofline")  # fmt: skip
DECODE_KEYS = ("bytes_per_device", "weight_bytes_per_device", "roofline_ms_per_frame")


def test_loop_aware_cost_weights_nested_loop_bodies_by_their_trip_counts():
    n = 64
    w = jnp.ones((n, n), jnp.float32)

    def f(x):
        def outer(_, x):
            return jax.lax.fori_loop(0, 5, lambda _, y: jnp.tanh(y @ w), x @ w)

        return jax.lax.fori_loop(0, 3, outer, x)

    compiled = jax.jit(f).lower(jnp.ones((n, n), jnp.float32)).compile()
    cost = LoopAwareCost(compiled.as_text())
    matmul = 2 * n**3
    assert cost.once().flops == pytest.approx(compiled.cost_analysis()["flops"])
    assert cost.once().flops == pytest.approx(2 * matmul, rel=0.05)  # XLA's own count: each body once
    assert cost.total().flops == pytest.approx(3 * (1 + 5) * matmul, rel=0.05)
    assert cost.total().bytes_accessed > cost.once().bytes_accessed


def _rows(capsys, argv):
    assert aot.main(argv) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.slow
def test_the_tpu_compiler_compiles_the_tiny_train_step_and_decode_frame(capsys):
    common = ["--model", "tiny", "--topology", "v5e:2x2", "--mesh", "1,2,2", "--json"]
    (train,) = _rows(capsys, [*common, "--seq", "32", "--batch", "4", "--micro", "1", "--remat", "full"])
    (decode,) = _rows(capsys, [*common, "--decode", "--batch", "2", "--window", "64", "--decode-block", "16"])
    for row, keys in ((train, TRAIN_KEYS), (decode, DECODE_KEYS)):
        assert all(k in row for k in keys), sorted(row)
        assert row["chips"] == 4 and row["device_kind"] == "TPU v5e" and row["hbm_gb"] == 16
        assert row["fits"] and 0 < row["per_device_gb"] < 1
        # The layers are a loop: counted as often as they run, more than XLA's count (each body once).
        assert row["flops_per_device"] > row["xla_flops_once"] > 0
    assert train["model_flops_per_step"] > 0 and 0 < train["mfu_at_roofline"] < 1
    # A frame reads every weight it uses at least once; the roofline is that read, or the FLOPs.
    assert decode["bytes_per_device"] > decode["weight_bytes_per_device"] > 0
    assert decode["roofline_ms_per_frame"] > 0
    # The ring is read only as far as it is filled: a young conversation's frame reads less.
    assert decode["ring_blocks"] > 1
    assert decode["bytes_per_device_first_block"] < decode["bytes_per_device"]


@pytest.mark.parametrize("counter", ["s32", "u32"])
def test_trip_count_reads_signed_and_unsigned_loop_counters(counter):
    condition = f"""%cond (p: ({counter}[], f32[4])) -> pred[] {{
  %p = ({counter}[], f32[4]) parameter(0)
  %i = {counter}[] get-tuple-element(%p), index=0
  %n = {counter}[] constant(7)
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}}"""
    assert _trip_count(condition, lambda name: "", None) == 7


@pytest.mark.parametrize(("topology", "chips"), [("v6e:1x1", 1), ("v5e:1x1", 1), ("v5e:2x2", 4), ("v6e:2x4", 8)])
def test_topologies_smaller_than_a_host_have_their_own_chips(topology, chips, monkeypatch):
    from flmjax.aot.chips import topology_devices

    monkeypatch.setenv("TPU_SKIP_MDS_QUERY", "1")  # as aot.main sets them: no GCE metadata server to ask,
    monkeypatch.setenv("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # another compile may hold libtpu's lock

    assert len(topology_devices(topology)) == chips  # libtpu's default 2x2 host refuses a 1x1 slice


def test_the_decode_table_shows_a_frame_libtpu_refused_for_hbm():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "aot_tables.py"
    spec = importlib.util.spec_from_file_location("aot_tables", path)
    assert spec is not None and spec.loader is not None
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
               "(43.32G) exceeds available HBM (31.25G).")  # fmt: skip
    row = {"topology": "v6e:1x1", "chips": 1, "batch": 32, "weight_gb_per_device": 15.12,
           "kv_cache_gb_per_device": 15.03, "fits": False, "compile_error": message}  # fmt: skip
    *_, line = tables.decode_table([row])
    why = "no: libtpu needs 43.32G of temporaries, 31.25G available"
    assert line == f"| v6e:1x1 | 1 | 32 | 15.12 | 15.03 | - | {why} | - | - | - | - | - |"


def test_a_decode_frame_libtpu_refuses_for_hbm_is_a_row_that_does_not_fit(capsys):
    # The tiny model's ring cache of 2^20 slots for 64 streams: 17 GB of arguments on a 16 GB v5e chip.
    argv = ["--model", "tiny", "--topology", "v5e:1x1", "--decode", "--batch", "64", "--window", str(2**20), "--json"]
    (row,) = _rows(capsys, argv)
    assert row["fits"] is False and row["compile_error"].startswith("RESOURCE_EXHAUSTED")
    assert row["kv_cache_gb_per_device"] == pytest.approx(17.18, abs=0.01)
    assert "roofline_ms_per_frame" not in row
