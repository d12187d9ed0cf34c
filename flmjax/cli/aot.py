"""Compile the train step (or the decode frame program) ahead of time and report what it needs.

Without `--topology`: the train step compiled on CPU for `--devices` virtual devices, memory per device
(`compiled.memory_analysis()`) and FLOPs per step (`cost_analysis()` of the lowered step with the
backbone's layers unrolled, against the analytical model FLOPs). CPU buffer assignment is not a GPU's
or TPU's: read those numbers as an estimate of what fits.

With `--topology NAME` (a TPU slice: v4:2x2x2, v5e:2x2, v5p:2x2x2, v6e:8x8, ...): the program is
compiled by the real TPU compiler (libtpu, no TPU needed) for that slice's devices (`h100:N`: by the
CUDA plugin's compiler for N H100s in one host, when the plugin is installed), and each row gives,
per chip: memory (arguments, temporaries, total against the chip's HBM), the compiled FLOPs and bytes
accessed with every loop counted as often as it runs (`flmjax.aot.cost`), the roofline time
max(FLOPs / peak, bytes / HBM bandwidth) with the peaks of `flmjax.aot.chips`, and for the train step
the MFU that roofline implies (model FLOPs / chips / peak / roofline). `--decode` compiles the decode
frame program (`Decoder.frame_step`, bf16 weights, a `--window`-slot ring cache) for `--batch` streams
instead, and reports bytes per chip per frame against the weights' bytes per chip (spec section 6).

    python launch/aot.py                                  # CPU estimate: flm7b, 8 devices, 8192 frames, batch 256
    python launch/aot.py --topology v5p:2x2x2 --mesh 1,4,2 --micro 64 --remat full --json
    python launch/aot.py --topology v5e:2x2 --decode --batch 1 --mesh 1,1,4 --json

The step is lowered from ShapeDtypeStructs carrying the mesh's shardings (the same abstract state the
trainer restores into), so nothing is allocated.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flmjax.config import DType

# Columns of the human-readable tables: (header, key, width, format spec).
_TRAIN_COLUMNS = (
    ("mesh", "mesh", 8, ""),
    ("micro", "micro_batches", 5, ""),
    ("rows/dev", "rows_per_device", 8, ""),
    ("remat", "remat", 5, ""),
    ("text chunk", "text_loss_chunk", 10, ""),
    ("args GB", "arguments_gb", 7, ".1f"),
    ("temp GB", "temp_gb", 7, ".1f"),
    ("total GB", "per_device_gb", 8, ".1f"),
    ("HBM GB", "hbm_gb", 6, ".0f"),
    ("fits", "fits", 5, ""),
    ("TFLOP/chip", "tflop_per_device", 10, ".1f"),
    ("GB/chip", "gb_accessed_per_device", 8, ".0f"),
    ("roofline s", "roofline_step_s", 10, ".2f"),
    ("MFU", "mfu_at_roofline", 5, ".2f"),
    ("compile s", "compile_s", 9, ".0f"),
)
_DECODE_COLUMNS = (
    ("mesh", "mesh", 8, ""),
    ("batch", "batch", 5, ""),
    ("weights GB/chip", "weight_gb_per_device", 15, ".2f"),
    ("KV GB/chip", "kv_cache_gb_per_device", 10, ".2f"),
    ("accessed GB/chip", "gb_accessed_per_device", 16, ".2f"),
    ("total GB", "per_device_gb", 8, ".1f"),
    ("fits", "fits", 5, ""),
    ("roofline ms", "roofline_ms_per_frame", 11, ".2f"),
    ("1st block ms", "roofline_ms_per_frame_first_block", 12, ".2f"),
    ("compile s", "compile_s", 9, ".0f"),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="flm7b", help="a model config name (flm7b, demo, tiny)")
    p.add_argument("--topology", help="a TPU slice (v5p:2x2x2, v6e:8x8, ...) or h100:N: compile for its chips")
    p.add_argument("--decode", action="store_true", help="the decode frame program instead of the train step")
    p.add_argument("--devices", type=int, default=8, help="virtual CPU devices of the mesh (default 8; no --topology)")
    p.add_argument("--seq", type=int, default=8192, help="frames per sample (default 8192)")
    p.add_argument("--batch", nargs="+", type=int, help="global batch per optimizer step (default 256); with "
                   "--decode: streams decoded at once (default 1)")  # fmt: skip
    p.add_argument("--window", type=int, default=0, help="decode ring-cache slots (default max_position_embeddings)")
    p.add_argument("--decode-block", type=int, help="decode ring blocks of this many slots (default: the model's)")
    p.add_argument("--mesh", nargs="+", help="data,fsdp,tensor sizes to try (default: a CPU sweep over 8 devices, "
                   "1,N/2,2 on a topology of N chips, 1,1,N with --decode)")  # fmt: skip
    p.add_argument("--micro", nargs="+", type=int, default=[32, 64, 128], help="micro-batch counts to try")
    p.add_argument("--remat", nargs="+", default=["full"], help="remat policies to try")
    p.add_argument("--chunk", nargs="+", type=int, default=[0], help="attention chunks to try (0 = none)")
    p.add_argument("--text-chunk", nargs="+", type=int, default=[0],
                   help="text-loss column blocks to try (0: whole-sequence logits; --topology only)")  # fmt: skip
    p.add_argument("--dtype", default="bfloat16", help="compute dtype (train parameters stay fp32)")
    p.add_argument("--lora", type=int, default=0, help="LoRA rank: the fine-tuning step (frozen base); 0: full")
    p.add_argument("--lora-targets", nargs="+", default=["attention", "mlp"], help="LoRA target groups")
    p.add_argument("--device-memory-gb", type=float, default=80.0, help="what a CPU-mesh device holds (default 80)")
    p.add_argument("--json", action="store_true", help="one JSON object per configuration instead of a table")
    args = p.parse_args(argv)
    args.batch = args.batch or ([1] if args.decode else [256])
    if args.decode and not args.topology:
        p.error("--decode needs --topology")
    return args


def parse_meshes(specs: list[str], devices: int) -> list[tuple[int, int, int]]:
    meshes = [tuple(int(x) for x in m.split(",")) for m in specs]
    bad = [m for m in meshes if len(m) != 3 or m[0] * m[1] * m[2] != devices]
    if bad:
        raise ValueError(f"mesh {bad[0]} is not data,fsdp,tensor over {devices} devices")
    return [(d, f, t) for d, f, t in meshes]


def abstract_batch(model, mesh, batch: int, seq: int) -> dict:
    import jax
    import jax.numpy as jnp

    from flmjax.train.state import batch_sharding

    columns = (batch, seq + 1, model.tokens.num_streams)
    return {
        "tokens": jax.ShapeDtypeStruct(columns, jnp.int32, sharding=batch_sharding(mesh)),
        "weights": jax.ShapeDtypeStruct(columns, jnp.float32, sharding=batch_sharding(mesh)),
    }


def lower_step(model_name: str, mesh, micro: int, seq: int, batch: int, lora=None, **model_settings):
    """The train step lowered from abstract inputs (no memory used), and its model config; with `lora`
    (a LoraConfig) the LoRA step: a frozen base in the compute dtype, adapters and their moments fp32."""
    import jax
    import jax.numpy as jnp

    from flmjax.config import Numerics, get_model_config
    from flmjax.train.config import OptimizerConfig
    from flmjax.train.loss import LossCoefficients
    from flmjax.train.optimizer import make_optimizer
    from flmjax.train.state import abstract_state, replicated
    from flmjax.train.step import jit_train_step, make_train_step

    model = get_model_config(model_name, numerics=Numerics(param_dtype="float32", **model_settings), lora=lora)
    optimizer = make_optimizer(OptimizerConfig())
    state = abstract_state(model, optimizer, mesh)
    shardings = jax.tree_util.tree_map(lambda a: a.sharding, state)
    lr = jax.ShapeDtypeStruct((), jnp.float32, sharding=replicated(mesh))
    step = jit_train_step(make_train_step(model, optimizer, LossCoefficients(), micro, mesh), shardings, mesh)
    return model, step.lower(state, abstract_batch(model, mesh, batch, seq), lr)


def decode_state_shardings(state, mesh):
    """Every decode-state leaf split over the batch axes on its stream axis; the ring cache's KV heads
    over `tensor` (replicated where the axes do not divide)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from flmjax.sharding import fit_sharding

    batch_axes = ("data", "fsdp")

    def spec(a):
        return fit_sharding(NamedSharding(mesh, PartitionSpec(batch_axes) if a.ndim else PartitionSpec()), a.shape)

    kv = state.kv
    cache = NamedSharding(mesh, PartitionSpec(None, batch_axes, None, "tensor", None))
    shardings = jax.tree_util.tree_map(spec, state)
    return shardings._replace(
        kv=kv._replace(k=fit_sharding(cache, kv.k.shape), v=fit_sharding(cache, kv.v.shape), pos=spec(kv.pos))
    )


