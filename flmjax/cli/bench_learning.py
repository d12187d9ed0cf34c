"""Does the recipe teach full-duplex behaviour? Generate the synthetic curriculum, fit the codec's quantizer
to it, train the `school` chain (post1 -> ft1 -> ft2 -> dpo, BayLing-Duplex's timing DPO) and score the
untrained model and every stage on the held-out dialogs with `evaluate.py conversation` (batched, codes-level
activity, greedy decoding).

    python launch/bench_learning.py [--out DIR] [--size full|small] [--seed 0]

Writes DIR/corpus (the curriculum), DIR/mimi.safetensors (the random Mimi with its fitted quantizer),
DIR/<stage> (runs), DIR/models/<stage> (each stage's export), DIR/export (the final model, HF layout),
DIR/eval/<stage> (conversation outputs), DIR/results.json; prints the table, then one JSON line.
Each step is skipped when its output is already there (a killed run picks up where it stopped).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flmjax.errors import FlmjaxError

if TYPE_CHECKING:
    from flmjax.train.config import TrainConfig

STAGES = ("post1", "ft1", "ft2", "dpo")
SIZES: dict[str, dict[str, Any]] = {
    # The benchmark: 96 training dialogs and 221 questions; the chain's steps are in configs/school.py.
    "full": {"train_dialogs": 48, "held_out_dialogs": 8, "speech_items": 120, "fit_clips": 120, "codes": (128, 16),
             "steps": None, "evaluate": ("untrained", *STAGES)},
    # The CI test: a handful of dialogs and few steps (what it asserts is only trained > untrained); no dpo
    # stage (tests/test_dpo.py covers DPO's training, with its own compile).
    # Fewer speech codes (16 semantic, 4 acoustic): each is likelier, so a briefly trained model's greedy
    # choice at a reply's onset is speech rather than silence (with 128/16 and 80 ft2 steps it never was).
    "small": {"train_dialogs": 12, "held_out_dialogs": 4, "speech_items": 24, "fit_clips": 32, "codes": (16, 4),
              "steps": {"post1": 30, "ft1": 40, "ft2": 120}, "evaluate": ("untrained", "ft2")},
}  # fmt: skip


def _log(message: str) -> None:
    print(f"[bench_learning {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_curriculum(out: Path, size: str, seed: int):
    """The curriculum under out/corpus (generated unless the same size and seed already are)."""
    from flmjax.data import curriculum

    root = out / "corpus"
    spec = {
        "size": size,
        "seed": seed,
        **{k: SIZES[size][k] for k in ("train_dialogs", "held_out_dialogs", "speech_items", "fit_clips")},
    }
    marker = root / "curriculum.json"
    sizes = curriculum.CurriculumSize(
        train_dialogs=spec["train_dialogs"],
        held_out_dialogs=spec["held_out_dialogs"],
        speech_items=spec["speech_items"],
    )
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return curriculum.Curriculum.at(root)
    started = time.perf_counter()
    corpus = curriculum.generate(root, sizes, seed)
    marker.write_text(json.dumps(spec))
    _log(f"curriculum written to {root} in {time.perf_counter() - started:.0f} s")
    return corpus


def fit_mimi(out: Path, corpus, seed: int, clips: int, codes: tuple[int, int]) -> Path:
    """out/mimi.safetensors: the random Mimi (seed 0) with its quantizer fitted to training recordings
    (`codes`: speech clusters of the semantic and the first acoustic codebook)."""
    from flmjax import audio
    from flmjax.mimi import Mimi
    from flmjax.mimi.fit import fit_quantizer, latents

    path = out / "mimi.safetensors"
    if path.exists():
        return path
    started = time.perf_counter()
    entries = [json.loads(line) for line in corpus.speech.read_text().splitlines()]
    picks = np.random.default_rng(seed).permutation(len(entries))[:clips]
    pcm = [audio.load_audio(corpus.root / entries[i]["audio"])[0][0] for i in sorted(picks)]
    random = Mimi.random(seed=0)
    fitted = fit_quantizer(random, latents(random, pcm), semantic_codes=codes[0], acoustic_codes=codes[1], seed=seed)
    tmp = path.with_suffix(".tmp")
    fitted.save_pretrained(tmp)
    tmp.rename(path)
    _log(f"Mimi quantizer fitted on {len(pcm)} training recordings in {time.perf_counter() - started:.0f} s: {path}")
    return path


def stage_configs(out: Path, size: str) -> list:
    """flmjax/configs/school.py's chain under `out` (the small size: its stages, with its own steps), each
    stage after the first starting from the previous one's run directory (dpo: also its pi_ref)."""
    from flmjax.configs import school

    moved: list[TrainConfig] = []
    steps = SIZES[size]["steps"]
    for config in school.config(out):
        if steps and config.stage not in steps:
            continue
        changes: dict = {"export": dataclasses.replace(config.export, dir="")}
        if moved:
            changes["init"] = dataclasses.replace(config.init, params_from=moved[-1].resolved_run_dir)
        if steps:
            changes["steps"] = steps[config.stage]
            changes["checkpoint"] = dataclasses.replace(config.checkpoint, every_steps=steps[config.stage])
        moved.append(dataclasses.replace(config, **changes))
    return moved


