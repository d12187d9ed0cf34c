"""Talk to a trained FLM-Audio model offline: a recording in, the model's reply out (time-aligned).

Audio level (Full-Duplex-Bench style: the reply has the input's length, frame k of the reply is what the
model said while hearing frame k):

    python launch/infer.py --checkpoint DIR --mimi MIMI.safetensors|random --input user.wav \
        --output reply.wav [--text out.txt] [--greedy] [--stats]

Codes level (no codec): user Mimi codes int32 [B, S, 8] in, for steps 1..S-1 the text id and the 8
codes of each output frame out (int32 [B, S-1, 9], the release's loop's return values):

    python launch/infer.py --checkpoint DIR --user-codes IN.npy --out-codes OUT.npy [--greedy] [--stats]

`--quantize int8` decodes with int8 weights (an int8 export loads int8 without it). `--greedy` is pure
argmax (no sampling, no repetition penalty): deterministic. Otherwise the release
server's sampling defaults apply (see flmjax/infer/sampling.py), seeded by `--seed`. `--stats` prints the
per-frame latency (mean, p50, p99; compilation excluded) as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="HF-layout FLM-Audio directory, or an flmjax trainer checkpoint")
    p.add_argument("--lora", help="adapters-only file (launch/export.py --adapters-only) merged into --checkpoint")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="weights and compute dtype")
    p.add_argument("--window", type=int, default=None, help="KV cache frames (default: max_position_embeddings)")
    p.add_argument(
        "--quantize",
        default="none",
        choices=("none", "int8"),
        help="int8: weight-only int8 matmul kernels (per-output-channel scales), activations in --dtype",
    )
    p.add_argument("--greedy", action="store_true", help="argmax decoding, no repetition penalty (deterministic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats", action="store_true", help="print per-frame latency as JSON")
    codes = p.add_argument_group("codes level")
    codes.add_argument("--user-codes", help="int32 .npy [B, S, 8] of user Mimi codes")
    codes.add_argument("--out-codes", help="where to write int32 .npy [B, S-1, 9]")
    audio = p.add_argument_group("audio level")
    audio.add_argument("--input", help="user audio (wav/flac/ogg/mp3; mixed to mono, resampled to 24 kHz)")
    audio.add_argument("--output", help="reply wav (16-bit), same length and sample rate as the input")
    audio.add_argument("--text", help="where to write the model's monologue text")
    audio.add_argument("--mimi", help="kyutai Mimi safetensors file, or 'random' (random weights: demos/tests)")
    args = p.parse_args(argv)
    codes_mode = args.user_codes is not None or args.out_codes is not None
    audio_mode = any(x is not None for x in (args.input, args.output, args.text, args.mimi))
    if codes_mode == audio_mode:
        p.error("give either --user-codes/--out-codes or --input/--output/--mimi")
    if codes_mode and not (args.user_codes and args.out_codes):
        p.error("codes level needs both --user-codes and --out-codes")
    if audio_mode and not (args.input and args.output and args.mimi):
        p.error("audio level needs --input, --output and --mimi")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError) as e:  # missing files, bad shapes, mismatched checkpoints: one line
        print(f"infer: error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from flmjax import FLMAudio
    from flmjax.infer.decoder import Decoder
    from flmjax.infer.offline import (
        check_user_codes,
        decode_user_codes,
        latency_stats,
        read_user_audio,
        reply_to_audio,
        write_reply_audio,
    )
    from flmjax.infer.sampling import SamplingSettings
    from flmjax.tokens import CODEBOOK_SIZE, NUM_CODEBOOKS

    settings = SamplingSettings(seed=args.seed)
    if args.greedy:
        settings = settings.greedy_deterministic()
    # Inputs are checked before the (slow) model load, against Mimi's geometry (and again against the model's).
    if args.user_codes:
        user_codes = check_user_codes(np.load(args.user_codes), NUM_CODEBOOKS, CODEBOOK_SIZE)
    else:
        user_audio = read_user_audio(args.input)
        if args.mimi != "random" and not os.path.isfile(args.mimi):
            raise FileNotFoundError(f"{args.mimi}: no such Mimi weights file")
    model = FLMAudio.from_pretrained(args.checkpoint, dtype=args.dtype, quantize=args.quantize, lora=args.lora)

    if args.user_codes:
        decoder = Decoder(model, batch_size=user_codes.shape[0], window=args.window)
        frames, _, times = decode_user_codes(decoder, user_codes, settings)
        np.save(args.out_codes, frames.astype(np.int32))
    else:
        from flmjax.infer.session import Session
        from flmjax.mimi import Mimi

        mimi = Mimi.random(seed=0) if args.mimi == "random" else Mimi.from_pretrained(args.mimi)
        session = Session(model, mimi, batch_size=1, settings=settings, window=args.window)
        reply, text, times = reply_to_audio(session, user_audio.pcm)
        write_reply_audio(args.output, reply, user_audio)
        if args.text:
            with open(args.text, "w", encoding="utf-8") as f:
                f.write(text)
    if args.stats:
        print(json.dumps(latency_stats(times)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