def lower_decode(model_name: str, mesh, batch: int, window: int, dtype: DType, decode_block: int | None = None):
    """The decode frame program (`Decoder.frame_step`) lowered from abstract inputs; also returns the
    abstract parameters and decode state (with shardings) it takes."""
    import jax
    import jax.numpy as jnp

    from flmjax.config import Numerics, get_model_config
    from flmjax.infer.decoder import Decoder
    from flmjax.model.pretrained import FLMAudio, abstract_params
    from flmjax.train.state import param_shardings

    config = get_model_config(model_name, numerics=Numerics.for_inference(dtype))
    if decode_block is not None:
        config = config.with_numerics(decode_block=decode_block)
    params_sh = param_shardings(config, mesh)
    params = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_params(config), params_sh
    )
    decoder = Decoder(FLMAudio(config, params), batch, window or None)
    shapes = jax.eval_shape(decoder.init_state)
    state_sh = decode_state_shardings(shapes, mesh)
    state = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), shapes, state_sh)
    per_stream = state_sh.offset
    codes = jax.ShapeDtypeStruct((batch, config.num_codebooks), jnp.int32, sharding=per_stream)
    active = jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=per_stream)
    step = jax.jit(decoder.frame_step, donate_argnums=(1,), out_shardings=(state_sh, per_stream))
    return config, params, state, step.lower(params, state, codes, active)