def export_untrained(out: Path, seed: int) -> Path:
    from flmjax import FLMAudio

    path = out / "models" / "untrained"
    if not (path / "config.json").exists():
        FLMAudio.init("school", seed).save_pretrained(path)
    return path


def evaluate(checkpoint: Path, mimi: Path, scripts: Path, out: Path, batch: int) -> dict:
    """`evaluate.py conversation --scripts` on the held-out scripts -> its top-level metrics.json."""
    from flmjax.cli import evaluate as cli

    if not (out / "metrics.json").exists():
        argv = ["conversation", "--checkpoint", str(checkpoint), "--mimi", str(mimi), "--scripts", str(scripts),
                "--out", str(out), "--batch", str(batch), "--greedy"]  # fmt: skip
        if cli.main(argv) != 0:
            raise FlmjaxError(f"evaluate.py {' '.join(argv)} failed")
    return json.loads((out / "metrics.json").read_text())


def summarize(metrics: dict, eval_dir: Path, reference: dict) -> dict:
    """The table's numbers: pooled rates, false starts per user floor, Table 6's deviations."""
    from flmjax.eval import turntaking

    pooled = metrics["pooled"]
    floors = 0
    deltas: dict[str, list[float]] = {k: [] for k in turntaking.KINDS}
    for name in metrics["per_conversation"]:
        conversation = json.loads((eval_dir / name / "metrics.json").read_text())
        floors += sum(e["kind"] in ("turn", "hesitation") for e in conversation["user_events"])
        ref = reference[name]
        expected = turntaking.timing(ref["user"], ref["model"], ref["duration_s"])
        for k, v in turntaking.deviation(conversation["per_minute"], expected["per_minute"]).items():
            deltas[k].append(v)
    false_starts = pooled["turn_taking"]["false_starts"]
    return {
        "turn_taking": {
            "success_rate": pooled["turn_taking"]["success_rate"],
            "turns": pooled["turn_taking"]["turns"],
            "latency_s": metrics["mean"]["turn_taking"]["latency_s"],
        },  # fmt: skip
        "false_starts": false_starts / floors if floors else None,
        "false_starts_count": false_starts,
        "floors": floors,
        "barge_in": {
            "success_rate": pooled["barge_in"]["success_rate"],
            "applicable": pooled["barge_in"]["applicable"],
        },
        "backchannel_continue_rate": pooled["backchannel"]["continue_rate"],
        "hesitation_hold_rate": pooled["hesitation"]["hold_rate"],
        "answer_accuracy": pooled["answers"]["accuracy"],
        "answers": pooled["answers"]["count"],
        "delta_per_minute_s": {k: float(np.mean(v)) if v else None for k, v in deltas.items()},
    }


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def table(rows: dict[str, dict]) -> str:
    head = ("| model | turn-taking ≤1.5 s | false starts | barge-in stop ≤1 s | back-channel kept | hesitation held "
            "| answers | ΔPause | ΔGap | ΔOverlap |")  # fmt: skip
    lines = [head, "|" + "---|" * 10]
    for name, r in rows.items():
        d = r["delta_per_minute_s"]
        lines.append(
            f"| {name} | {_pct(r['turn_taking']['success_rate'])} of {r['turn_taking']['turns']} "
            f"| {_pct(r['false_starts'])} ({r['false_starts_count']}/{r['floors']}) "
            f"| {_pct(r['barge_in']['success_rate'])} of {r['barge_in']['applicable']} "
            f"| {_pct(r['backchannel_continue_rate'])} | {_pct(r['hesitation_hold_rate'])} "
            f"| {_pct(r['answer_accuracy'])} of {r['answers']} | "
            + " | ".join("n/a" if d[k] is None else f"{d[k]:.2f}" for k in ("pause", "gap", "overlap"))
            + " |"
        )
    return "\n".join(lines)


