"""The trainer's side of the data pipeline: this host's batches of a stage, its epoch size, held-out batches.

Corpora given as manifests are prepared on first use (every host prepares its share of the shards).
The epoch size sets the schedule's length (epochs x samples / batch): a dialog stage makes one sample per
dialog read; post-training packs several (clip, sentence) pairs per sample, so its epoch is estimated
from the frames a pair takes on average (a random subset of records, plus the mean gap before a pair).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flmjax.data.config import DataConfig
from flmjax.data.layouts import frames
from flmjax.data.pipeline import EpochMixture, batch_dataset, open_corpora
from flmjax.data.prepare import Hosts, ensure_prepared
from flmjax.data.records import PreparedCorpus
from flmjax.tokens import TokenIds
from flmjax.train.config import TrainConfig
from flmjax.train.step import Batch

RECORDS_SAMPLED = 256  # per corpus, to estimate the frames of a post-training pair


@dataclasses.dataclass
class StageData:
    """What the trainer reads: this host's endless batches (a checkpointable Grain iterator of numpy
    {"tokens", "weights"} batches holding its share of the global batch), the epoch size that sets the
    schedule's length, and optionally a fresh pass over held-out batches."""

    train: Any
    samples_per_epoch: int
    eval: Callable[[], Iterable[Batch]] | None = None


def prepared_roots(config: DataConfig) -> list[Path]:
    """The prepared folders of a data config, preparing manifests on first use (every process its share
    of the shards; all return once the folders are finished)."""
    return ensure_prepared(config, progress=jax.process_index() == 0, hosts=Hosts.detect())


def _mean_pair_frames(corpus: PreparedCorpus, rng: np.random.Generator) -> float:
    picks = rng.choice(corpus.num_records, size=min(RECORDS_SAMPLED, corpus.num_records), replace=False)
    return float(np.mean([corpus[int(i)][1]["codes"].shape[1] for i in picks]))


def samples_per_epoch(config: DataConfig, roots: list[Path]) -> int:
    """Samples one epoch of the mixture makes (all hosts together)."""
    corpora = open_corpora(config, roots)
    weights = [spec.weight for spec in config.corpora]
    items = len(EpochMixture([c.num_records for c in corpora], weights, config.seed))
    if config.is_dialog:
        return items
    rng = np.random.default_rng(config.seed)
    gap = frames(sum(config.layout_config.gap_s) / 2)
    per_epoch = [max(1, round(w * c.num_records)) for w, c in zip(weights, corpora)]
    total = sum(n * (_mean_pair_frames(c, rng) + gap) for n, c in zip(per_epoch, corpora))
    return max(1, math.ceil(total / config.layout_config.sample_frames))


def open_stage_data(config: TrainConfig, ids: TokenIds) -> StageData:
    """The configured pipeline of a stage: training batches, epoch size, and the held-out split if any."""
    index, count = jax.process_index(), jax.process_count()
    roots = prepared_roots(config.data)
    train = iter(batch_dataset(config.data, roots, index, count, ids))
    held_out = None
    if config.eval_data is not None:
        eval_config, eval_roots = config.eval_data, prepared_roots(config.eval_data)

        def held_out():
            return iter(batch_dataset(eval_config, eval_roots, index, count, ids))

    return StageData(train=train, samples_per_epoch=samples_per_epoch(config.data, roots), eval=held_out)
