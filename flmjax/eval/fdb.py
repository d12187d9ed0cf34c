"""Full-Duplex-Bench v1 / v1.5 timing metrics, computed from the benchmark's own files so that they give
the numbers of its evaluation scripts (DanielLin94144/Full-Duplex-Bench, v1_v1.5/evaluation) on the
same directory.

A task directory holds one folder per sample with `input.wav`, `output.wav`, `output.json`
(`{"text", "chunks": [{"text", "timestamp": [start, end]}]}`, word-level ASR of the output) and the
task's annotation. The rules, as the benchmark applies them:

- **Took the turn (TOR)**: 0 when the output has no words, or its words span less than 1 s and number
  at most 3; else 1. The span is last word end - first word start (first word start... last word start
  when the last end is null).
- **smooth_turn_taking**: latency = first word start - `turn_taking.json[0].timestamp[0]`;
  **user_interruption**: latency = first word start - `interrupt.json[0].timestamp[1]` (the benchmark's
  ASR keeps only the words after the interruption). For samples with TOR 1, negative latencies count as
  0; the task latency is their mean. **pause_handling**: TOR only (lower is better).
- **backchannel**: Silero VAD on `output.wav` (segments in seconds rounded to 0.1, as
  `get_speech_timestamps(return_seconds=True)` gives them); walking the segments in order, one longer
  than 3 s sets TOR 1 and stops the walk; a shorter one is a backchannel candidate, and sets TOR by the
  words of `output.json` that touch it (more than 3: 1; under 1 s with at most 2 words: 0; else 1), so
  the last segment walked decides. Frequency = candidates / seconds of output; JSD = Jensen-Shannon
  distance between the candidates' histogram over 0.2 s bins and the benchmark's ground-truth
  distribution of that sample (`icc_gt_distribution.json`, resampled linearly to the same bins), 1 when
  there is no candidate. Means (and standard deviations) over samples.
- **latency_intervals** (v1.5 `get_timing.py`): Silero VAD on both channels at 16 kHz, user segments
  merged across silences <= 0.6 s and model segments across <= 0.5 s; stop intervals = user/model
  overlaps (the shortest one per end time), response intervals = user end -> the next model start
  (one per model start, the latest user end). The benchmark writes them per sample; we add the mean
  interval durations.

Where the scripts crash or misalign (a folder without its annotation, no sample taking the turn, a
missing `output.json` in backchannel) this module raises a one-line error or reports null instead.
Audio is resampled to 16 kHz for the VAD; the benchmark's backchannel script does not resample (it reads
16 kHz outputs), so results differ only for outputs at other rates.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.spatial.distance import jensenshannon

from flmjax import audio
from flmjax.eval import EvalError, read_json
from flmjax.eval import vad as silero

TASKS = ("smooth_turn_taking", "pause_handling", "user_interruption", "backchannel", "latency_intervals")
ANNOTATION = {"smooth_turn_taking": "turn_taking.json", "user_interruption": "interrupt.json"}
TURN_MIN_S = 1.0  # words spanning less than this ...
TURN_MAX_WORDS = 3  # ... and at most this many: the model did not take the turn
BACKCHANNEL_MAX_S = 3.0  # a VAD segment longer than this is a turn, not a backchannel
JSD_BIN_S = 0.2
JSD_EPSILON = 1e-10
USER_MERGE_S, MODEL_MERGE_S = 0.6, 0.5  # get_timing.py's merge gaps
GT_DISTRIBUTION = "icc_gt_distribution.json"


def read_chunks(path: str | os.PathLike) -> list[dict]:
    """output.json -> its word chunks, checked: [{"text", "timestamp": [start, end | null]}]."""
    data = read_json(path)
    chunks = data.get("chunks") if isinstance(data, dict) else None
    if not isinstance(chunks, list):
        raise EvalError(f"{path}: expected {{'text', 'chunks': [...]}}")
    for i, c in enumerate(chunks):
        ts = c.get("timestamp") if isinstance(c, dict) else None
        if not (isinstance(ts, list) and len(ts) == 2 and isinstance(ts[0], (int, float))):
            raise EvalError(f"{path}: chunk {i} needs 'timestamp': [start, end]")
        if ts[1] is not None and not isinstance(ts[1], (int, float)):
            raise EvalError(f"{path}: chunk {i} has a non-numeric end time")
    return chunks


def annotation_time(path: str | os.PathLike, index: int) -> float:
    """`timestamp[index]` of the first entry of a task annotation (turn_taking.json, interrupt.json)."""
    data = read_json(path)
    try:
        value = data[0]["timestamp"][index]
    except (KeyError, IndexError, TypeError):
        raise EvalError(f"{path}: expected [{{'timestamp': [start, end], ...}}]") from None
    if not isinstance(value, (int, float)):
        raise EvalError(f"{path}: timestamp[{index}] is not a number")
    return float(value)


# --- the rules -------------------------------------------------------------------------------------


def took_turn(chunks: Sequence[dict]) -> int:
    """TOR of one output: 0 for no words, or at most 3 words spanning under 1 s; else 1."""
    if not chunks:
        return 0
    last = chunks[-1]["timestamp"]
    span = (last[1] if last[1] is not None else last[0]) - chunks[0]["timestamp"][0]
    return int(span >= TURN_MIN_S or len(chunks) > TURN_MAX_WORDS)


def turn_latency(chunks: Sequence[dict], reference_s: float) -> float | None:
    """Latency of a sample that took the turn (first word start - reference, negatives clipped to 0)."""
    return max(0.0, chunks[0]["timestamp"][0] - reference_s) if took_turn(chunks) else None


def words_touching(chunks: Sequence[dict], start: float, end: float) -> list[str]:
    """The words of `chunks` the backchannel rule attributes to the VAD segment [start, end]."""
    found = []
    for c in chunks:
        s, e = c["timestamp"]
        if s is None or (e is None and s < end):
            continue
        e = s if e is None else e
        if (s >= start and e <= end) or (s <= end and e > end) or (s <= start and e > start):
            found.append(c["text"])
    return found


def backchannel_sample(segments: Sequence[tuple[float, float]], chunks: Sequence[dict]) -> tuple[int, list]:
    """(TOR, backchannel candidates [[start, end], ...]) of one output from its VAD segments (seconds)."""
    tor, candidates = 0, list[list[float]]()
    for start, end in segments:
        duration = end - start
        if duration > BACKCHANNEL_MAX_S:
            return 1, candidates
        n = len(words_touching(chunks, start, end))
        tor = 1 if n > TURN_MAX_WORDS else int(not (duration < TURN_MIN_S and n <= 2))
        candidates.append([start, end])
    return tor, candidates


def backchannel_jsd(candidates: Sequence[Sequence[float]], duration_s: float, reference: Sequence[float]) -> float:
    """Jensen-Shannon distance of the candidates' 0.2 s histogram to the reference distribution."""
    if not candidates:
        return 1.0
    hist = np.zeros(int(duration_s / JSD_BIN_S) + 1)
    for start, end in candidates:
        first, last = int(start / JSD_BIN_S), int(end / JSD_BIN_S)
        hist[first : min(last, len(hist) - 1) + 1] += 1
    hist = (hist + JSD_EPSILON) / np.sum(hist + JSD_EPSILON)
    ref = np.interp(np.linspace(0, 1, len(hist)), np.linspace(0, 1, len(reference)), np.asarray(reference, float))
    return float(jensenshannon(hist, ref))


