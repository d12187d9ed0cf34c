"""Mimi encoding throughput for corpus preparation: hours of audio encoded per hour per device.

    python launch/bench_prepare.py                        # CPU: batch sizes swept (the machine's own cores)
    python launch/bench_prepare.py --tpu v5e:2x2 --tpu-batch 64 256 --cpu-batch   # + the TPU roofline only

CPU: `flmjax.data.encoding.encode_batched` (what preparation runs: 2-second streaming chunks, clips
sorted by length) on `--seconds` of random audio per batch row, after one warm-up batch that compiles;
the kyutai codec's architecture with random weights (the arithmetic is the same). The CPU time the process
got per second of wall time is printed beside each row: on a machine shared with other jobs it is below
the core count, and the rates are lower than the machine can do alone; `audio s/CPU s` (seconds of audio
per second of CPU time the process got) is the contention-free figure.

TPU: the same streaming step (`Mimi.encode_frames`, one 2-second chunk of `--tpu-batch` rows on one chip)
compiled ahead of time for a TPU topology with libtpu (no TPU needed: TPU_SKIP_MDS_QUERY=1), its XLA cost
analysis (FLOPs, bytes accessed) against the chip's peak compute and memory bandwidth: a roofline bound,
not a measurement (fusion, padding, and the host feeding audio can only make it slower).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

MILLION_HOURS = 1e6


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_cpu(batches: list[int], seconds: float) -> list[dict]:
    import numpy as np

    from flmjax.data.encoding import encode_batched
    from flmjax.mimi import Mimi

    mimi = Mimi.random(seed=0)
    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        clips = [(0.1 * rng.standard_normal(int(seconds * 24_000))).astype(np.float32) for _ in range(batch)]
        start = time.perf_counter()
        encode_batched(mimi, [c[: 2 * 24_000] for c in clips], batch_size=batch)  # compiles this batch's shape
        compile_s = time.perf_counter() - start
        load, cpu, start = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
        encode_batched(mimi, clips, batch_size=batch)
        wall = time.perf_counter() - start
        rows.append({"batch": batch, "audio_s": batch * seconds, "wall_s": wall, "compile_s": compile_s,
                     "realtime_x": batch * seconds / wall, "cpu_per_wall": (cpu_seconds() - cpu) / wall,
                     "load_avg_1min": load})  # fmt: skip
    return rows


def bench_tpu(topology: str, batches: list[int]) -> list[dict]:
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # other compiles on this machine hold libtpu's lock
    import jax
    import jax.numpy as jnp

    from flmjax.aot.chips import chip_of_topology, topology_devices
    from flmjax.data.encoding import ENCODE_CHUNK_FRAMES
    from flmjax.mimi import Mimi
    from flmjax.tokens import SAMPLES_PER_FRAME

    chip = topology.split(":")[0]
    spec = chip_of_topology(topology)  # the peaks aot.py uses too
    peak_flops, peak_bytes = spec.bf16_flops, spec.hbm_bytes_per_s
    device = topology_devices(topology)[0]
    one_chip = jax.sharding.SingleDeviceSharding(device)
    mimi = Mimi.random(seed=0)
    abstract = lambda tree: jax.tree_util.tree_map(  # noqa: E731
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_chip), tree
    )
    params = abstract(mimi.params)
    chunk = ENCODE_CHUNK_FRAMES * SAMPLES_PER_FRAME
    rows = []
    for batch in batches:
        state = abstract(jax.eval_shape(lambda b=batch: mimi.init_state(b))["encode"])
        frame = jax.ShapeDtypeStruct((batch, 1, chunk), jnp.float32, sharding=one_chip)
        start = time.perf_counter()
        compiled = mimi.encode_frames.lower(params, state, frame).compile()
        compile_s = time.perf_counter() - start
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        if not cost:
            raise SystemExit("bench_prepare: the compiler gave no cost analysis for the Mimi encoder")
        flops, moved = float(cost["flops"]), float(cost["bytes accessed"])
        step_s = max(flops / peak_flops, moved / peak_bytes)
        audio_s = batch * chunk / 24_000
        rows.append({"chip": chip, "batch": batch, "flops": flops, "bytes": moved, "compute_s": flops / peak_flops,
                     "memory_s": moved / peak_bytes, "bound": "memory" if moved / peak_bytes > flops / peak_flops
                     else "compute", "realtime_x": audio_s / step_s, "compile_s": compile_s})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu-batch", nargs="*", type=int, default=[1, 2, 4, 8, 16], help="CPU batch sizes to sweep")
    p.add_argument("--seconds", type=float, default=20.0, help="audio per batch row on the CPU (default 20)")
    p.add_argument("--tpu", help="a TPU topology to compile for, e.g. v5e:2x2 (default: no TPU roofline)")
    p.add_argument("--tpu-batch", nargs="+", type=int, default=[64], help="rows per chip in the TPU roofline")
    p.add_argument("--chips", nargs="+", type=int, default=[1, 64, 256], help="chip counts for the million-hour row")
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args(argv)
    out: dict = {"cores": len(os.sched_getaffinity(0))}
    if args.cpu_batch:
        out["cpu"] = bench_cpu(args.cpu_batch, args.seconds)
        print(f"CPU, {out['cores']} cores (one device), {args.seconds:.0f} s of audio per row")
        print(
            f"{'batch':>5s} {'h/h/device':>11s} {'compile s':>10s} {'CPU s/s':>8s} {'audio s/CPU s':>14s} {'load':>6s}"
        )
        for r in out["cpu"]:
            print(f"{r['batch']:5d} {r['realtime_x']:11.1f} {r['compile_s']:10.1f} {r['cpu_per_wall']:8.2f} "
                  f"{r['realtime_x'] / r['cpu_per_wall']:14.1f} {r['load_avg_1min']:6.1f}")  # fmt: skip
        best = max(r["realtime_x"] for r in out["cpu"])
        print(f"a million hours at {best:.1f}x real time: {MILLION_HOURS / best / 24 / 365:.0f} device-years")
    if args.tpu:
        out["tpu"] = bench_tpu(args.tpu, args.tpu_batch)
        print(f"TPU roofline ({args.tpu}, one chip; streaming step of 2 s per row)")
        print(f"{'batch':>5s} {'GFLOP':>8s} {'GB moved':>9s} {'compute ms':>11s} {'memory ms':>10s} {'bound':>8s} "
              f"{'x real time':>12s}")  # fmt: skip
        for r in out["tpu"]:
            print(f"{r['batch']:5d} {r['flops'] / 1e9:8.0f} {r['bytes'] / 1e9:9.1f} {r['compute_s'] * 1e3:11.2f} "
                  f"{r['memory_s'] * 1e3:10.2f} {r['bound']:>8s} {r['realtime_x']:12.0f}")  # fmt: skip
        best = max(r["realtime_x"] for r in out["tpu"])
        for n in args.chips:
            hours = MILLION_HOURS / (best * n)
            print(
                f"a million hours on {n} {out['tpu'][0]['chip']} chips: at best {hours:,.1f} h ({hours / 24:.2f} days)"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
