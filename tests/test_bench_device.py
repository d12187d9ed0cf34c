"""launch/bench_device.py keeps working: its smoke mode runs every part at tiny sizes on the CPU, and
without a GPU the real run says so and exits 0 (no timings are asserted)."""

from tests.infer_helpers import load_launcher


def test_bench_device_smoke_and_no_gpu(capsys):
    bench = load_launcher("bench_device")
    assert bench.main([]) == 0
    assert "no GPU here" in capsys.readouterr().out
    assert bench.main(["--smoke"]) == 0
    out = capsys.readouterr().out
    for part in ("SMOKE", "conversations per device under 80 ms/frame (p99), int8", "mimi:", "train:", "tokens/s"):
        assert part in out, part
