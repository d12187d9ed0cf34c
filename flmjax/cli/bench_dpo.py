"""DPO's reference log-probabilities on the fly (frozen parameters in the step) vs cached per pair.

    python launch/bench_dpo.py [--model tiny|demo] [--batch 4] [--frames 64] [--steps 5]

On the fly: one jitted step computes pi_ref's log-probabilities of both sides of every pair from frozen
parameters, then DPO's loss and update. Cached: a separate forward pass gives them once per pair (what a
pre-pass over the corpus would store), and the step reads them from the batch. Prints the median time
of each per batch, their ratio, and what each keeps in memory: a second copy of the parameters vs 8 bytes
per pair. The times depend on the model, the batch and the machine (CPU here; the ratio is what carries
over); a pair seen more than once (several epochs) would reuse a cached value, which on-the-fly recomputes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def _pair_batch(config, frames: int, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random pair batches of the right shapes and id ranges (timing does not depend on the values)."""
    ids = config.tokens
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for prefix in ("", "rejected_"):
        tokens = rng.integers(0, ids.codebook_size, (batch, frames + 1, ids.num_streams)).astype(np.int32)
        tokens[..., 0] = rng.integers(0, ids.text_vocab_size, (batch, frames + 1))
        weights = np.ones(tokens.shape, np.float32)
        weights[..., ids.listen_streams] = 0.0
        out[f"{prefix}tokens"], out[f"{prefix}weights"] = tokens, weights
    return out


def _median_seconds(fn, steps: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="a model config name (tiny, demo, ...)")
    parser.add_argument("--batch", type=int, default=4, help="pairs per batch")
    parser.add_argument("--frames", type=int, default=64, help="frames per side")
    parser.add_argument("--steps", type=int, default=5, help="timed repetitions (after one warm-up)")
    args = parser.parse_args(argv)

    from flmjax.config import get_model_config
    from flmjax.model.flm_audio import FLMAudioLM
    from flmjax.sharding import make_mesh
    from flmjax.train.config import DPOConfig, OptimizerConfig
    from flmjax.train.dpo import DPOObjective, reference_log_probs
    from flmjax.train.optimizer import make_optimizer
    from flmjax.train.state import random_state, state_shardings
    from flmjax.train.step import jit_train_step, make_train_step

    config = get_model_config(args.model)
    optimizer = make_optimizer(OptimizerConfig())
    mesh = make_mesh(-1, 1, 1)
    shardings = state_shardings(config, optimizer, mesh)
    objective = DPOObjective(DPOConfig())
    state = jax.device_get(random_state(config, optimizer, mesh, seed=0))
    reference = jax.device_put(state.params, shardings.params)
    batch = _pair_batch(config, args.frames, args.batch, seed=0)
    lr = jnp.float32(1e-6)

    fused = jit_train_step(make_train_step(config, optimizer, objective, 1, mesh), shardings, mesh, (shardings.params,))
    plain = jit_train_step(make_train_step(config, optimizer, objective, 1, mesh), shardings, mesh)
    ref_pass = jax.jit(lambda p, b: reference_log_probs(FLMAudioLM(config), p, b, objective.coefficients))

    # The steps donate their state: each call gets a fresh copy (outside the timed part would be fairer,
    # but both variants pay the same copy, so the ratio holds).
    def on_the_fly():
        return fused(jax.device_put(state, shardings), batch, lr, reference)[1]["loss"]

    def cached():
        logps = ref_pass(reference, batch)
        return plain(jax.device_put(state, shardings), {**batch, **logps}, lr)[1]["loss"]

    t_fly = _median_seconds(on_the_fly, args.steps)
    t_ref = _median_seconds(lambda: ref_pass(reference, batch)["chosen_ref_logp"], args.steps)
    t_cached = _median_seconds(cached, args.steps)
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params))
    platform, load = jax.devices()[0].platform, os.getloadavg()[0]
    print(f"DPO reference log-probs: model {args.model}, {args.batch} pairs x {args.frames} frames")
    print(f"{platform} ({os.cpu_count()} CPUs, load {load:.1f}), median of {args.steps} after a warm-up")
    rows = [
        ("on the fly (ref forward in step)", t_fly, f"{param_bytes / 2**20:.1f} MiB (a copy of the parameters)"),
        ("cached: reference pass alone", t_ref, ""),
        ("cached: pass + step", t_cached, f"{8 * args.batch} B per batch (2 floats per pair)"),
    ]
    print(f"{'variant':<34} {'s/batch':>8} {'ratio':>6}  extra memory")
    for name, seconds, memory in rows:
        print(f"{name:<34} {seconds:>8.3f} {seconds / t_fly:>6.2f}  {memory}")
    return 0
