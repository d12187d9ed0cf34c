"""Streaming Mimi, flmjax vs kyutai's `moshi` package: time per 80 ms frame (encode + decode), same weights.

Both run the same random weights (moshi's model with randomised codebooks, handed to flmjax through a
kyutai-named safetensors file) on the same audio, frame by frame, taking turns in blocks of frames.
Compilation and the first frames are excluded; medians over frames; the codes of both are compared.

    python launch/bench_mimi.py [--frames 40] [--batch-sizes 1 8]
    taskset -c 0 python launch/bench_mimi.py   # both on one core: steadier when other jobs share the CPU
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("NO_TORCH_COMPILE", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from flmjax.mimi import Mimi  # noqa: E402

WARMUP_FRAMES = 3  # compilation happens in the first frame; a couple more to settle
BLOCK = 5  # frames each contender runs before handing over


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS", "XLA_FLAGS")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        return "unknown"
    return f"{names[0]} ({len(names)} logical CPUs on the host)" if names else "unknown"


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Best of `repeats` copies of a `megabytes` buffer: GB/s read + written (a single-thread probe)."""
    src = np.ones(megabytes * 2**20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def environment() -> list[str]:
    """What the figures depend on: the CPU, the cores this process may use, thread settings, XLA flags,
    memory bandwidth and how loaded the machine is."""
    env = ", ".join(f"{name}={os.environ[name]!r}" for name in THREAD_VARS if name in os.environ) or "none set"
    return [
        f"cpu: {cpu_model()}; usable by this process: {len(os.sched_getaffinity(0))} "
        f"(os.sched_getaffinity); load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}",
        f"threads: torch {torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op; "
        f"environment: {env}",
        f"memory bandwidth probe (numpy copy of 256 MB, one thread): {memory_bandwidth_gbs():.1f} GB/s",
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}",
    ]


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
            module._embedding = None  # type: ignore[assignment]  # the cached embedding_sum / cluster_usage
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


def bench(reference, mimi: Mimi, batch: int, frames: int) -> dict[str, float | bool]:
    """Median seconds per frame of moshi and of flmjax (fused step, MimiStream); codes compared.

    Every contender streams the same frames in order, keeping its own state; they take turns in blocks
    of BLOCK frames so that a change in machine load hits all of them alike. moshi alternates between
    torch's default thread count and one thread from block to block and is credited with the faster.
    """
    size = mimi.frame_size
    audio = test_audio(batch, frames + WARMUP_FRAMES, size, mimi.sample_rate)
    chunks = [audio[..., i * size : (i + 1) * size] for i in range(frames + WARMUP_FRAMES)]
    codes: dict[str, list[np.ndarray]] = {"moshi": [], "fused": []}

    def moshi_step(frame: np.ndarray) -> None:
        out = reference.encode(torch.from_numpy(frame))
        reference.decode(out)
        codes["moshi"].append(out.numpy())

    def fused(params, state, frame):
        state, codes = mimi.encode_step(params, state, frame)
        state, pcm = mimi.decode_step(params, state, codes)
        return state, codes, pcm

    jitted = jax.jit(fused, donate_argnums=1)
    state = mimi.init_state(batch)

    def fused_step(frame: np.ndarray) -> None:
        nonlocal state
        state, out, pcm = jitted(mimi.params, state, jax.device_put(frame))
        pcm.block_until_ready()
        codes["fused"].append(np.asarray(out))

    stream = mimi.streaming(batch)
    contenders = {
        "moshi": moshi_step,
        "fused": fused_step,
        "stream": lambda f: stream.decode(stream.encode(f)).block_until_ready(),
    }
    thread_counts = [torch.get_num_threads(), 1]
    times: dict[str, list[float]] = {}
    with torch.no_grad(), reference.streaming(batch):
        for block, first in enumerate(range(0, len(chunks), BLOCK)):
            for name, step in contenders.items():
                threads = thread_counts[block % 2] if name == "moshi" else None
                key = f"moshi/{threads}" if threads else name
                torch.set_num_threads(threads or thread_counts[0])
                time.sleep(0.05)  # let the other library's threads go idle
                for i in range(first, min(first + BLOCK, len(chunks))):
                    start = time.perf_counter()
                    step(chunks[i])
                    if i >= WARMUP_FRAMES:
                        times.setdefault(key, []).append(time.perf_counter() - start)
    torch.set_num_threads(thread_counts[0])
    medians = {key: statistics.median(values) for key, values in times.items()}
    return {
        "reference": min(value for key, value in medians.items() if key.startswith("moshi/")),
        "fused": medians["fused"],
        "stream": medians["stream"],
        "codes_match": all((a == b).all() for a, b in zip(codes["fused"], codes["moshi"])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=40, help="timed frames per batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args(argv)

    reference = reference_mimi()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mimi.safetensors")
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, path)
        mimi = Mimi.from_pretrained(path)

    threads = " or ".join(str(n) for n in sorted({torch.get_num_threads(), 1}, reverse=True))
    print("Mimi streaming encode+decode per 80 ms frame. What the numbers depend on:")
    for line in environment():
        print(f"  {line}")
    print(
        f"moshi: the faster of {threads} torch threads; median of {args.frames} frames after {WARMUP_FRAMES} warm-up,"
    )
    print(f"contenders taking turns every {BLOCK} frames in this one process (other jobs' load falls on all alike)")
    header = (
        f"{'batch':>5} | {'moshi ms':>9} | {'flmjax fused ms':>15} {'ratio':>6} | {'flmjax stream ms':>16} "
        f"{'ratio':>6} | {'flmjax frames/s':>15} | codes = moshi"
    )
    print(header)
    print("-" * len(header))
    for batch in args.batch_sizes:
        r = bench(reference, mimi, batch, args.frames)
        ref = r["reference"]
        print(
            f"{batch:>5} | {ref * 1e3:>9.1f} | {r['fused'] * 1e3:>15.1f} {r['fused'] / ref:>6.2f} | "
            f"{r['stream'] * 1e3:>16.1f} {r['stream'] / ref:>6.2f} | {batch / r['fused']:>15.1f} | {r['codes_match']}"
        )
    print(
        "fused: encode_step + decode_step in one jitted, state-donating program; stream: MimiStream.encode then .decode"
    )
    print("real time = 80 ms per frame; frames/s counts every stream of the batch;")
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes slow both sides)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
