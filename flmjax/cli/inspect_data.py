"""Show sample N of a stage's data as a frame-by-frame timeline (or JSON).

    python launch/inspect_data.py --config=demo --index 0 [--json] [--all-frames]

NAME is a stage's data config (post1, post2, ft1, ft2, demo; `flmjax.data.config.get_data_config`).
Every stage reads the demo corpus (flmjax/data/demo/) unless configured otherwise; corpora given as manifests
are prepared on first use (random Mimi unless the config names kyutai weights: the codes then only
show the layout). The timeline shows each frame's text token with its loss class, which audio channel
carries speech, and the speak channel's loss; --json prints the raw sample:
{"layout", "text", "speak", "listen", "weights": {"text", "speak"}, "segments"}. A config of preference
pairs (dpo) shows both sides; its JSON is {"kind": "turn_taking" | "interruption", "chosen": {...},
"rejected": {...}}, each side in the sample form above.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from flmjax.config import ConfigError
from flmjax.data.config import DataConfig, get_data_config
from flmjax.data.corpus import CorpusError
from flmjax.data.layouts import Sample
from flmjax.data.pipeline import LaidOut, sample_dataset
from flmjax.data.prepare import ensure_prepared
from flmjax.data.records import PreparedCorpusError
from flmjax.data.text_tokenizer import load_text_tokenizer
from flmjax.data.timeline import describe_segments, sample_json, timeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="demo", help="stage data config: post1, post2, ft1, ft2, dpo, demo")
    parser.add_argument("--index", type=int, default=0, help="which sample of the stream (0-based)")
    parser.add_argument("--json", action="store_true", help="print the raw sample as JSON")
    parser.add_argument("--all-frames", action="store_true", help="one line per frame, runs of <wait> included")
    args = parser.parse_args(argv)
    if args.index < 0:
        parser.error("--index must be >= 0")

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        config = get_data_config(args.config)
        roots = ensure_prepared(config, progress=not args.json, log=log)
        samples = iter(sample_dataset(config, roots))
        for _ in range(args.index):
            next(samples)
        laid = next(samples)
    except (ConfigError, CorpusError, PreparedCorpusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        shown = sample_json(laid.sample)
        if laid.rejected is not None:
            shown = {"kind": laid.kind, "chosen": shown, "rejected": sample_json(laid.rejected)}
        print(json.dumps(shown))
        return 0
    decode = load_text_tokenizer().decode
    sides = [("", laid.sample)] if laid.rejected is None else [("chosen", laid.sample), ("rejected", laid.rejected)]
    if laid.rejected is not None:
        print(f"preference pair ({laid.kind}): the rejected side differs from the chosen one in timing only")
    for side, sample in sides:
        if side:
            print(f"=== {side} ===")
        _show(config, args, laid, sample, decode)
    return 0


def _show(config: DataConfig, args: argparse.Namespace, laid: LaidOut, sample: Sample, decode: Callable) -> None:
    """One side: header, records, segments and the frame-by-frame timeline."""
    frames = sample.tokens.shape[0]
    names = [c.name for c in config.corpora]
    print(
        f"config {config.name} ({config.layout}), sample {args.index}: layout {sample.layout}, "
        f"{frames} frames ({frames / 12.5:.1f} s)"
    )
    parts = [f"{names[c]}[{r}] (pass {p})" for c, r, p in laid.items]
    shown = 12  # a packed 8192-frame sample holds hundreds of records: name the first few
    more = f", ... ({len(parts) - shown} more)" if len(parts) > shown else ""
    print(f"made of {len(parts)} records: " + ", ".join(parts[:shown]) + more)
    print("segments (raw frames; [start, end)):")
    print("\n".join(describe_segments(sample, decode)))
    print("frame        time      text           loss        speak channel             listen channel")
    print("\n".join(timeline(sample, decode, all_frames=args.all_frames)))


if __name__ == "__main__":
    sys.exit(main())
