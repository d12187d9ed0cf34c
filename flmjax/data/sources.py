"""Corpus sources: what the corpus argument of preparation names, opened as a list of entries.

- a JSONL manifest (`flmjax.data.corpus.read_manifest`): entries, or the errors of the lines that fail;
- `tfds:NAME[:SPLIT]`: references to a TFDS dataset's examples, read in the worker processes.

Each entry comes with a label naming it in messages.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from flmjax.data.corpus import CorpusError, TfdsSpec, TfdsSpeech, read_manifest


@dataclasses.dataclass(frozen=True)
class TfdsRef:
    """Example `index` of a TFDS dataset: read where the audio is loaded (a worker process)."""

    spec: TfdsSpec
    index: int


def open_source(corpus: str, tfds_options: dict[str, Any] | None = None) -> tuple[str, list[Any], list[str]]:
    """(kind, entries (or their errors, or TFDS references), labels naming them) of a corpus argument."""
    if corpus.startswith("tfds:"):
        spec = TfdsSpec.parse(corpus, **(tfds_options or {}))
        n = len(TfdsSpeech(spec))
        return "speech", [TfdsRef(spec, i) for i in range(n)], [f"{corpus}[{i}]" for i in range(n)]
    kind, items = read_manifest(corpus)
    name = Path(corpus).name
    return kind, items, [f"{name} ({e.id})" if not isinstance(e, CorpusError) else "" for e in items]