def _lora(args: argparse.Namespace):
    """The LoRA settings of --lora/--lora-targets (None: full training)."""
    from flmjax.config import LoraConfig

    return LoraConfig(rank=args.lora, targets=tuple(args.lora_targets)) if args.lora else None


def measure(args: argparse.Namespace, mesh_sizes, micro: int, remat: str, chunk: int, batch: int) -> dict:
    """The CPU estimate (no --topology)."""
    from flmjax.sharding import make_mesh
    from flmjax.train.metrics import model_flops_per_step

    settings = dict(dtype=args.dtype, remat=remat, attention_chunk=chunk, lora=_lora(args))
    settings["text_loss_chunk"] = args.text_chunk[0]
    mesh = make_mesh(*mesh_sizes)
    model, lowered = lower_step(args.model, mesh, micro, args.seq, batch, **settings)
    started = time.perf_counter()
    mem = lowered.compile().memory_analysis()
    seconds = time.perf_counter() - started
    _, unrolled = lower_step(args.model, mesh, 1, args.seq, batch, scan_layers=False, **settings)
    cost = unrolled.cost_analysis()
    per_device = _per_device_bytes(mem)
    return {
        "model": args.model,
        "lora_rank": args.lora,
        "text_loss_chunk": args.text_chunk[0],
        "mesh": "x".join(map(str, mesh_sizes)),
        "micro_batches": micro,
        "rows_per_device": batch // micro // (mesh_sizes[0] * mesh_sizes[1]),
        "remat": remat,
        "attention_chunk": chunk,
        "seq": args.seq,
        "batch": batch,
        "arguments_gb": mem.argument_size_in_bytes / 1e9,
        "temp_gb": mem.temp_size_in_bytes / 1e9,
        "per_device_gb": per_device / 1e9,
        "fits": per_device / 1e9 <= args.device_memory_gb,
        "xla_flops_per_step": float(cost.get("flops", 0.0)),  # the whole (unpartitioned) step
        "model_flops_per_step": model_flops_per_step(model, batch, args.seq),
        "compile_s": seconds,
    }


