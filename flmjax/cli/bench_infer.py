"""Per-frame latency of streaming decoding: flmjax's one-program frame step vs a PyTorch loop in the release's style.

Both decode the same small random checkpoint (written once, loaded by each side), with the release
server's sampling settings, for batches of independent streams. The PyTorch loop is the release's
shape (flmjax/reference/torch_step_loop.py): transformers' growing DynamicCache for the backbone and the
depformer re-run over all previous codes for each of the 8 codes, eager, one op at a time. flmjax runs
the backbone step, the 8 depformer steps (lax.scan) and the sampling as one compiled program on a
fixed-size ring cache. Latency is per 80 ms frame (one step of the whole batch), compilation excluded;
frames/s counts stream-frames (batch x steps per second). Target: flmjax at most 1/4 of PyTorch's time.

    python launch/bench_infer.py [--config tiny|demo] [--frames 40] [--batches 1 8 32]

(installed: `flmjax-bench-infer`). The comparison needs torch (requirements-test.txt); `--growth` does not.

`--growth` instead times flmjax alone at growing conversation lengths (the ring filled up to each
length; keys are those of a fresh cache, only their positions matter to the cost), with the ring read
in blocks (the default) and whole (`decode_block=0`), taking turns in one run:

    python launch/bench_infer.py --growth [--config tiny] [--window 8192] [--batches 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import numpy as np

from flmjax import FLMAudio
from flmjax.config import get_model_config
from flmjax.errors import FlmjaxError
from flmjax.infer.decoder import Decoder
from flmjax.infer.offline import aged_state, latency_stats, timed_frames
from flmjax.infer.sampling import SamplingSettings
from flmjax.reference import require_torch

if TYPE_CHECKING:  # torch is a test dependency: imported only where the comparison runs
    from flmjax.reference.flm_audio_torch import TorchFLMAudio

TARGET_RATIO = 0.25


FrameStep = Callable[[int], np.ndarray]  # frame i -> the frame on the host


def bench_flmjax(model: FLMAudio, codes: np.ndarray) -> dict[str, float]:
    batch, frames = codes.shape[:2]
    decoder = Decoder(model, batch)
    state = decoder.init_state(SamplingSettings())
    state, out = decoder.step(state, codes[:, 0])  # compiles
    jax.block_until_ready(out)
    state = decoder.init_state(SamplingSettings())

    def step(i: int) -> np.ndarray:
        nonlocal state
        state, out = decoder.step(state, codes[:, i])
        return np.asarray(out.frame)  # the host gets every frame, as a server would

    return latency_stats(timed_frames(step, frames))


def stepper(decoder: Decoder, codes: np.ndarray, length: int) -> FrameStep:
    """A frame step (host gets the frame) of `decoder` from a conversation `length` frames old, compiled."""
    state = aged_state(decoder.init_state(SamplingSettings()), length)

    def step(i: int) -> np.ndarray:
        nonlocal state
        state, out = decoder.step(state, codes[:, i % codes.shape[1]])
        return np.asarray(out.frame)

    step(0)  # the first call compiles (once per decoder: lengths never recompile)
    return step


def from_frame(step: FrameStep, start: int) -> FrameStep:
    """`step` with frame numbers counted from `start`."""
    return lambda i: step(start + i)


def interleaved_p50(steps: list[FrameStep], frames: int, turn: int = 4) -> list[float]:
    """Median ms/frame of each step function, taking turns every `turn` frames (a loaded machine's
    load then falls on every contender alike)."""
    times: list[list[float]] = [[] for _ in steps]
    for start in range(0, frames, turn):
        for step, out in zip(steps, times):
            out.extend(timed_frames(from_frame(step, start), min(turn, frames - start)))
    return [latency_stats(t)["p50_ms"] for t in times]


def bench_growth(model: FLMAudio, window: int, batches: list[int], frames: int) -> None:
    """ms/frame p50 at growing conversation lengths, blocked ring reads vs whole-ring reads."""
    blocked = model
    whole = FLMAudio(model.config.with_numerics(decode_block=0), model.params)
    lengths = sorted({0, window // 16, window // 8, window // 4, window // 2, window - 1, window, 2 * window})
    print(
        f"window {window} frames, decode_block {model.config.numerics.decode_block}; p50 of {frames} frames per cell, "
        "the two contenders taking turns every 4 frames"
    )
    print(f"{'batch':>5} | {'length':>6} | {'filled':>6} | {'blocked ms':>10} | {'whole ms':>8} | {'ratio':>5}")
    for batch in batches:
        decoders = [Decoder(m, batch, window=window) for m in (blocked, whole)]
        codes = np.random.default_rng(batch).integers(0, 2048, (batch, frames, 8)).astype(np.int32)
        for length in lengths:
            p50 = interleaved_p50([stepper(d, codes, length) for d in decoders], frames)
            print(
                f"{batch:>5} | {length:>6} | {min(length, window):>6} | {p50[0]:>10.2f} | {p50[1]:>8.2f} "
                f"| {p50[0] / p50[1]:>5.2f}"
            )
        assert all(d._step._cache_size() == 1 for d in decoders)  # one program for every length


def bench_torch(torch_model: TorchFLMAudio, config: dict, codes: np.ndarray) -> dict[str, float]:
    import torch

    from flmjax.reference.torch_step_loop import TorchStepLoop

    batch, frames = codes.shape[:2]
    user = torch.from_numpy(codes).long()
    TorchStepLoop(torch_model, config, batch, greedy=False).step(user[:, 0])  # first-call allocations
    loop = TorchStepLoop(torch_model, config, batch, greedy=False)
    return latency_stats(timed_frames(lambda i: loop.step(user[:, i]), frames))


def compare(config_name: str, frames: int, batches: list[int], torch_threads: int) -> None:
    """flmjax against the PyTorch loop on one random checkpoint: the table and the target's verdict."""
    require_torch("bench_infer (all but --growth)")
    import torch
    from safetensors.torch import load_file

    from flmjax.reference.flm_audio_torch import TorchFLMAudio

    torch.set_num_threads(torch_threads)
    torch.manual_seed(0)
    devices = ", ".join(sorted({d.platform for d in jax.devices()}))
    print(f"device: jax {devices}; torch cpu ({torch.get_num_threads()} threads); CPU only here, no GPU in this run")
    with tempfile.TemporaryDirectory() as ckpt:
        FLMAudio.init(get_model_config(config_name), seed=0).save_pretrained(ckpt)
        model = FLMAudio.from_pretrained(ckpt)
        with open(os.path.join(ckpt, "config.json")) as f:
            config = json.load(f)
        torch_model = TorchFLMAudio(config)
        torch_model.load_state_dict(load_file(os.path.join(ckpt, "model.safetensors")), strict=True)
        torch_model.eval()
    print(f"checkpoint: random '{config_name}' (fp32), {frames} frames per run, release sampling settings")
    header = (
        f"{'batch':>5} | {'flmjax ms/frame mean p50 p99':>30} | {'pytorch ms/frame mean p50 p99':>31} "
        f"| {'ratio p50':>9} | {'ratio mean':>10} | {'flmjax fr/s':>11} | {'pytorch fr/s':>12}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for batch in batches:
        codes = np.random.default_rng(batch).integers(0, 2048, (batch, frames, 8)).astype(np.int32)
        ours, ref = bench_flmjax(model, codes), bench_torch(torch_model, config, codes)
        ratio = ours["p50_ms"] / ref["p50_ms"]
        rows.append(ratio)
        print(
            f"{batch:>5} | {ours['mean_ms']:>10.2f} {ours['p50_ms']:>8.2f} {ours['p99_ms']:>8.2f}   "
            f"| {ref['mean_ms']:>10.2f} {ref['p50_ms']:>8.2f} {ref['p99_ms']:>8.2f}    | {ratio:>9.3f} "
            f"| {ours['mean_ms'] / ref['mean_ms']:>10.3f} | {batch * 1e3 / ours['mean_ms']:>11.0f} "
            f"| {batch * 1e3 / ref['mean_ms']:>12.0f}"
        )
    worst = max(rows)
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    print(f"target: flmjax <= {TARGET_RATIO:.2f} x PyTorch per frame (median); worst ratio {worst:.3f}: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="named ModelConfig of the random checkpoint")
    parser.add_argument("--frames", type=int, default=40, help="timed frames per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    # The reference loop is a long chain of small ops: extra intra-op threads only spin against each
    # other (and other processes) on a small CPU; one thread is its fastest setting here.
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--growth", action="store_true", help="flmjax alone: ms/frame vs conversation length")
    parser.add_argument("--window", type=int, default=8192, help="ring window of --growth")
    args = parser.parse_args(argv)
    try:
        if args.growth:
            print(
                f"device: jax {', '.join(sorted({d.platform for d in jax.devices()}))}; random '{args.config}' (fp32)"
            )
            bench_growth(FLMAudio.init(args.config, seed=0), args.window, args.batches, args.frames)
        else:
            compare(args.config, args.frames, args.batches, args.torch_threads)
    except FlmjaxError as e:  # torch missing, an unknown --config: one line
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
