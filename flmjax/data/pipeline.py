"""The Grain input pipeline: prepared corpora -> laid-out samples -> delayed batches, per host.

    corpora --EpochMixture--> (corpus, record, pass) --shuffle(seed)--> [host::hosts] --repeat-->
      read record --> pack pairs (post-training) | lay out a dialog variant (fine-tuning) -->
      delay streams --> batch (per-host share of the global batch) --> multiprocess prefetch

Everything before packing is index arithmetic on a `grain.MapDataset`, so the order is a pure function
of the seed, hosts see disjoint records whose union is every epoch, and an iterator's state is a few
integers (`get_state`/`set_state`, saved by the trainer with Orbax). Packing consumes a variable number
of pairs per sample; its iterator keeps the parent's state from before the pairs it holds back, so a
restored pipeline yields exactly the batches that would have followed.

Batches: `tokens` int32 [B, T + 1, 17] and `weights` float32 [B, T + 1, 17], delayed columns
(`flmjax.tokens.delay_streams` of the layouts' raw [T, 17]; weights filled with 0 outside a stream).
A config with `preference` makes DPO pairs of its dialogs: the chosen side under those keys, the rejected
side as `rejected_tokens` / `rejected_weights` (dialogs without a reply to perturb are skipped).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np
from absl import flags
from grain.experimental import index_shuffle

from flmjax.data import layouts
from flmjax.data.config import POST_TRAINING, DataConfig
from flmjax.data.layouts.preference import PreferenceConfig, plan_pair, render_pair
from flmjax.data.records import PreparedCorpus, PreparedCorpusError, decode_record, dialog_from_record, pair_from_record
from flmjax.tokens import RELEASE_TOKENS, TokenIds

Item = tuple[int, int, int]  # (corpus, record, pass): which record, and which shuffled copy of its corpus


class EpochMixture(grain.MapDataset):
    """Per-epoch resampling and concatenation of corpora; element k is the `Item` at epoch k // len.

    Corpus c with n records and weight w contributes round(w * n) items per epoch (at least 1), taken
    from an endless stream of shuffled copies of the corpus: epoch e starts at copy e * ceil(w). So
    w = 5 takes every record exactly 5 times per epoch, w = 0.5 a fresh random half every epoch. The
    `pass` of an item is the number of its copy (dialogs read listen variant `pass mod variants`).
    """

    def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int):
        super().__init__([])
        if len(sizes) != len(weights) or not sizes or min(sizes) < 1 or min(weights) <= 0:
            raise ValueError(f"EpochMixture needs non-empty corpora and positive weights, got {sizes}, {weights}")
        self._sizes = [int(n) for n in sizes]
        self._copies = [math.ceil(w) for w in weights]
        takes = [max(1, round(w * n)) for w, n in zip(weights, sizes)]
        self._offsets = np.cumsum([0, *takes])
        # One 32-bit shuffle seed per corpus; copy p of corpus c is shuffled with seed + p.
        self._seeds = [int(np.random.SeedSequence([seed, c]).generate_state(1)[0]) for c in range(len(sizes))]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __str__(self) -> str:
        return f"EpochMixture(sizes={self._sizes}, epoch={len(self)})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, position = divmod(int(index), len(self))
        c = int(np.searchsorted(self._offsets, position, side="right")) - 1
        n = self._sizes[c]
        copy, k = divmod(epoch * self._copies[c] * n + position - int(self._offsets[c]), n)
        record = k if n == 1 else index_shuffle(k, max_index=n - 1, seed=(self._seeds[c] + copy) % 2**32, rounds=4)
        return (c, int(record), int(copy))


def item_dataset(
    sizes: Sequence[int], weights: Sequence[float], seed: int, process_index: int = 0, process_count: int = 1
) -> grain.MapDataset:
    """The endless, shuffled stream of `Item`s one host reads: every `process_count`-th of the global one."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    mixture = EpochMixture(sizes, weights, seed)
    if len(mixture) < process_count:
        raise ValueError(f"an epoch of {len(mixture)} records cannot feed {process_count} hosts")
    return mixture.shuffle(seed)[process_index::process_count].repeat()


# --- reading and laying out ------------------------------------------------------------------------------


class _ReadRecord:
    """Item -> decoded record. Holds folder names only, so it pickles into grain workers cheaply."""

    def __init__(self, roots: Sequence[str]):
        self._roots = list(roots)
        self._corpora: list[PreparedCorpus] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_roots": self._roots, "_corpora": None}

    def __call__(self, item: Item) -> dict[str, Any]:
        if self._corpora is None:
            self._corpora = [PreparedCorpus(r) for r in self._roots]
        c, record, copy = item
        meta, arrays = decode_record(self._corpora[c].source()[record])
        return {"item": item, "meta": meta, "arrays": arrays}