def _per_device_bytes(mem) -> int:
    # Arguments (state + batch) and temporaries; donated outputs alias their arguments.
    return mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes


def _tpu_mesh(devices, mesh_sizes):
    """A (data, fsdp, tensor) mesh laid out on a TPU slice's physical topology (tensor on nearest
    neighbours); GPUs of one host in order."""
    import numpy as np
    from jax.experimental import mesh_utils
    from jax.sharding import Mesh

    from flmjax.sharding import MESH_AXES

    if devices[0].platform != "tpu":
        return Mesh(np.asarray(devices).reshape(mesh_sizes), MESH_AXES)
    return Mesh(mesh_utils.create_device_mesh(mesh_sizes, devices, allow_split_physical_axes=True), MESH_AXES)


def _compiled_report(compiled, chip, seconds: float, traced_trips: int | None = None) -> dict:
    """Memory, loop-aware FLOPs/bytes and roofline seconds of one compiled TPU program, per chip."""
    from flmjax.aot.cost import LoopAwareCost

    mem = compiled.memory_analysis()
    per_device = _per_device_bytes(mem)
    cost = LoopAwareCost(compiled.as_text(), traced_trips).total()
    once = compiled.cost_analysis() or {}  # the CUDA plugin's deviceless compile gives none
    return {
        "device_kind": chip.name,
        "arguments_gb": mem.argument_size_in_bytes / 1e9,
        "temp_gb": mem.temp_size_in_bytes / 1e9,
        "per_device_gb": per_device / 1e9,
        "hbm_gb": chip.hbm_bytes / 1e9,
        "fits": per_device <= chip.hbm_bytes,
        "flops_per_device": cost.flops,
        "bytes_per_device": cost.bytes_accessed,
        "xla_flops_once": float(once.get("flops", 0.0)),  # the TPU compiler's count, loop bodies once
        "xla_bytes_once": float(once.get("bytes accessed", 0.0)),
        "roofline_s": max(cost.flops / chip.bf16_flops, cost.bytes_accessed / chip.hbm_bytes_per_s),
        "compile_s": seconds,
    }


def measure_tpu_train(
    args, chip, devices, mesh_sizes, micro: int, remat: str, chunk: int, text_chunk: int, batch: int
) -> dict:
    from flmjax.train.metrics import model_flops_per_step

    settings = dict(dtype=args.dtype, remat=remat, attention_chunk=chunk, text_loss_chunk=text_chunk, lora=_lora(args))
    model, lowered = lower_step(args.model, _tpu_mesh(devices, mesh_sizes), micro, args.seq, batch, **settings)
    started = time.perf_counter()
    compiled = lowered.compile()
    report = _compiled_report(compiled, chip, time.perf_counter() - started)
    model_flops = model_flops_per_step(model, batch, args.seq)
    step_s = report.pop("roofline_s")
    row = {
        "model": args.model,
        "lora_rank": args.lora,
        "topology": args.topology,
        "chips": len(devices),
        "mesh": "x".join(map(str, mesh_sizes)),
        "micro_batches": micro,
        "rows_per_device": batch // micro // (mesh_sizes[0] * mesh_sizes[1]),
        "remat": remat,
        "attention_chunk": chunk,
        "text_loss_chunk": text_chunk,
        "seq": args.seq,
        "batch": batch,
        **report,
        "model_flops_per_step": model_flops,
        "roofline_step_s": step_s,
        "mfu_at_roofline": model_flops / len(devices) / chip.bf16_flops / step_s,
    }
    return row


