"""Corpus sources: what the corpus argument of preparation names, opened as a list of entries.

- a JSONL manifest (`flmjax.data.corpus.read_manifest`): entries, or the errors of the lines that fail;
- `tfds:NAME[:SPLIT]`: references to a TFDS dataset's examples, read in the worker processes;
- `hf:PATH[:SPLIT]`: the same for a Hugging Face `datasets` audio dataset on disk;
- `moshi:FILE.jsonl`: moshi-finetune's stereo conversations with their alignments (`flmjax.data.moshi`).

Each entry comes with a label naming it in messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flmjax import storage
from flmjax.data import moshi
from flmjax.data.corpus import CorpusError, HfSpec, HfSpeech, SpeechEntry, TfdsSpec, TfdsSpeech, read_manifest


@dataclasses.dataclass(frozen=True)
class ExampleRef:
    """Example `index` of a dataset (TFDS or Hugging Face): read where the audio is loaded (a worker)."""

    spec: TfdsSpec | HfSpec
    index: int


_OPENED: dict[TfdsSpec | HfSpec, Sequence[SpeechEntry]] = {}  # per process: a dataset is opened once


def dataset(spec: TfdsSpec | HfSpec) -> Sequence[SpeechEntry]:
    """The examples of a dataset spec as entries (opened once per process)."""
    if spec not in _OPENED:
        _OPENED[spec] = TfdsSpeech(spec) if isinstance(spec, TfdsSpec) else HfSpeech(spec)
    return _OPENED[spec]


def open_source(
    corpus: str, tfds_options: dict[str, Any] | None = None, hf_options: dict[str, Any] | None = None
) -> tuple[str, list[Any], list[str]]:
    """(kind, entries (or their errors, or dataset references), labels naming them) of a corpus argument."""
    if corpus.startswith(moshi.PREFIX):
        recordings = moshi.read_recordings(corpus)
        name = Path(corpus[len(moshi.PREFIX) :]).name
        return "dialogs", recordings, [f"{name} ({r.id})" if isinstance(r, moshi.Recording) else "" for r in recordings]
    if corpus.startswith(("tfds:", "hf:")):
        if corpus.startswith("tfds:"):
            spec: TfdsSpec | HfSpec = TfdsSpec.parse(corpus, **(tfds_options or {}))
        else:
            spec = HfSpec.parse(corpus, **(hf_options or {}))
        n = len(dataset(spec))
        return "speech", [ExampleRef(spec, i) for i in range(n)], [f"{corpus}[{i}]" for i in range(n)]
    kind, items = read_manifest(corpus)
    name = storage.path(corpus).name
    return kind, items, [f"{name} ({e.id})" if not isinstance(e, CorpusError) else "" for e in items]
