"""Markdown tables of `launch/aot.py --topology ... --json` rows (the README's TPU AOT tables).

    python scripts/aot_tables.py docs/aot/train.jsonl docs/aot/decode.jsonl

A row with `roofline_step_s` is a train step, one with `roofline_ms_per_frame` a decode frame (or, with
`compile_error`, a decode frame libtpu refused for HBM); the chip peaks the rooflines use come from
`flmjax.aot.chips`.
"""

from __future__ import annotations

import json
import re
import sys

from flmjax.aot.chips import CHIPS


def chips_table() -> list[str]:
    lines = ["| chip | bf16 peak TFLOP/s | HBM GB | HBM GB/s |", "|---|---|---|---|"]
    for chip in CHIPS.values():
        peak, hbm, bandwidth = chip.bf16_flops / 1e12, chip.hbm_bytes / 1e9, chip.hbm_bytes_per_s / 1e9
        lines.append(f"| {chip.name} | {peak:.0f} | {hbm:.1f} | {bandwidth:.0f} |")
    return lines


def train_table(rows: list[dict]) -> list[str]:
    lines = [
        "| topology | chips | mesh | micro | seq/chip | text chunk | args GB | temp GB | total GB | HBM GB | fits "
        "| TFLOP/chip | GB accessed/chip | roofline s | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['topology']} | {r['chips']} | {r['mesh']} | {r['micro_batches']} | {r['rows_per_device']} "
            f"| {r.get('text_loss_chunk', 0) or '-'} | {r['arguments_gb']:.1f} | {r['temp_gb']:.1f} "
            f"| {r['per_device_gb']:.1f} | {r['hbm_gb']:.0f} | {'yes' if r['fits'] else 'no'} "
            f"| {r['flops_per_device'] / 1e12:.0f} | {r['bytes_per_device'] / 1e9:.0f} | {r['roofline_step_s']:.1f} "
            f"| {r['mfu_at_roofline']:.2f} |"
        )
    return lines


def decode_table(rows: list[dict]) -> list[str]:
    lines = [
        "| topology | chips (tensor) | batch | weights GB/chip | KV cache GB/chip | total GB | fits "
        "| GB accessed/chip (full window) | / weights | roofline ms/frame | first block: GB | ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "compile_error" in r:  # libtpu refused the program for HBM: no cost, no roofline
            needed = re.search(r"temporaries \(([\d.]+G)\) exceeds available HBM \(([\d.]+G)\)", r["compile_error"])
            why = f"no: libtpu needs {needed[1]} of temporaries, {needed[2]} available" if needed else "no: refused"
            lines.append(
                f"| {r['topology']} | {r['chips']} | {r['batch']} | {r['weight_gb_per_device']:.2f} "
                f"| {r['kv_cache_gb_per_device']:.2f} | - | {why} | - | - | - | - | - |"
            )
            continue
        lines.append(
            f"| {r['topology']} | {r['chips']} | {r['batch']} | {r['weight_gb_per_device']:.2f} "
            f"| {r['kv_cache_gb_per_device']:.2f} | {r['per_device_gb']:.1f} | {'yes' if r['fits'] else 'no'} "
            f"| {r['gb_accessed_per_device']:.2f} | {r['bytes_over_weights']:.2f} | {r['roofline_ms_per_frame']:.2f} "
            f"| {r['bytes_per_device_first_block'] / 1e9:.2f} | {r['roofline_ms_per_frame_first_block']:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    rows = [json.loads(line) for path in (argv or sys.argv[1:]) for line in open(path) if line.strip()]
    train = sorted((r for r in rows if "roofline_step_s" in r), key=lambda r: (r["device_kind"], r["chips"]))
    decode = [r for r in rows if "roofline_ms_per_frame" in r or "compile_error" in r]
    decode.sort(key=lambda r: (r["device_kind"], r["chips"], r["batch"]))
    for table in (chips_table(), train_table(train) if train else [], decode_table(decode) if decode else []):
        if table:
            print("\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