@dataclasses.dataclass
class LaidOut:
    """A laid-out sample and the items it was made of (for inspection and tests); for a preference
    pair, `sample` is the chosen side and `rejected` the other."""

    sample: layouts.Sample
    items: list[Item]
    rejected: layouts.Sample | None = None
    kind: str | None = None  # a pair's `PairKind`


class _LayoutDialog:
    def __init__(self, silence: Sequence[np.ndarray], cfg: layouts.LayoutConfig, ids: TokenIds):
        self._silence, self._cfg, self._ids = list(silence), cfg, ids

    def __call__(self, element: dict[str, Any]) -> LaidOut:
        c, _, copy = element["item"]
        turns, plan, listen = dialog_from_record(element["meta"], element["arrays"], variant=copy)
        sample = layouts.render_dialog(plan, turns, self._silence[c], self._ids, self._cfg, listen_codes=listen)
        return LaidOut(sample, [element["item"]])


class _LayoutPreferencePair:
    """A dialog's plan -> a preference pair; None (filtered out) for a dialog with no reply to perturb.
    The pair's draws come from a generator seeded by the item, as packing's do."""

    def __init__(self, silence: Sequence[np.ndarray], cfg: layouts.LayoutConfig, pref: PreferenceConfig,
                 ids: TokenIds, seed: int):  # fmt: skip
        self._silence, self._cfg, self._pref, self._ids, self._seed = list(silence), cfg, pref, ids, seed

    def __call__(self, element: dict[str, Any]) -> LaidOut | None:
        c, _, copy = element["item"]
        turns, plan, listen = dialog_from_record(element["meta"], element["arrays"], variant=copy)
        try:
            pair = plan_pair(plan, turns, np.random.default_rng([self._seed, *element["item"]]), self._pref)
        except layouts.LayoutError:
            return None
        sides = render_pair(pair, turns, self._silence[c], self._ids, self._cfg, listen_codes=listen)
        return LaidOut(sides.chosen, [element["item"]], rejected=sides.rejected, kind=str(sides.kind))


def _is_laid_out(element: LaidOut | None) -> bool:
    return element is not None


class PackPairsIterDataset(grain.IterDataset):
    """Post-training packing: consecutive (clip, sentence) pairs -> samples of `cfg.sample_frames`."""

    def __init__(self, parent: grain.IterDataset, cfg: layouts.LayoutConfig, ids: TokenIds, seed: int):
        super().__init__(parent)
        self._cfg, self._ids, self._seed = cfg, ids, seed

    def __iter__(self) -> _PackPairsIterator:
        return _PackPairsIterator(self._parent.__iter__(), self._cfg, self._ids, self._seed)

    def __str__(self) -> str:
        return f"PackPairsIterDataset(sample_frames={self._cfg.sample_frames})"


class _PackPairsIterator(grain.DatasetIterator):
    """Holds back the pairs a sample could not take; its state is the parent's from before them.

    A sample's gaps and TTS/ASR styles are drawn from a generator seeded by its first pair's item, so
    the samples do not depend on how the stream was split over hosts, workers or restarts.
    """

    def __init__(self, parent: grain.DatasetIterator, cfg: layouts.LayoutConfig, ids: TokenIds, seed: int):
        super().__init__(parent)
        self._cfg, self._ids, self._seed = cfg, ids, seed
        self._min_gap = layouts.frames(cfg.gap_s[0])
        self._held: list[tuple[dict[str, Any], layouts.AlignedPair]] = []
        self._held_states: list[dict[str, Any]] = []  # parent state before each held element

    def _fill(self) -> None:
        """Read pairs until they surely overflow a sample (each takes at least gap + its frames)."""
        need = self._cfg.sample_frames
        have = sum(self._min_gap + pair.codes.shape[1] for _, pair in self._held)
        while have < need:
            state = self._parent.get_state()
            try:
                element = next(self._parent)
            except StopIteration:
                return
            pair = pair_from_record(element["meta"], element["arrays"])
            self._held.append((element, pair))
            self._held_states.append(state)
            have += self._min_gap + pair.codes.shape[1]

    def __next__(self) -> LaidOut:
        self._fill()
        if not self._held:
            raise StopIteration
        first = self._held[0][0]["item"]
        rng = np.random.default_rng([self._seed, *first])
        try:
            sample, used = layouts.assemble_post_training([p for _, p in self._held], rng, self._ids, self._cfg)
        except layouts.LayoutError as e:  # the layouts number pairs in the list given; name the record
            k = re.match(r"pair (\d+)", str(e))
            element = self._held[int(k[1]) if k else 0][0]
            raise layouts.LayoutError(f"record {element['meta'].get('id')} {element['item']}: {e}") from None
        items = [element["item"] for element, _ in self._held[:used]]
        del self._held[:used], self._held_states[:used]
        return LaidOut(sample, items)

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._held_states[0] if self._held else self._parent.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._held.clear()
        self._held_states.clear()

    def __str__(self) -> str:
        return "PackPairsIterator"