def merge_close(segments: Sequence[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    """Merge segments separated by at most `gap_s` (get_timing.py's rule: <=, not <)."""
    out: list[tuple[float, float]] = []
    for s, e in sorted(segments):
        if out and s - out[-1][1] <= gap_s:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def stop_intervals(user: Sequence[tuple[float, float]], model: Sequence[tuple[float, float]]) -> list[list[float]]:
    """Overlaps of user and model segments (sorted lists), the shortest per end time (ms), by end."""
    best: dict[int, tuple[float, float]] = {}
    i = j = 0
    while i < len(user) and j < len(model):
        s, e = max(user[i][0], model[j][0]), min(user[i][1], model[j][1])
        if e > s:
            key = round(e * 1000)
            if key not in best or e - s < best[key][1] - best[key][0]:
                best[key] = (s, e)
        if user[i][1] < model[j][1]:
            i += 1
        else:
            j += 1
    return [[round(s, 3), round(e, 3)] for s, e in sorted(best.values(), key=lambda x: x[1])]


def response_intervals(user: Sequence[tuple[float, float]], model: Sequence[tuple[float, float]]) -> list[list[float]]:
    """Each user end -> the first model start after it; one per model start (the latest user end)."""
    best: dict[int, list[float]] = {}
    for _, user_end in user:
        start = next((s for s, _ in model if s > user_end), None)
        if start is None:
            continue
        key = round(start * 1000)
        if key not in best or round(user_end, 3) > best[key][0]:
            best[key] = [round(user_end, 3), round(start, 3)]
    return [best[k] for k in sorted(best, key=lambda k: best[k][1])]


# --- a task directory ------------------------------------------------------------------------------


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def sample_dirs(root: str | os.PathLike, needs: str) -> list[Path]:
    """The sample folders of a task directory: immediate subfolders holding `needs`, in natural order."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"{root}: not a directory")
    found = sorted((d for d in root.iterdir() if d.is_dir() and (d / needs).is_file()), key=lambda d: _natural(d.name))
    if not found:
        raise EvalError(f"{root}: no sample folder holds {needs}")
    return found


def _seconds(segments_16k: Sequence[tuple[int, int]], total: int, resolution: int | None) -> list[tuple[float, float]]:
    if resolution is None:
        return [(s / silero.SAMPLE_RATE, e / silero.SAMPLE_RATE) for s, e in segments_16k]
    length = total / silero.SAMPLE_RATE
    return [
        (max(round(s / silero.SAMPLE_RATE, resolution), 0), min(round(e / silero.SAMPLE_RATE, resolution), length))
        for s, e in segments_16k
    ]


def vad_segments(path: Path, resolution: int | None = None) -> tuple[list[tuple[float, float]], float]:
    """Silero segments (seconds; rounded to `resolution` decimals as silero's return_seconds does) of a
    mono wav at any rate, and its duration in seconds."""
    pcm, rate = audio.load_audio(path)
    pcm16 = silero.to_16k(audio.to_mono(pcm), rate)
    probs = silero.probabilities(pcm16)[0]
    segments = silero.speech_segments(probs, pcm16.shape[-1])
    return _seconds(segments, pcm16.shape[-1], resolution), pcm.shape[-1] / rate


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def evaluate(root: str | os.PathLike, task: str, gt_distribution: str | os.PathLike | None = None) -> dict:
    """The metrics of a Full-Duplex-Bench task directory:
    {"task", "samples", "take_turn", "latency", "per_sample": [...], ...task extras}."""
    if task not in TASKS:
        raise EvalError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if task == "backchannel":
        return _backchannel(root, gt_distribution)
    if task == "latency_intervals":
        return _latency_intervals(root)
    per_sample = []
    for d in sample_dirs(root, "output.json"):
        chunks = read_chunks(d / "output.json")
        row: dict = {"sample": d.name, "take_turn": took_turn(chunks)}
        if task in ANNOTATION:
            reference = annotation_time(d / ANNOTATION[task], 0 if task == "smooth_turn_taking" else 1)
            row["latency"] = turn_latency(chunks, reference)
        if task == "user_interruption" and (d / "rating.json").is_file():
            rating = read_json(d / "rating.json")
            row["rating"] = rating.get("rating") if isinstance(rating, dict) else None
        per_sample.append(row)
    latencies = [r["latency"] for r in per_sample if r.get("latency") is not None]
    out = {
        "task": task,
        "samples": len(per_sample),
        "take_turn": _mean([r["take_turn"] for r in per_sample]),
        "latency": _mean(latencies) if task in ANNOTATION else None,
        "per_sample": per_sample,
    }
    if task == "user_interruption":  # the judge's 0-5 relevance, where a rating.json holds it
        out["rating"] = _mean([r["rating"] for r in per_sample if r.get("rating") is not None and r["take_turn"]])
    return out


def _backchannel(root: str | os.PathLike, gt_distribution: str | os.PathLike | None) -> dict:
    gt_path = Path(gt_distribution) if gt_distribution else Path(root) / GT_DISTRIBUTION
    reference = read_json(gt_path)
    if not isinstance(reference, dict):
        raise EvalError(f"{gt_path}: expected {{sample: [probabilities]}}")
    per_sample: list[dict] = []
    for d in sample_dirs(root, "output.wav"):
        if d.name not in reference:
            raise EvalError(f"{gt_path}: no ground-truth distribution for sample {d.name!r}")
        segments, duration = vad_segments(d / "output.wav", resolution=1)
        tor, candidates = backchannel_sample(segments, read_chunks(d / "output.json"))
        per_sample.append(
            {
                "sample": d.name,
                "take_turn": tor,
                "backchannels": candidates,
                "frequency": len(candidates) / duration,
                "jsd": backchannel_jsd(candidates, duration, reference[d.name]),
            }
        )
    stats = {k: [r[k] for r in per_sample] for k in ("take_turn", "frequency", "jsd")}
    return {
        "task": "backchannel",
        "samples": len(per_sample),
        "take_turn": _mean(stats["take_turn"]),
        "latency": None,
        "frequency": _mean(stats["frequency"]),
        "jsd": _mean(stats["jsd"]),
        "std": {k: float(np.std(v)) for k, v in stats.items()},
        "per_sample": per_sample,
    }


def _latency_intervals(root: str | os.PathLike) -> dict:
    per_sample: list[dict] = []
    for d in sample_dirs(root, "output.wav"):
        if not (d / "input.wav").is_file():
            raise EvalError(f"{d / 'input.wav'}: file not found")
        user = merge_close(vad_segments(d / "input.wav")[0], USER_MERGE_S)
        model = merge_close(vad_segments(d / "output.wav")[0], MODEL_MERGE_S)
        per_sample.append(
            {
                "sample": d.name,
                "latency_stop_list": stop_intervals(user, model),
                "latency_resp_list": response_intervals(user, model),
            }
        )

    def durations(key: str) -> list[float]:
        return [e - s for r in per_sample for s, e in r[key]]

    return {
        "task": "latency_intervals",
        "samples": len(per_sample),
        "take_turn": None,
        "latency": None,
        "stop_latency": _mean(durations("latency_stop_list")),
        "response_latency": _mean(durations("latency_resp_list")),
        "per_sample": per_sample,
    }
