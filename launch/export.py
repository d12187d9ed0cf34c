"""Write a trainer checkpoint in the release's HF layout (config.json + safetensors), which
`FLMAudio.from_pretrained` and the official `FLMAudioForCausalLM.from_pretrained` load.

    python launch/export.py --checkpoint runs/ft2 --out exports/ft2 [--dtype bfloat16] [--quantize int8]

`--checkpoint` is a run directory (its newest step) or one step directory (runs/ft2/checkpoints/1200).
`--quantize int8` writes the int8 layout (int8 `weight` + fp32 `weight_scale` [out, 1] per matmul kernel,
`quantization_config` in config.json; README "int8 decoding"): flmjax loads it, the official code does not.
"""

from __future__ import annotations

import argparse
import sys

from flmjax.config import DTYPES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a run directory or a step directory the trainer wrote")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--dtype", default="bfloat16", choices=DTYPES, help="tensor dtype (default bfloat16, the release's)"
    )
    parser.add_argument(
        "--quantize", default="none", choices=("none", "int8"), help="int8: the int8 weight-only layout"
    )
    args = parser.parse_args(argv)

    from flmjax.interop.trainer_checkpoint import CheckpointError, locate_step_dir
    from flmjax.train.checkpoint import export_checkpoint

    try:
        step_dir = locate_step_dir(args.checkpoint)
        out = export_checkpoint(step_dir, args.out, args.dtype, args.quantize)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {step_dir} to {out} ({args.dtype}{', int8 kernels' if args.quantize == 'int8' else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
