"""Compile the train step ahead of time on CPU for a virtual device mesh and report what it needs:
memory per device (`compiled.memory_analysis()`) and FLOPs per step (`cost_analysis()`, against the
analytical model FLOPs), for each mesh / micro-batching / remat policy / attention chunk asked for.

XLA's cost analysis counts the body of a loop once, so the FLOPs come from the lowered step with the
backbone's layers unrolled and the batch as one micro-batch (the same arithmetic); the depformer's
layers stay a loop (counted once: a few percent of the total for flm7b).

    python launch/aot.py                                  # flm7b, 8 devices, 8192 frames, batch 256: a sweep
    python launch/aot.py --model tiny --devices 1 --seq 64 --batch 8 --mesh 1,1,1 --micro 1 --remat none --json

No accelerator is needed: the step is lowered with ShapeDtypeStructs carrying the mesh's shardings (the
same abstract state the trainer restores into) and compiled for `--devices` virtual CPU devices. CPU
buffer assignment is not a GPU's or TPU's, so read the numbers as an estimate of what fits.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="flm7b", help="a model config name (flm7b, demo, tiny)")
    p.add_argument("--devices", type=int, default=8, help="virtual devices of the mesh (default 8)")
    p.add_argument("--seq", type=int, default=8192, help="frames per sample (default 8192)")
    p.add_argument("--batch", type=int, default=256, help="global batch per optimizer step (default 256)")
    p.add_argument("--mesh", nargs="+", default=["1,8,1", "1,4,2", "1,2,4"], help="data,fsdp,tensor sizes to try")
    p.add_argument("--micro", nargs="+", type=int, default=[32, 64, 128], help="micro-batch counts to try")
    p.add_argument("--remat", nargs="+", default=["full"], help="remat policies to try")
    p.add_argument("--chunk", nargs="+", type=int, default=[0], help="attention chunks to try (0 = none)")
    p.add_argument("--dtype", default="bfloat16", help="compute dtype (parameters stay fp32)")
    p.add_argument("--device-memory-gb", type=float, default=80.0, help="what a device holds (default 80, an H100)")
    p.add_argument("--json", action="store_true", help="one JSON object per configuration instead of a table")
    return p.parse_args(argv)


def lower_step(model_name: str, mesh_sizes, micro: int, seq: int, batch: int, **model_settings):
    """The train step lowered from abstract inputs (no memory used), and its model config."""
    import jax
    import jax.numpy as jnp

    from flmjax.config import get_model_config
    from flmjax.sharding import make_mesh
    from flmjax.train.config import OptimizerConfig
    from flmjax.train.loss import LossCoefficients
    from flmjax.train.optimizer import make_optimizer
    from flmjax.train.state import abstract_state, batch_sharding, replicated
    from flmjax.train.step import jit_train_step, make_train_step

    model = get_model_config(model_name, param_dtype="float32", **model_settings)
    mesh = make_mesh(*mesh_sizes)
    optimizer = make_optimizer(OptimizerConfig())
    state = abstract_state(model, optimizer, mesh)
    shardings = jax.tree_util.tree_map(lambda a: a.sharding, state)
    columns = (batch, seq + 1, model.tokens.num_streams)
    batch_in = {
        "tokens": jax.ShapeDtypeStruct(columns, jnp.int32, sharding=batch_sharding(mesh)),
        "weights": jax.ShapeDtypeStruct(columns, jnp.float32, sharding=batch_sharding(mesh)),
    }
    lr = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated(mesh))
    step = jit_train_step(make_train_step(model, optimizer, LossCoefficients(), micro, mesh), shardings, mesh)
    return model, step.lower(state, batch_in, lr)


def measure(args: argparse.Namespace, mesh_sizes, micro: int, remat: str, chunk: int) -> dict:
    from flmjax.train.metrics import model_flops_per_step

    settings = dict(dtype=args.dtype, remat=remat, attention_chunk=chunk)
    model, lowered = lower_step(args.model, mesh_sizes, micro, args.seq, args.batch, **settings)
    started = time.perf_counter()
    mem = lowered.compile().memory_analysis()
    seconds = time.perf_counter() - started
    _, unrolled = lower_step(args.model, mesh_sizes, 1, args.seq, args.batch, scan_layers=False, **settings)
    cost = unrolled.cost_analysis()
    # Arguments (state + batch) and temporaries; donated outputs alias their arguments.
    per_device = (
        mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
    )
    return {
        "model": args.model,
        "mesh": "x".join(map(str, mesh_sizes)),
        "micro_batches": micro,
        "rows_per_device": args.batch // micro // (mesh_sizes[0] * mesh_sizes[1]),
        "remat": remat,
        "attention_chunk": chunk,
        "seq": args.seq,
        "batch": args.batch,
        "arguments_gb": mem.argument_size_in_bytes / 1e9,
        "temp_gb": mem.temp_size_in_bytes / 1e9,
        "per_device_gb": per_device / 1e9,
        "fits": per_device / 1e9 <= args.device_memory_gb,
        "xla_flops_per_step": float(cost.get("flops", 0.0)),  # the whole (unpartitioned) step
        "model_flops_per_step": model_flops_per_step(model, args.batch, args.seq),
        "compile_s": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:  # before JAX starts
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    meshes = [tuple(int(x) for x in m.split(",")) for m in args.mesh]
    bad = [m for m in meshes if len(m) != 3 or m[0] * m[1] * m[2] != args.devices]
    if bad:
        print(f"error: mesh {bad[0]} is not data,fsdp,tensor over {args.devices} devices", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{args.model}: batch {args.batch} x {args.seq} frames on {args.devices} devices; fits = at most "
              f"{args.device_memory_gb:g} GB per device")  # fmt: skip
        print(f"{'mesh':>7} {'micro':>5} {'rows/dev':>8} {'remat':>13} {'chunk':>5} {'args GB':>8} {'temp GB':>8} "
              f"{'total GB':>8} {'fits':>4} {'XLA TFLOP':>9} {'model TFLOP':>11} {'compile s':>9}")  # fmt: skip
    for mesh_sizes, micro, remat, chunk in itertools.product(meshes, args.micro, args.remat, args.chunk):
        if args.batch % micro or (args.batch // micro) % (mesh_sizes[0] * mesh_sizes[1]):
            continue  # a micro-batch must split over data x fsdp
        row = measure(args, mesh_sizes, micro, remat, chunk)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{row['mesh']:>7} {micro:>5} {row['rows_per_device']:>8} {remat:>13} {chunk:>5} {row['arguments_gb']:>8.1f} "
                  f"{row['temp_gb']:>8.1f} {row['per_device_gb']:>8.1f} {'yes' if row['fits'] else 'no':>4} "
                  f"{row['xla_flops_per_step'] / 1e12:>9.1f} {row['model_flops_per_step'] / 1e12:>11.1f} "
                  f"{row['compile_s']:>9.0f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
