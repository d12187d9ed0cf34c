"""Streaming Mimi, flmjax vs kyutai's `moshi` package: time per 80 ms frame (encode + decode), same weights.

Both run the same random weights (moshi's model with randomised codebooks, handed to flmjax through a
kyutai-named safetensors file) on the same audio, frame by frame (one after the other: interleaving the
two libraries' thread pools frame by frame slows both). Compilation and the first frames are excluded;
medians over frames; the codes of both are compared.

    python launch/bench_mimi.py [--frames 40] [--batch-sizes 1 8]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import tempfile
import time
from typing import Iterator

os.environ.setdefault("NO_TORCH_COMPILE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from flmjax.mimi import Mimi  # noqa: E402

WARMUP_FRAMES = 3


def reference_mimi(seed: int = 0):  # -> moshi.models.compression.MimiModel
    """moshi's Mimi with random weights and random codebooks (they start at zero otherwise)."""
    from moshi.models import loaders

    torch.manual_seed(seed)
    model = loaders.get_mimi(None, device="cpu")
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("embedding_sum"):
                buffer.normal_(0.0, 0.01)
    for module in model.modules():
        if hasattr(module, "_embedding"):
            module._embedding = None  # cached embedding_sum / cluster_usage
    return model


def test_audio(batch: int, frames: int, frame_size: int, sample_rate: int) -> np.ndarray:
    """[batch, 1, frames * frame_size]: tones, a chirp and noise, different per stream."""
    t = np.arange(frames * frame_size) / sample_rate
    rng = np.random.default_rng(0)
    rows = [
        0.3 * np.sin(2 * np.pi * (110 + 40 * b) * t)
        + 0.2 * np.sin(2 * np.pi * (200 + 400 * t) * t)
        + 0.05 * rng.standard_normal(t.shape)
        for b in range(batch)
    ]
    return np.stack(rows)[:, None].astype(np.float32)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def time_frames(step, audio: np.ndarray, frame_size: int) -> list[float]:
    """Seconds per frame of `step(frame)`, warm-up frames dropped."""
    times = []
    for i in range(audio.shape[-1] // frame_size):
        frame = audio[..., i * frame_size : (i + 1) * frame_size]
        start = time.perf_counter()
        step(frame)
        times.append(time.perf_counter() - start)
    return times[WARMUP_FRAMES:]


def bench(reference, mimi: Mimi, batch: int, frames: int) -> dict[str, float | bool]:
    """Median seconds per frame of: moshi, flmjax fused step, flmjax MimiStream; codes compared."""
    size = mimi.frame_size
    audio = test_audio(batch, frames + WARMUP_FRAMES, size, mimi.sample_rate)

    reference_codes = []

    def reference_step(frame: np.ndarray) -> None:
        codes = reference.encode(torch.from_numpy(frame))
        reference.decode(codes)
        reference_codes.append(codes.numpy())

    # moshi gets the better of torch's default thread count and one thread: on a busy machine its
    # OpenMP threads wait on each other and one thread is many times faster.
    reference_time = math.inf
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        with torch.no_grad(), reference.streaming(batch), torch_threads(threads):
            reference_codes.clear()
            reference_time = min(reference_time, statistics.median(time_frames(reference_step, audio, size)))

    def fused(params, state, frame):
        state, codes = mimi.encode_step(params, state, frame)
        state, pcm = mimi.decode_step(params, state, codes)
        return state, codes, pcm

    jitted = jax.jit(fused, donate_argnums=1)
    state = mimi.init_state(batch)
    fused_codes = []

    def fused_step(frame: np.ndarray) -> None:
        nonlocal state
        state, codes, pcm = jitted(mimi.params, state, jax.device_put(frame))
        pcm.block_until_ready()
        fused_codes.append(codes)

    fused_times = time_frames(fused_step, audio, size)
    stream = mimi.streaming(batch)
    stream_times = time_frames(lambda frame: stream.decode(stream.encode(frame)).block_until_ready(), audio, size)
    codes_match = all((np.asarray(a) == b).all() for a, b in zip(fused_codes, reference_codes))
    return {
        "reference": reference_time,
        "fused": statistics.median(fused_times),
        "stream": statistics.median(stream_times),
        "codes_match": codes_match,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=40, help="timed frames per batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    reference = reference_mimi()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mimi.safetensors")
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
        mimi = Mimi.from_pretrained(path)

    print(f"Mimi streaming encode+decode per 80 ms frame on {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f});")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} (best of {torch.get_num_threads()} and 1 threads);")
    print(f"median of {args.frames} frames after {WARMUP_FRAMES} warm-up")
    header = f"{'batch':>5} | {'moshi ms':>9} | {'flmjax fused ms':>15} {'ratio':>6} | {'flmjax stream ms':>16} {'ratio':>6} | {'flmjax frames/s':>15} | codes = moshi"
    print(header)
    print("-" * len(header))
    for batch in args.batch_sizes:
        r = bench(reference, mimi, batch, args.frames)
        print(
            f"{batch:>5} | {r['reference'] * 1e3:>9.1f} | {r['fused'] * 1e3:>15.1f} {r['fused'] / r['reference']:>6.2f} | "
            f"{r['stream'] * 1e3:>16.1f} {r['stream'] / r['reference']:>6.2f} | {batch / r['fused']:>15.1f} | {r['codes_match']}"
        )
    print("fused: encode_step + decode_step in one jitted, state-donating program; stream: MimiStream.encode then .decode")
    print("real time = 80 ms per frame; frames/s counts every stream of the batch;")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes slow both sides)")


if __name__ == "__main__":
    main()