def measure_tpu_decode(args, chip, devices, mesh_sizes, batch: int) -> dict:
    """One decode row; a frame program libtpu refuses for HBM (RESOURCE_EXHAUSTED) is a row too, `fits`
    false with the compiler's message in `compile_error` and no cost or roofline."""
    import jax
    import numpy as np

    from flmjax.model.backbone import ring_block_size

    mesh = _tpu_mesh(devices, mesh_sizes)
    config, params, state, lowered = lower_decode(args.model, mesh, batch, args.window, args.dtype, args.decode_block)

    def shard_bytes(tree) -> float:
        leaves = jax.tree_util.tree_leaves(tree)
        return float(sum(np.prod(a.sharding.shard_shape(a.shape)) * a.dtype.itemsize for a in leaves))

    # Spec section 6: every weight is read once per frame except the embedding tables (rows gathered).
    gathered = ("text_embeddings", "aud_speak_embeddings", "aud_listen_embeddings")
    read = {k: v for k, v in params["embed_tokens"].items() if k not in gathered}
    weights = shard_bytes({**{k: v for k, v in params.items() if k != "embed_tokens"}, "embed": read})
    row = {
        "model": args.model,
        "topology": args.topology,
        "chips": len(devices),
        "mesh": "x".join(map(str, mesh_sizes)),
        "batch": batch,
        "window": state.kv.window,
        "dtype": args.dtype,
        "device_kind": chip.name,
        "hbm_gb": chip.hbm_bytes / 1e9,
        "weight_bytes_per_device": weights,
        "weight_gb_per_device": weights / 1e9,
        "kv_cache_gb_per_device": shard_bytes((state.kv.k, state.kv.v)) / 1e9,
    }
    started = time.perf_counter()
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        message = str(e).strip().splitlines()[0]
        return {**row, "fits": False, "compile_error": message, "compile_s": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    # The ring is read block by block, only the filled blocks (a traced trip count): a frame of a
    # conversation that has filled the window (the steady state) and one of a conversation's first block.
    blocks = -(-state.kv.window // ring_block_size(config, state.kv.window))
    report = _compiled_report(compiled, chip, seconds, traced_trips=blocks)
    young = _compiled_report(compiled, chip, seconds, traced_trips=1)
    frame_s = report.pop("roofline_s")
    return {
        **row,
        **report,
        "gb_accessed_per_device": report["bytes_per_device"] / 1e9,
        "bytes_over_weights": report["bytes_per_device"] / weights,
        "roofline_ms_per_frame": frame_s * 1e3,
        "ring_blocks": blocks,
        "bytes_per_device_first_block": young["bytes_per_device"],
        "roofline_ms_per_frame_first_block": young["roofline_s"] * 1e3,
    }


def _print_row(row: dict, columns, as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
    else:
        cells = (
            ("-" if row.get(key) is None else row[key] if spec else str(row[key]), width, spec)
            for _, key, width, spec in columns
        )  # a refused compile has no cost columns
        print(" ".join(f"{v:>{w}{spec if not isinstance(v, str) else ''}}" for v, w, spec in cells),
              flush=True)  # fmt: skip


def _print_header(columns) -> None:
    print(" ".join(f"{name:>{width}}" for name, _, width, _ in columns))


def main_tpu(args: argparse.Namespace) -> int:
    from flmjax.aot.chips import chip_of_topology, topology_devices

    chip = chip_of_topology(args.topology)
    devices = topology_devices(args.topology)
    n = len(devices)
    default = [f"1,1,{n}"] if args.decode else [f"1,{max(n // 2, 1)},{min(n, 2)}"]
    meshes = parse_meshes(args.mesh or default, n)
    columns = _DECODE_COLUMNS if args.decode else _TRAIN_COLUMNS
    if not args.json:
        what = "decode frame" if args.decode else f"train step, {args.seq} frames"
        print(f"{args.model} {what} on {args.topology} ({n} x {chip.name}, {chip.hbm_bytes / 1e9:.0f} GB HBM, "
              f"{chip.bf16_flops / 1e12:.0f} TFLOP/s bf16, {chip.hbm_bytes_per_s / 1e9:.0f} GB/s)")  # fmt: skip
        _print_header(columns)
    if args.decode:
        for mesh_sizes, batch in itertools.product(meshes, args.batch):
            _print_row(measure_tpu_decode(args, chip, devices, mesh_sizes, batch), columns, args.json)
        return 0
    grid = itertools.product(meshes, args.micro, args.remat, args.chunk, args.text_chunk, args.batch)
    for mesh_sizes, micro, remat, chunk, text_chunk, batch in grid:
        if batch % micro or (batch // micro) % (mesh_sizes[0] * mesh_sizes[1]):
            continue  # a micro-batch must split over data x fsdp
        row = measure_tpu_train(args, chip, devices, mesh_sizes, micro, remat, chunk, text_chunk, batch)
        row["tflop_per_device"] = row["flops_per_device"] / 1e12
        row["gb_accessed_per_device"] = row["bytes_per_device"] / 1e9
        _print_row(row, columns, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import jax

    if not os.environ.get("JAX_PLATFORMS"):  # no accelerator is used, with or without --topology (and
        jax.config.update("jax_platforms", "cpu")  # `import flmjax` has imported jax: set it in the config)
    if args.topology:
        if args.topology.lower().startswith("h100"):  # no GPU to autotune Triton GEMMs on: cuBLAS's
            flags = os.environ.get("XLA_FLAGS", "")
            os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_enable_triton_gemm=false --xla_gpu_autotune_level=0".strip()
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no GCE metadata server to ask
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # several compiles may run side by side
        try:
            return main_tpu(args)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:  # before JAX starts
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}".strip()
    try:
        meshes = parse_meshes(args.mesh or ["1,8,1", "1,4,2", "1,2,4"], args.devices)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{args.model}: batch {args.batch[0]} x {args.seq} frames on {args.devices} devices; fits = at most "
              f"{args.device_memory_gb:g} GB per device")  # fmt: skip
        print(f"{'mesh':>7} {'micro':>5} {'rows/dev':>8} {'remat':>13} {'chunk':>5} {'args GB':>8} {'temp GB':>8} "
              f"{'total GB':>8} {'fits':>4} {'XLA TFLOP':>9} {'model TFLOP':>11} {'compile s':>9}")  # fmt: skip
    for mesh_sizes, micro, remat, chunk, batch in itertools.product(meshes, args.micro, args.remat, args.chunk,
                                                                    args.batch):  # fmt: skip
        if batch % micro or (batch // micro) % (mesh_sizes[0] * mesh_sizes[1]):
            continue  # a micro-batch must split over data x fsdp
        row = measure(args, mesh_sizes, micro, remat, chunk, batch)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{row['mesh']:>7} {micro:>5} {row['rows_per_device']:>8} {remat:>13} {chunk:>5} "
                  f"{row['arguments_gb']:>8.1f} {row['temp_gb']:>8.1f} {row['per_device_gb']:>8.1f} "
                  f"{'yes' if row['fits'] else 'no':>4} "
                  f"{row['xla_flops_per_step'] / 1e12:>9.1f} {row['model_flops_per_step'] / 1e12:>11.1f} "
                  f"{row['compile_s']:>9.0f}", flush=True)  # fmt: skip
    return 0