class _DelayedArrays:
    def __init__(self, ids: TokenIds):
        self._ids = ids

    def __call__(self, laid_out: LaidOut) -> dict[str, np.ndarray]:
        tokens, weights = layouts.delay_sample(laid_out.sample, self._ids)
        out = {"tokens": tokens.astype(np.int32), "weights": weights.astype(np.float32)}
        if laid_out.rejected is not None:  # DPO's pair batch (`flmjax.train.dpo`)
            tokens, weights = layouts.delay_sample(laid_out.rejected, self._ids)
            out.update(rejected_tokens=tokens.astype(np.int32), rejected_weights=weights.astype(np.float32))
        return out


# --- public entry points -----------------------------------------------------------------------------------


def open_corpora(config: DataConfig, roots: Sequence[str | Path]) -> list[PreparedCorpus]:
    """Open the prepared folders of a config's corpora (in order) and check they fit its layout."""
    corpora = [PreparedCorpus(r) for r in roots]
    want = "speech" if config.layout == POST_TRAINING else "dialogs"
    for corpus in corpora:
        if corpus.kind != want:
            raise PreparedCorpusError(
                f"{corpus.root}: holds {corpus.kind}, {config.name} ({config.layout}) reads {want}"
            )
        if corpus.num_records == 0:
            raise PreparedCorpusError(f"{corpus.root}: no records (every entry failed to prepare?)")
        if want == "dialogs" and corpus.index.get("layout") not in (config.layout, layouts.Layout.RECORDED):
            raise PreparedCorpusError(
                f"{corpus.root}: dialogs planned for {corpus.index.get('layout')!r}, "
                f"{config.name} reads {config.layout!r}"
            )
    return corpora


def sample_dataset(
    config: DataConfig,
    roots: Sequence[str | Path],
    process_index: int = 0,
    process_count: int = 1,
    ids: TokenIds = RELEASE_TOKENS,
) -> grain.IterDataset:
    """Endless `LaidOut` samples of one host (raw coordinates), in a seed-determined order.

    `roots`: the prepared folders of `config.corpora`, in order (`flmjax.data.prepare.corpus_roots`).
    """
    corpora = open_corpora(config, roots)
    items = item_dataset([c.num_records for c in corpora], [s.weight for s in config.corpora], config.seed,
                         process_index, process_count)  # fmt: skip
    records = items.map(_ReadRecord([str(c.root) for c in corpora]))
    read = grain.ReadOptions(num_threads=config.read_threads, prefetch_buffer_size=64)
    if config.layout == POST_TRAINING:
        return PackPairsIterDataset(records.to_iter_dataset(read), config.layout_config, ids, config.seed)
    silence = [c.silence_codes for c in corpora]
    if config.preference is not None:
        pairs = _LayoutPreferencePair(silence, config.layout_config, config.preference, ids, config.seed)
        return records.map(pairs).filter(_is_laid_out).to_iter_dataset(read)
    return records.map(_LayoutDialog(silence, config.layout_config, ids)).to_iter_dataset(read)


def batch_dataset(
    config: DataConfig,
    roots: Sequence[str | Path],
    process_index: int = 0,
    process_count: int = 1,
    ids: TokenIds = RELEASE_TOKENS,
) -> grain.IterDataset:
    """Endless batches of one host: its share of `config.global_batch`, delayed, prefetched by
    `config.worker_count` processes (the same batches for a given worker count)."""
    batch = config.per_host_batch(process_count)
    ds = sample_dataset(config, roots, process_index, process_count, ids).map(_DelayedArrays(ids))
    ds = ds.batch(batch, drop_remainder=True)
    if config.worker_count > 0:
        # Grain's worker processes read absl flags (grain 0.2.18 even outside absl programs): use defaults.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.worker_count, per_worker_buffer_size=config.worker_buffer_size
            )
        )
    return ds
