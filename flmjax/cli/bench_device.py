"""The device benchmark: flm7b decoding, Mimi streaming and a train step on one GPU, in one run (<= 8 min).

For random flm7b weights (bf16, and the same weights int8, see flmjax.model.quant):
- decode ms/frame p50/p99 at batch 1/8/32/64, one whole frame step (backbone, 8 depformer steps,
  sampling with the release's settings, the frame fetched to the host) on a conversation whose ring is
  full (the 8192-frame window: the worst case; `--length` sets another age);
- conversations per GPU under 80 ms: the largest measured batch whose p99 frame time stays below a
  frame's 80 ms;
- Mimi streaming frames/s (`Mimi.streaming(B)`, encode then decode of every 80 ms frame; random weights);
- train-step tokens/s and MFU of a reduced-depth flm7b (`--train-layers`, default 2 of 28; every layer,
  the text head and the depformer the real size) at 8192 frames, batch 1, remat full, fp32 master
  weights with bf16 compute; MFU = model FLOPs (flmjax.train.metrics) / time / the chip's bf16 peak.

Without a GPU it says so and exits 0. `--smoke` runs every part at tiny sizes on whatever device there
is (the test suite runs it so the script keeps working).

    python launch/bench_device.py            # on a GPU machine
    python launch/bench_device.py --smoke    # tiny, CPU: seconds
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

FRAME_MS = 80.0
# Dense bf16 peak FLOP/s by device kind (vendor data sheets, SXM parts).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def gpu_devices() -> list:
    try:
        return jax.devices("gpu")
    except RuntimeError:
        return []


def peak_flops(device) -> float | None:
    kind = device.device_kind
    return next((peak for name, peak in PEAK_BF16.items() if name in kind), None)


def bench_decode(config, batches: list[int], frames: int, length: int | None, window: int | None) -> None:
    from flmjax import FLMAudio
    from flmjax.infer.decoder import Decoder
    from flmjax.infer.offline import aged_state, latency_stats, timed_frames
    from flmjax.infer.sampling import SamplingSettings

    started = time.perf_counter()
    bf16 = FLMAudio.init(config.with_numerics(dtype="bfloat16", param_dtype="bfloat16"), seed=0)
    models = {"bf16": bf16, "int8": bf16.quantized()}
    window = window or config.max_position_embeddings
    age = window if length is None else length
    build_s = time.perf_counter() - started
    print(f"decode: random weights, window {window}, conversations {age} frames old ({build_s:.0f} s to build)")
    print(f"{'batch':>5} | {'bf16 p50':>8} {'p99':>7} | {'int8 p50':>8} {'p99':>7} | {'int8/bf16':>9} | compile s")
    best = {name: 0 for name in models}
    for batch in batches:
        row, compile_s = {}, 0.0
        codes = np.random.default_rng(batch).integers(0, 2048, (batch, frames, 8)).astype(np.int32)
        for name, model in models.items():
            decoder = Decoder(model, batch, window=window)
            state = aged_state(decoder.init_state(SamplingSettings()), age)
            t0 = time.perf_counter()
            state, out = decoder.step(state, codes[:, 0])
            np.asarray(out.frame)
            compile_s += time.perf_counter() - t0

            def step(i: int, decoder=decoder, codes=codes):
                nonlocal state
                state, out = decoder.step(state, codes[:, i])
                return np.asarray(out.frame)

            row[name] = latency_stats(timed_frames(step, frames))
            del decoder, state
            if row[name]["p99_ms"] < FRAME_MS:
                best[name] = batch
        b, q = row["bf16"], row["int8"]
        print(
            f"{batch:>5} | {b['p50_ms']:>8.2f} {b['p99_ms']:>7.2f} | {q['p50_ms']:>8.2f} {q['p99_ms']:>7.2f} "
            f"| {q['p50_ms'] / b['p50_ms']:>9.2f} | {compile_s:>5.0f}"
        )
    for name, batch in best.items():
        more = " (the largest measured)" if batch == max(batches) else ""
        print(f"conversations per device under {FRAME_MS:.0f} ms/frame (p99), {name}: {batch}{more}")


def _codec_frame(stream, pcm: np.ndarray, frame: int) -> jax.Array:
    """One frame through the streaming codec: encode then decode (the frame index is unused)."""
    return stream.decode(stream.encode(pcm))


def bench_mimi(batches: list[int], frames: int, smoke: bool) -> None:
    from flmjax.infer.offline import latency_stats, timed_frames
    from flmjax.mimi import Mimi, MimiConfig

    # The smoke run keeps Mimi's frame geometry with tiny layers (it compiles in seconds).
    tiny = MimiConfig(dimension=32, n_filters=4, num_heads=2, num_layers=1, dim_feedforward=64, codebook_dim=16)
    mimi = Mimi.random(seed=0, config=tiny if smoke else MimiConfig())
    print("mimi: Mimi.streaming(B), encode + decode per 80 ms frame, random weights")
    for batch in batches:
        stream = mimi.streaming(batch)
        pcm = np.random.default_rng(batch).uniform(-0.5, 0.5, (batch, 1, mimi.frame_size)).astype(np.float32)
        stream.decode(stream.encode(pcm)).block_until_ready()  # compiles
        stats = latency_stats(timed_frames(functools.partial(_codec_frame, stream, pcm), frames))
        print(
            f"  batch {batch:>3}: p50 {stats['p50_ms']:.2f} ms/frame, {batch * 1e3 / stats['p50_ms']:.0f} frames/s "
            f"({batch * FRAME_MS / stats['p50_ms']:.1f}x real time)"
        )


def bench_train(config, seq: int, steps: int, device) -> None:
    from flmjax.sharding import make_mesh
    from flmjax.train.config import OptimizerConfig
    from flmjax.train.loss import LossCoefficients
    from flmjax.train.metrics import model_flops_per_step
    from flmjax.train.optimizer import make_optimizer
    from flmjax.train.state import random_state
    from flmjax.train.step import jit_train_step, make_train_step

    config = config.with_numerics(dtype="bfloat16", param_dtype="float32", remat="full")
    mesh = make_mesh(1, 1, 1)
    optimizer = make_optimizer(OptimizerConfig())
    state = random_state(config, optimizer, mesh, seed=0)
    shardings = jax.tree_util.tree_map(lambda a: a.sharding, state)
    step = jit_train_step(make_train_step(config, optimizer, LossCoefficients(), 1, mesh), shardings, mesh)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 2048, (1, seq + 1, config.tokens.num_streams)).astype(np.int32)
    tokens[..., 0] = rng.integers(0, config.vocab_size, (1, seq + 1))
    batch = {"tokens": jnp.asarray(tokens), "weights": jnp.ones(tokens.shape, jnp.float32)}
    lr = jnp.float32(1e-5)
    t0 = time.perf_counter()
    state, metrics = step(state, batch, lr)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = step(state, batch, lr)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    flops = model_flops_per_step(config, 1, seq)
    peak = peak_flops(device)
    mfu = f"{flops / seconds / peak:.1%} of {peak / 1e12:.0f} TFLOP/s" if peak else "n/a (peak unknown)"
    print(
        f"train: {config.num_layers}-layer flm7b-shaped, {seq} frames, batch 1, remat full: "
        f"{seconds * 1e3:.0f} ms/step "
        f"(median of {steps}; compile {compile_s:.0f} s), {seq / seconds:.0f} tokens/s, MFU {mfu}, "
        f"loss {float(metrics['loss']):.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on any device (the test suite runs it)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64], help="decode batch sizes")
    parser.add_argument("--frames", type=int, default=50, help="timed decode frames per cell")
    parser.add_argument("--length", type=int, default=None, help="conversation age in frames (default: the window)")
    parser.add_argument("--mimi-batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--train-layers", type=int, default=2, help="backbone layers of the train step (28 real)")
    parser.add_argument("--train-seq", type=int, default=8192)
    parser.add_argument("--skip", nargs="*", default=[], choices=("decode", "mimi", "train"))
    args = parser.parse_args(argv)

    from flmjax.config import get_model_config

    gpus = gpu_devices()
    if args.smoke:
        device = jax.devices()[0]
        decode_config, train_config = get_model_config("tiny"), get_model_config("tiny")
        batches, frames, window, mimi_batches, seq = [1], 2, 16, [1], 8
    elif not gpus:
        platforms = ", ".join(sorted({d.platform for d in jax.devices()}))
        print(f"bench_device: no GPU here (jax sees: {platforms}); nothing measured. Run it on a GPU machine.")
        return 0
    else:
        device = gpus[0]
        decode_config = get_model_config("flm7b")
        train_config = get_model_config("flm7b", num_layers=args.train_layers)
        batches, frames, window, mimi_batches, seq = args.batches, args.frames, None, args.mimi_batches, args.train_seq
    memory = (device.memory_stats() or {}).get("bytes_limit", 0) / 2**30 if device.platform == "gpu" else 0
    held = f", {memory:.0f} GiB" if memory else ""
    smoke = "; SMOKE: tiny sizes, the numbers mean nothing" if args.smoke else ""
    print(f"device: {device.device_kind} ({device.platform}{held}); jax {jax.__version__}", end="")
    print(f"; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}{smoke}")
    started = time.perf_counter()
    if "decode" not in args.skip:
        bench_decode(decode_config, batches, frames, args.length if not args.smoke else None, window)
    if "mimi" not in args.skip:
        bench_mimi(mimi_batches, frames if args.smoke else 50, args.smoke)
    if "train" not in args.skip:
        bench_train(train_config, seq, 1 if args.smoke else 5, device)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