def run(out: Path, size: str, seed: int, batch: int) -> dict:
    from flmjax.train.checkpoint import export_checkpoint
    from flmjax.train.loop import train

    out.mkdir(parents=True, exist_ok=True)
    corpus = prepare_curriculum(out, size, seed)
    mimi = fit_mimi(out, corpus, seed, SIZES[size]["fit_clips"], SIZES[size]["codes"])
    reference = json.loads(corpus.reference.read_text())
    rows, seconds = {}, {}
    models = [("untrained", export_untrained(out, seed))]
    for config in stage_configs(out, size):
        started = time.perf_counter()
        result = train(config)
        seconds[config.stage] = time.perf_counter() - started
        if result.preempted:
            raise FlmjaxError(f"{config.stage} stopped by SIGTERM at step {result.step}: run again to resume")
        path = out / "models" / config.stage
        if not (path / "config.json").exists():
            export_checkpoint(result.run_dir, path, dtype="float32")
        _log(
            f"{config.stage}: {result.step} steps in {seconds[config.stage]:.0f} s, "
            f"loss {result.last.get('loss', math.nan):.3f}"
        )
        models.append((config.stage, path))
    last = models[-1][0]
    final = out / "export"
    if not (final / "config.json").exists():
        export_checkpoint(out / last, final, dtype="float32")
    for name, path in models:
        if name not in SIZES[size]["evaluate"]:
            continue
        started = time.perf_counter()
        metrics = evaluate(path, mimi, corpus.scripts, out / "eval" / name, batch)
        rows[name] = summarize(metrics, out / "eval" / name, reference)
        _log(f"evaluated {name} in {time.perf_counter() - started:.0f} s")
    results = {"size": size, "seed": seed, "train_seconds": seconds, "stages": rows, "final": rows[last]}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/school", help="output folder (default runs/school, in the cwd)")
    parser.add_argument("--size", default="full", choices=tuple(SIZES), help="full: the benchmark; small: the CI test")
    parser.add_argument("--seed", type=int, default=0, help="curriculum, quantizer fit and initialisation seed")
    parser.add_argument("--batch", type=int, default=8, help="conversations evaluated together in one Session batch")
    args = parser.parse_args(argv)
    try:
        result = run(Path(args.out).resolve(), args.size, args.seed, args.batch)
    except (FlmjaxError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(result["stages"]))
    final = result["final"]
    line = {
        "turn_taking": {"success_rate": final["turn_taking"]["success_rate"]},
        "false_starts": final["false_starts"],
        "barge_in": {"success_rate": final["barge_in"]["success_rate"]},
        "answer_accuracy": final["answer_accuracy"],
        "delta_per_minute_s": final["delta_per_minute_s"],
        "train_seconds": sum(result["train_seconds"].values()),
    }
    print(json.dumps(line))
    return 0
