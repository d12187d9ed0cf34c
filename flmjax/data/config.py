"""What data a training stage reads: `DataConfig`, a plain frozen dataclass for stage configs to embed.

Stage defaults follow training.md (sections 2, 3 and 5); every stage reads the demo corpus
(flmjax/data/demo/, package data; no download) until its corpora are pointed at real prepared folders, e.g.
`get_data_config("post2", corpora=(CorpusSpec("wenet", prepared="/data/wenet", weight=0.5), ...))`.
`get_data_config` is the one lookup from a stage name to its data config.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
from importlib import resources
from pathlib import Path
from typing import Any

from flmjax.config import ConfigError
from flmjax.data.augment import AugmentConfig
from flmjax.data.layouts import DIALOG_LAYOUTS, LayoutConfig
from flmjax.data.layouts.preference import PreferenceConfig

POST_TRAINING = "post_training"
LAYOUTS = (POST_TRAINING, *DIALOG_LAYOUTS)

CACHE_ENV = "FLMJAX_DATA_CACHE"


def _demo_dir() -> Path:
    """The demo corpus, package data of flmjax.data: a folder on disk (extracted for the process's lifetime if
    the package is imported from a zip, which needs Python >= 3.12 for a folder)."""
    demo = resources.files("flmjax.data") / "demo"
    if isinstance(demo, Path):
        return demo.resolve()
    stack = contextlib.ExitStack()
    atexit.register(stack.close)
    return stack.enter_context(resources.as_file(demo)).resolve()


def default_cache_dir() -> Path:
    """Where manifests are prepared on first use: $FLMJAX_DATA_CACHE (the tests point it at a folder of their
    own, so that parallel runs never share one), else the user's cache, $XDG_CACHE_HOME/flmjax/data
    (~/.cache/flmjax/data); never the checkout or the installed package."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec ignores a relative value
    return base / "flmjax" / "data"


DEMO_DIR = _demo_dir()
DEFAULT_CACHE_DIR = default_cache_dir()


