"""Write a trainer checkpoint in the release's HF layout (config.json + safetensors), which
`FLMAudio.from_pretrained` and the official `FLMAudioForCausalLM.from_pretrained` load.

    python launch/export.py --checkpoint runs/ft2 --out exports/ft2 [--dtype bfloat16] [--quantize int8]
    python launch/export.py --checkpoint runs/finetune --out exports/mine           # LoRA: merged
    python launch/export.py --checkpoint runs/finetune --out mine.safetensors --adapters-only

`--checkpoint` is a run directory (its newest step) or one step directory (runs/ft2/checkpoints/1200).
A LoRA run exports as its base (read from where it was trained from, checked by fingerprint) with the
adapters merged in; `--adapters-only` writes the adapters alone (fp32 safetensors with the base's
fingerprint; `infer.py`/`serve.py --checkpoint BASE --lora FILE` apply it). `--out` is then the file
(a folder gets `adapters.safetensors`).
`--quantize int8` writes the int8 layout (int8 `weight` + fp32 `weight_scale` [out, 1] per matmul kernel,
`quantization_config` in config.json; README "int8 decoding"): flmjax loads it, the official code does not.
"""

from __future__ import annotations

import argparse
import os
import sys

from flmjax.config import DTYPES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a run directory or a step directory the trainer wrote")
    parser.add_argument("--out", required=True, help="output directory (--adapters-only: the file)")
    parser.add_argument(
        "--dtype", default="bfloat16", choices=DTYPES, help="tensor dtype (default bfloat16, the release's)"
    )
    parser.add_argument(
        "--quantize", default="none", choices=("none", "int8"), help="int8: the int8 weight-only layout"
    )
    parser.add_argument("--adapters-only", action="store_true", help="a LoRA run's adapters alone (small file)")
    args = parser.parse_args(argv)

    from flmjax.errors import FlmjaxError
    from flmjax.interop.trainer_checkpoint import locate_step_dir
    from flmjax.train.checkpoint import export_adapters, export_checkpoint

    try:
        step_dir = locate_step_dir(args.checkpoint)
        if args.adapters_only:
            out = args.out if args.out.endswith(".safetensors") else os.path.join(args.out, "adapters.safetensors")
            print(f"wrote the adapters of {step_dir} to {export_adapters(step_dir, out)}")
            return 0
        out = export_checkpoint(step_dir, args.out, args.dtype, args.quantize)
    except (FlmjaxError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {step_dir} to {out} ({args.dtype}{', int8 kernels' if args.quantize == 'int8' else ''})")
    return 0
