"""int8 weight-only against bf16: greedy codes agreement, logits KL and memory, on random weights.

Models (random bf16 weights: N(0, 0.02), norms 1 + N(0, 0.02)): a flm7b-shaped layer stack with its
depth and text vocabulary reduced to fit this machine's memory (every backbone layer and the depformer
the real shape; `--layers` of 28, default 2; `--text-vocab`, default 32768 of 152064, which shrinks the
text embedding and head), and the demo
model. Both in bf16 (weights and compute); the int8 model is the same weights quantised
(flmjax.model.quant: int8 kernels, per-output-channel scales, bf16 activations).

- teacher-forced: the same random token columns through both; the share of columns where the argmax
  (the greedy choice) of text and of each codebook agrees, and KL(bf16 || int8) of the distributions;
- free-running (demo only: flm7b-shaped frames take seconds here): greedy decoding of the same user
  codes by both, the share of identical output codes and the first frame that differs;
- memory: bytes of the parameters, and the bytes a decode frame reads (all but the embedding tables,
  of which a frame gathers a few rows).

Random weights have small logit margins, so agreement here is a lower bound on a trained model's.

    python launch/bench_quant.py [--layers 2] [--columns 32] [--frames 24] [--configs flm7b demo]
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flmjax import FLMAudio
from flmjax.config import get_model_config
from flmjax.infer.decoder import Decoder
from flmjax.infer.offline import decode_user_codes
from flmjax.infer.sampling import SamplingSettings
from flmjax.model.pretrained import abstract_params
from flmjax.model.quant import param_bytes
from flmjax.tokens import TokenIds


def random_model(config, seed: int) -> FLMAudio:
    """Random bf16 parameters made one array at a time (the fused init would hold fp32 copies of the
    whole flm7b-shaped tree): N(0, 0.02), norm weights 1 + N(0, 0.02)."""
    shapes = abstract_params(config)
    leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def normal(key, shape, is_norm):
        return (is_norm + 0.02 * jax.random.normal(key, shape, jnp.float32)).astype(jnp.bfloat16)

    values = []
    for key, (path, leaf) in zip(keys, leaves):
        name = "/".join(str(p.key) for p in path)
        values.append(normal(key, leaf.shape, float("norm" in name or "ln_" in name)))
    return FLMAudio(config, jax.tree_util.tree_unflatten(tree, values))


def random_columns(model: FLMAudio, columns: int, seed: int) -> np.ndarray:
    ids = model.config.tokens
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, ids.codebook_size, (1, columns + 1, ids.num_streams)).astype(np.int32)
    tokens[..., 0] = rng.integers(0, ids.text_vocab_size, (1, columns + 1))
    tokens[:, 0] = ids.initial_column
    return tokens


def kl(p_logits: jax.Array, q_logits: jax.Array) -> np.ndarray:
    p, q = jax.nn.log_softmax(p_logits.astype(jnp.float32), -1), jax.nn.log_softmax(q_logits.astype(jnp.float32), -1)
    return np.asarray((jnp.exp(p) * (p - q)).sum(-1))


def frame_bytes(params: dict) -> int:
    """Bytes of everything but the embedding tables (what one decode frame reads in full)."""
    return param_bytes({k: v for k, v in params.items() if k != "embed_tokens"})


def compare(name: str, model: FLMAudio, columns: int, frames: int, seed: int) -> None:
    start = time.perf_counter()
    int8 = model.quantized()
    quantize_s = time.perf_counter() - start
    tokens = random_columns(model, columns, seed)
    (text, audio), (text8, audio8) = model.forward(jnp.asarray(tokens)), int8.forward(jnp.asarray(tokens))
    codebook = model.config.tokens.codebook_size
    text_agree = float((text.argmax(-1) == text8.argmax(-1)).mean())
    audio_agree = np.asarray((audio[..., :codebook].argmax(-1) == audio8[..., :codebook].argmax(-1)).mean((0, 1)))
    text_kl, audio_kl = kl(text, text8), kl(audio, audio8)
    gib = 2**30
    cfg = model.config
    print(f"\n{name}: {cfg.num_layers} layers, hidden {cfg.hidden_size}, quantised in {quantize_s:.1f} s")
    print(f"  memory: bf16 {param_bytes(model.params) / gib:.2f} GiB, int8 {param_bytes(int8.params) / gib:.2f} GiB")
    print(
        f"  read per decode frame: bf16 {frame_bytes(model.params) / gib:.3f} GiB, "
        f"int8 {frame_bytes(int8.params) / gib:.3f} GiB ({frame_bytes(int8.params) / frame_bytes(model.params):.2f}x)"
    )
    print(f"  teacher-forced, {columns} columns: greedy agreement text {text_agree:.3f}, codebooks", end=" ")
    print(" ".join(f"{a:.2f}" for a in audio_agree), f"(mean {audio_agree.mean():.3f})")
    print(
        f"  KL(bf16 || int8): text mean {text_kl.mean():.2e} max {text_kl.max():.2e}; "
        f"audio mean {audio_kl.mean():.2e} max {audio_kl.max():.2e}"
    )
    if frames:
        user = np.random.default_rng(seed).integers(0, codebook, (1, frames, 8)).astype(np.int32)
        greedy = SamplingSettings().greedy_deterministic()
        runs = [decode_user_codes(Decoder(m, 1, window=frames + 1), user, greedy)[1] for m in (model, int8)]
        same = runs[0] == runs[1]
        differs = np.flatnonzero(~same.all(-1)[0])
        first = int(differs[0]) if differs.size else None
        print(
            f"  free-running greedy, {frames} frames: identical codes {same[..., 1:].mean():.3f}, text "
            f"{same[..., 0].mean():.3f}; first differing frame {first}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["flm7b", "demo"], choices=("flm7b", "demo"))
    parser.add_argument("--layers", type=int, default=2, help="backbone layers of the flm7b-shaped model (28 real)")
    parser.add_argument("--text-vocab", type=int, default=32768, help="text vocabulary of the flm7b-shaped model")
    parser.add_argument("--columns", type=int, default=32, help="teacher-forced columns")
    parser.add_argument("--frames", type=int, default=24, help="free-running greedy frames (demo)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; random weights, bf16 weights and compute")
    for name in args.configs:
        overrides: dict[str, Any] = {"dtype": "bfloat16", "param_dtype": "bfloat16"}
        if name == "flm7b":
            v = args.text_vocab  # the special ids at the top, as the small configs keep them
            tokens = TokenIds(
                text_vocab_size=v, text_wait=v - 3, text_asr=v - 2, text_answer=v - 1, bos=v - 6, eos=v - 5
            )
            overrides.update(num_layers=args.layers, tokens=tokens)
        model = random_model(get_model_config(name, **overrides), seed=args.seed)
        label = (
            f"flm7b-shaped ({args.layers} of 28 layers, text vocabulary {args.text_vocab})" if name == "flm7b" else name
        )
        compare(label, model, args.columns, args.frames if name == "demo" else 0, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
