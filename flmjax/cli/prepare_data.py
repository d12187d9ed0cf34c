"""Prepare a corpus for training: 24 kHz mono audio -> Mimi codes, text -> ids, ArrayRecord shards.

    python launch/prepare_data.py                        # the demo corpus of --config (default demo), cached
    python launch/prepare_data.py speech.jsonl --out /data/speech --mimi tokenizer-e351c8d8-checkpoint125.safetensors
    python launch/prepare_data.py dialogs.jsonl --out /data/ft2 --config ft2 --mimi ...   # dialogs for ft2's layout
    python launch/prepare_data.py tfds:librispeech:train_clean100 --tfds-data-dir ~/tensorflow_datasets --out ...
    python launch/prepare_data.py hf:/data/hf/librispeech_clean:train --out /data/prepared/librispeech
    python launch/prepare_data.py speech.jsonl --out /data/speech --num-hosts 4 --host-index $SLURM_ARRAY_TASK_ID

CORPUS is a JSONL manifest (formats in docs/data.md), tfds:NAME[:SPLIT] or hf:PATH[:SPLIT] (a Hugging Face
`datasets` audio dataset on disk). Dialogs are prepared for a stage's
layout and augmentation (--config; flags override): each dialog gets --variants pre-encoded listen tracks,
one per training epoch. A re-run skips finished shards. Several hosts prepare one corpus together, each
taking every --num-hosts-th shard; the host that finishes last writes the index (with jax.distributed
initialised, the hosts are its processes and process 0 writes it). Bad entries are reported by name and
skipped; the exit status is 1 only when nothing could be prepared (or with --strict, when anything failed).
Without --mimi the codec has RANDOM weights: fine for the demo, meaningless for a real model.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from flmjax.config import ConfigError
from flmjax.data.config import get_data_config
from flmjax.data.corpus import CorpusError
from flmjax.data.encoding import ENCODE_BATCH, mimi_name
from flmjax.data.layouts import DIALOG_LAYOUTS
from flmjax.data.prepare import Hosts, PrepareOptions, ensure_prepared, prepare_corpus, summarize


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "corpus",
        nargs="?",
        help="manifest.jsonl, tfds:NAME[:SPLIT] or hf:PATH[:SPLIT]; none: the --config's demo corpora",
    )
    p.add_argument("--out", help="output folder (required with CORPUS)")
    p.add_argument(
        "--config", default="demo", help="stage whose layout/augmentation dialogs are prepared for (default demo)"
    )
    p.add_argument("--mimi", help="kyutai Mimi safetensors; default: random weights (demo only)")
    p.add_argument("--layout", choices=DIALOG_LAYOUTS, help="dialogs: the layout to plan for (default: the config's)")
    p.add_argument("--variants", type=int, help="dialogs: pre-encoded augmented variants (default: the config's)")
    p.add_argument("--no-augment", action="store_true", help="dialogs: keep the clean user turns")
    p.add_argument("--noise-dir", help="folder of noise audio for augmentation (default: synthetic noise)")
    p.add_argument("--seed", type=int, help="seed of plans and augmentation (default: the config's)")
    p.add_argument("--shard-size", type=int, default=64, help="entries per shard (default 64)")
    p.add_argument("--workers", type=int, default=2, help="processes reading audio (default 2; <= 1: in process)")
    p.add_argument(
        "--encode-batch",
        type=int,
        default=ENCODE_BATCH,
        help=f"clips per local device Mimi encodes at once ({ENCODE_BATCH})",
    )
    h = p.add_argument_group("hosts (default: the processes of jax.distributed when initialised, else one)")
    h.add_argument("--num-hosts", type=int, help="hosts preparing this corpus together (SLURM array, indexed job, ...)")
    h.add_argument("--host-index", type=int, help="this host's index in [0, --num-hosts)")
    p.add_argument("--strict", action="store_true", help="exit 1 when any entry failed")
    p.add_argument("--no-progress", action="store_true")
    t = p.add_argument_group("TFDS corpora")
    t.add_argument("--tfds-data-dir", help="TFDS data folder (local or bucket)")
    t.add_argument("--tfds-audio-key", help="audio feature (default speech)")
    t.add_argument("--tfds-text-key", help="transcript feature (default text)")
    t.add_argument("--tfds-id-key", help="id feature (default id)")
    t = p.add_argument_group("Hugging Face datasets corpora (hf:PATH[:SPLIT])")
    t.add_argument("--hf-audio-key", help="audio column (default audio)")
    t.add_argument("--hf-text-key", help="transcript column (default text)")
    t.add_argument("--hf-id-key", help="id column (default id; without one: the example's index)")
    t = p.add_argument_group("TFDS and Hugging Face corpora")
    t.add_argument("--language", help="language tag (default en for TFDS, und for Hugging Face)")
    t.add_argument("--source", choices=("auto", "human"), help="transcript quality tag (default human)")
    args = p.parse_args(argv)
    if args.corpus and not args.out:
        p.error("--out is required with a corpus")
    if min(args.shard_size, args.encode_batch) < 1 or (args.variants is not None and args.variants < 1):
        p.error("--shard-size, --encode-batch and --variants must be >= 1")
    if (args.num_hosts is None) != (args.host_index is None):
        p.error("--num-hosts and --host-index go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = get_data_config(args.config)
        hosts = Hosts.detect(args.host_index, args.num_hosts)
        if args.corpus is None:  # the demo: the config's manifests, into its cache
            config = config.replace(mimi=args.mimi) if args.mimi else config
            for root in ensure_prepared(config, progress=not args.no_progress, hosts=hosts):
                print(f"ready: {root}")
            return 0
        layout = args.layout or (config.layout if config.is_dialog else "response_tts_free")
        opts = PrepareOptions.for_data_config(config)
        opts = dataclasses.replace(
            opts,
            mimi_name=mimi_name(args.mimi),
            layout=layout,
            variants=args.variants or (opts.variants if config.is_dialog else 1),
            augment=None if args.no_augment else (opts.augment if config.is_dialog else get_data_config("ft2").augment),
            noise_dir=args.noise_dir or opts.noise_dir,
            seed=opts.seed if args.seed is None else args.seed,
            shard_size=args.shard_size,
        )
        tfds_options = {"data_dir": args.tfds_data_dir, "audio_key": args.tfds_audio_key,
                        "text_key": args.tfds_text_key, "id_key": args.tfds_id_key, "language": args.language,
                        "source": args.source}  # fmt: skip
        hf_options = {"audio_key": args.hf_audio_key, "text_key": args.hf_text_key, "id_key": args.hf_id_key,
                      "language": args.language, "source": args.source}  # fmt: skip
        report = prepare_corpus(args.corpus, args.out, opts, workers=args.workers, progress=not args.no_progress,
                                tfds_options=tfds_options, hf_options=hf_options, hosts=hosts,
                                encode_batch=args.encode_batch)  # fmt: skip
    except (ConfigError, CorpusError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in summarize(report):
        print(line)
    if report.failed:
        print("error: no entry could be prepared", file=sys.stderr)
        return 1
    return 1 if args.strict and report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