@dataclasses.dataclass(frozen=True)
class CorpusSpec:
    """One corpus of a stage's mixture.

    `prepared`: a folder written by launch/prepare_data.py. Without it, `manifest` (a JSONL manifest or
    `tfds:NAME[:SPLIT]`) is prepared on first use into the config's cache dir. `weight` resamples the
    corpus every epoch: 0.5 keeps a fresh random half, 5 takes every record five times (post2's
    down-sampling of the automatic corpus and up-sampling of human-annotated sets).
    """

    name: str
    manifest: str | None = None
    prepared: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"CorpusSpec: name must be a non-empty folder name, got {self.name!r}")
        if self.manifest is None and self.prepared is None:
            raise ConfigError(f"CorpusSpec {self.name}: give a manifest or a prepared folder")
        if not self.weight > 0:
            raise ConfigError(f"CorpusSpec {self.name}: weight must be > 0, got {self.weight}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Corpora, layout, mixture, sequence length and batch size of one stage.

    Dialog stages read pre-encoded listen-channel variants: `variants` augmented copies of each dialog
    (noise, gain, leakage per `augment`; None: the clean user turns, one variant), and epoch e of a
    dialog reads variant e mod `variants`, so the model hears different noise in every epoch as long as
    epochs <= variants (see docs/data.md for why the noise is pre-encoded rather than encoded on the fly).
    """

    name: str
    layout: str
    corpora: tuple[CorpusSpec, ...]
    global_batch: int = 256
    layout_config: LayoutConfig = LayoutConfig()
    augment: AugmentConfig | None = None
    # Preference pairs for DPO (`flmjax.data.layouts.preference`): every sample a (chosen, rejected) pair.
    preference: PreferenceConfig | None = None
    variants: int = 1
    noise_dir: str | None = None  # noise audio files for augmentation; None: synthetic noise (demo)
    seed: int = 0
    worker_count: int = 0  # grain worker processes (multiprocess prefetch); 0: in the main process
    worker_buffer_size: int = 2  # batches each worker keeps ready
    read_threads: int = 0  # grain reader threads per process: 0 for local disks, more for remote storage
    cache_dir: str = str(DEFAULT_CACHE_DIR)  # manifests prepared on first use: $FLMJAX_DATA_CACHE, ~/.cache/flmjax/data
    mimi: str | None = None  # kyutai Mimi weights for first-use preparation; None: random Mimi (demo only)
    tokenizer: str = "qwen"  # text tokenizer: "qwen" (Qwen2.5 + FLM-Audio's specials) or "words" (WORD_TOKENS models)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"DataConfig {self.name}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        if not self.corpora:
            raise ConfigError(f"DataConfig {self.name}: no corpora")
        if len({c.name for c in self.corpora}) != len(self.corpora):
            raise ConfigError(f"DataConfig {self.name}: corpus names must be distinct")
        if self.global_batch < 1 or self.variants < 1 or min(self.worker_count, self.read_threads) < 0:
            raise ConfigError(
                f"DataConfig {self.name}: global_batch and variants must be >= 1, worker_count and read_threads >= 0"
            )
        if self.tokenizer not in ("qwen", "words"):
            raise ConfigError(f"DataConfig {self.name}: tokenizer must be 'qwen' or 'words', got {self.tokenizer!r}")
        if self.layout == POST_TRAINING and self.augment is not None:
            raise ConfigError(f"DataConfig {self.name}: augmentation applies to dialog layouts only")
        if self.preference is not None and self.layout == POST_TRAINING:
            raise ConfigError(f"DataConfig {self.name}: preference pairs are made of dialogs, not {POST_TRAINING}")
        if self.preference is not None and self.augment is not None and self.augment.leakage_prob > 0:
            # The echo follows the chosen side's speech: the shared listen channel would carry its timing.
            raise ConfigError(f"DataConfig {self.name}: preference pairs need augment.leakage_prob = 0")

    @property
    def seq_len(self) -> int:
        """Frames per sample (raw coordinates); batches carry seq_len + 1 delayed columns."""
        return self.layout_config.sample_frames

    @property
    def is_dialog(self) -> bool:
        return self.layout != POST_TRAINING

    def per_host_batch(self, process_count: int) -> int:
        if self.global_batch % process_count:
            raise ConfigError(f"global batch {self.global_batch} does not split over {process_count} hosts")
        return self.global_batch // process_count

    def replace(self, **changes: Any) -> DataConfig:
        return dataclasses.replace(self, **changes)


def _demo(name: str, weight: float = 1.0) -> CorpusSpec:
    return CorpusSpec(f"demo_{name}", manifest=str(DEMO_DIR / f"{name}.jsonl"), weight=weight)


# SFT samples: one dialog each, padded to a fixed length *(choice: 4096 frames = 5.5 min)* for static shapes.
_SFT_LAYOUT = LayoutConfig(sample_frames=4096, pad_dialogs=True)

DATA_CONFIGS: dict[str, DataConfig] = {
    # Post-training-1: TTS + ASR pairs of the whole automatically transcribed corpus.
    "post1": DataConfig("post1", POST_TRAINING, (_demo("speech_auto"),)),
    # Post-training-2: the automatic corpus down-sampled x0.5, human-annotated sets up-sampled x5.
    "post2": DataConfig("post2", POST_TRAINING, (_demo("speech_auto", 0.5), _demo("speech_human", 5.0))),
    # Fine-tuning-1: semi-duplex ASR-Response-TTS; noise and gain augmentation, no leakage; 2 epochs.
    "ft1": DataConfig(
        "ft1", "asr_response_tts", (_demo("dialogs"),), layout_config=_SFT_LAYOUT,
        augment=AugmentConfig(leakage_prob=0.0), variants=2,
    ),
    # Fine-tuning-2: Response-TTS with free user inputs (interruptions) and speech leakage; 6 epochs.
    "ft2": DataConfig(
        "ft2", "response_tts_free", (_demo("dialogs"),), layout_config=_SFT_LAYOUT,
        augment=AugmentConfig(), variants=6,
    ),
    # DPO (BayLing-Duplex Stage II): ft2's dialogs as preference pairs, turn-taking and interruption 1:1.
    # Every dialog that can be interrupted is (interruption_prob 1), so both kinds are on offer; no leakage.
    "dpo": DataConfig(
        "dpo", "response_tts_free", (_demo("dialogs"),),
        layout_config=dataclasses.replace(_SFT_LAYOUT, interruption_prob=1.0), augment=AugmentConfig(leakage_prob=0.0),
        variants=1, preference=PreferenceConfig(),
    ),
    # The demo: post-training layout on both demo speech corpora, short samples and a small batch (fits
    # the `demo` model's 2048 positions and a CPU).
    "demo": DataConfig(
        "demo", POST_TRAINING, (_demo("speech_auto"), _demo("speech_human")),
        global_batch=4, layout_config=LayoutConfig(sample_frames=256),
    ),
}  # fmt: skip


def register_data_config(config: DataConfig) -> None:
    """Add (or replace) a named data config, e.g. from a stage file in configs/."""
    DATA_CONFIGS[config.name] = config


def get_data_config(name: str, **overrides: Any) -> DataConfig:
    """The data config of a stage name (post1, post2, ft1, ft2, demo, or one registered later)."""
    try:
        config = DATA_CONFIGS[name]
    except KeyError:
        raise ConfigError(f"unknown data config {name!r}; known: {', '.join(sorted(DATA_CONFIGS))}") from None
    return config.replace(**overrides) if overrides else config
