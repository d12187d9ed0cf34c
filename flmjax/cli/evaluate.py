"""Evaluate a full-duplex model: recognition, turn-taking, Full-Duplex-Bench, scripted conversations.

    evaluate.py timing --user U.wav --model M.wav [--reference REF] [--json]   (or --stereo S.wav)
    evaluate.py wer --ref R --hyp H [--lang en|zh] [--norm whisper|seedtts|none] [--per-utterance] [--json]
    evaluate.py qa --hyp H --answers A.jsonl [--lang en|zh] [--json]
    evaluate.py fdb --root DIR --task TASK [--gt-distribution F] [--json]
    evaluate.py fdb-infer --checkpoint CKPT --mimi M --root DIR [--asr whisper:PATH|fake] [--batch N]
    evaluate.py conversation --checkpoint CKPT --mimi M (--script S.json | --scripts DIR) --out DIR
                             [--activity codes|vad] [--batch N] [--json]

Errors a user can fix (missing or malformed files, bad audio, bad scripts) are one line on stderr and
exit status 2. See README.md ("Evaluation") for the JSON each command writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from flmjax.errors import FlmjaxError

FRAME_S = 0.08


# --- shared helpers ------------------------------------------------------------------------------------


def _print(result: dict, as_json: bool, summary: list[str]) -> None:
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print("\n".join(summary))


def _fmt(x) -> str:
    return "n/a" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _load_model(args: argparse.Namespace):
    from flmjax import FLMAudio
    from flmjax.mimi import Mimi

    if args.mimi != "random" and not Path(args.mimi).is_file():
        raise FileNotFoundError(f"{args.mimi}: no such Mimi weights file (or pass --mimi random)")
    if not Path(args.checkpoint).is_dir():
        raise FileNotFoundError(f"{args.checkpoint}: no such checkpoint directory")
    model = FLMAudio.from_pretrained(args.checkpoint, dtype=args.dtype)
    mimi = Mimi.random(seed=0) if args.mimi == "random" else Mimi.from_pretrained(args.mimi)
    return model, mimi


def _settings(args: argparse.Namespace):
    from flmjax.infer.sampling import SamplingSettings

    settings = SamplingSettings(seed=args.seed)
    return settings.greedy_deterministic() if args.greedy else settings


# --- timing --------------------------------------------------------------------------------------------


def _channels(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, int]:
    """(user, model, rate) float [N] each at one rate, from two files or one stereo file."""
    from flmjax import audio
    from flmjax.eval import EvalError

    if args.stereo:
        pcm, rate = audio.load_audio(args.stereo)
        if pcm.shape[0] != 2:
            raise EvalError(f"{args.stereo}: expected 2 channels (user, model), got {pcm.shape[0]}")
        return pcm[0], pcm[1], rate
    (u, ur), (m, mr) = audio.load_audio(args.user), audio.load_audio(args.model)
    if ur != mr:
        _note(f"{args.model}: {mr} Hz resampled to {ur} Hz (the rate of {args.user})")
        m = audio.resample(m, mr, ur)
    u, m = audio.to_mono(u)[0], audio.to_mono(m)[0]
    if abs(len(u) - len(m)) > ur // 100:
        raise EvalError(
            f"{args.model}: {len(m) / ur:.2f} s but {args.user} is {len(u) / ur:.2f} s: channels must be time-aligned"
        )
    n = min(len(u), len(m))
    return u[:n], m[:n], ur


def _timing_of(user: np.ndarray, model: np.ndarray, rate: int) -> dict:
    from flmjax.eval import turntaking, vad

    if rate != vad.SAMPLE_RATE:
        _note(f"{rate} Hz audio resampled to {vad.SAMPLE_RATE} Hz for Silero VAD")
    u, m = vad.speech_seconds(np.stack([user, model]), rate)
    return turntaking.timing(u, m, len(user) / rate)


def cmd_timing(args: argparse.Namespace) -> int:
    from flmjax.eval import EvalError, read_json, turntaking

    if bool(args.stereo) == bool(args.user or args.model) or (not args.stereo and not (args.user and args.model)):
        raise EvalError("timing takes --user U.wav --model M.wav, or --stereo S.wav")
    result = _timing_of(*_channels(args))
    if args.reference:
        if args.reference.endswith(".json"):
            ref = read_json(args.reference)
            if not isinstance(ref, dict) or "per_minute" not in ref:
                raise EvalError(f"{args.reference}: expected the JSON of `timing --json`")
        else:
            ref = _timing_of(*_channels(argparse.Namespace(stereo=args.reference)))
        result["delta"] = turntaking.deviation(result["per_minute"], ref["per_minute"])
    pm = result["per_minute"]
    summary = [f"duration {result['duration_s']:.2f} s; IPUs user {len(result['ipus']['user'])}, model "
               f"{len(result['ipus']['model'])}"]  # fmt: skip
    summary += [f"{k}: {pm[k]['count']:.2f}/min, {pm[k]['seconds']:.2f} s/min" for k in turntaking.KINDS]
    if "delta" in result:
        summary.append("delta s/min: " + ", ".join(f"{k} {v:.2f}" for k, v in result["delta"].items()))
    _print(result, args.json, summary)
    return 0


# --- wer / qa ------------------------------------------------------------------------------------------


def read_texts(path: str, key: str = "text") -> list:
    """Utterances of a text file (one a line) or a JSONL file (records with `key`; paired by "id" when
    every record has one)."""
    from flmjax.eval import EvalError

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise EvalError(f"{path}: not UTF-8 text") from None
    if not path.endswith(".jsonl"):
        return lines
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalError(f"{path}: line {i + 1} is not JSON ({e.msg})") from None
        if not isinstance(rec, dict) or key not in rec:
            raise EvalError(f"{path}: line {i + 1} has no {key!r}")
        records.append(rec)
    return records


def _paired(ref_path: str, hyp_path: str, ref_key: str = "text") -> tuple[list, list[str]]:
    from flmjax.eval import EvalError

    refs, hyps = read_texts(ref_path, ref_key), read_texts(hyp_path)
    if refs and hyps and all(isinstance(r, dict) and "id" in r for r in refs + hyps):
        by_id = {h["id"]: h["text"] for h in hyps}
        missing = [r["id"] for r in refs if r["id"] not in by_id]
        if missing:
            raise EvalError(f"{hyp_path}: no hypothesis for id {missing[0]!r}")
        return [r[ref_key] for r in refs], [by_id[r["id"]] for r in refs]
    refs = [r[ref_key] if isinstance(r, dict) else r for r in refs]
    hyps = [h["text"] if isinstance(h, dict) else h for h in hyps]
    if len(refs) != len(hyps):
        raise EvalError(f"{hyp_path}: {len(hyps)} utterances but {ref_path} has {len(refs)}")
    return refs, hyps


def cmd_wer(args: argparse.Namespace) -> int:
    from flmjax.eval import recognition

    refs, hyps = _paired(args.ref, args.hyp)
    norm = args.norm or ("seedtts" if args.per_utterance else "whisper")
    result: dict = recognition.error_rate(refs, hyps, args.lang, norm)
    unit = "wer" if args.lang == "en" else "cer"
    if args.per_utterance:
        rates = recognition.utterance_error_rates(refs, hyps, args.lang, norm)
        result[f"mean_{unit}"] = float(np.mean(rates))
        result["per_utterance"] = rates
    result["normalizer"] = norm
    summary = [f"{unit.upper()} {result[unit]:.4f} over {result['words' if unit == 'wer' else 'chars']} "
               f"(S {result['substitutions']}, D {result['deletions']}, I {result['insertions']}; {norm})"]  # fmt: skip
    if args.per_utterance:
        summary.append(f"mean per-utterance {unit.upper()} {result[f'mean_{unit}']:.4f}")
    _print(result, args.json, summary)
    return 0


def cmd_qa(args: argparse.Namespace) -> int:
    from flmjax.eval import EvalError, recognition

    records = read_texts(args.answers, "answers") if args.answers.endswith(".jsonl") else None
    if records is None:
        raise EvalError(f"{args.answers}: answers must be JSONL records with 'answers' (a string or a list)")
    refs, hyps = _paired(args.answers, args.hyp, "answers")
    correct = [recognition.contains_answer(h, a, args.lang) for h, a in zip(hyps, refs)]
    result = {"accuracy": recognition.qa_accuracy(hyps, refs, args.lang), "items": len(refs), "correct": sum(correct)}
    _print(result, args.json, [f"accuracy {result['accuracy']:.4f} ({result['correct']}/{result['items']})"])
    return 0


# --- Full-Duplex-Bench ---------------------------------------------------------------------------------


def cmd_fdb(args: argparse.Namespace) -> int:
    from flmjax.eval import EvalError, fdb

    if (
        args.task == "backchannel"
        and not args.gt_distribution
        and not (Path(args.root) / fdb.GT_DISTRIBUTION).is_file()
    ):
        raise EvalError(
            f"{args.root}: backchannel needs --gt-distribution (the benchmark's {fdb.GT_DISTRIBUTION}, "
            "copied in shared/full-duplex-bench/)"
        )
    result = fdb.evaluate(args.root, args.task, args.gt_distribution)
    keys = [
        k
        for k in ("take_turn", "latency", "rating", "frequency", "jsd", "stop_latency", "response_latency")
        if k in result
    ]
    _print(result, args.json, [f"{args.task}: {result['samples']} samples"] + [f"{k}: {_fmt(result[k])}" for k in keys])
    return 0


def cmd_fdb_infer(args: argparse.Namespace) -> int:
    from flmjax.eval import asr, fdb
    from flmjax.eval.fdb_infer import infer_directory
    from flmjax.infer.session import Session

    transcriber = asr.backend(args.asr)  # a bad --asr fails before the model loads
    folders = fdb.sample_dirs(args.root, "input.wav")
    model, mimi = _load_model(args)
    session = Session(model, mimi, min(args.batch, len(folders)), _settings(args), window=args.window)
    done = infer_directory(session, args.root, _settings(args), transcriber, progress="fdb-infer")
    print(f"wrote output.wav and output.json in {len(done)} folders of {args.root}")
    return 0


# --- conversations -------------------------------------------------------------------------------------


def _scripts(args: argparse.Namespace) -> list:
    from flmjax.eval import EvalError
    from flmjax.eval.script import parse_script

    if bool(args.script) == bool(args.scripts):
        raise EvalError("conversation takes --script S.json or --scripts DIR")
    if args.script:
        return [parse_script(args.script)]
    paths = sorted(Path(args.scripts).glob("*.json")) if Path(args.scripts).is_dir() else []
    if not paths:
        raise EvalError(f"{args.scripts}: no *.json scripts in that folder")
    scripts = [parse_script(p) for p in paths]
    names = [s.name for s in scripts]
    if len(set(names)) != len(names):
        raise EvalError(f"{args.scripts}: two scripts share the name {next(n for n in names if names.count(n) > 1)!r}")
    return scripts


def write_conversation(out: Path, metrics: dict, streamed, plot: bool) -> None:
    """conversation.wav (user, model), monologue.json, metrics.json and timeline.png (speech drawn as the
    metrics' IPUs) of one conversation."""
    import soundfile

    from flmjax.eval import plot as plotting

    out.mkdir(parents=True, exist_ok=True)
    stereo = np.stack([streamed.user, streamed.reply], axis=1)
    soundfile.write(out / "conversation.wav", np.clip(stereo, -1, 1), 24_000, subtype="PCM_16")
    pieces = [{"frame": k, "time_s": round(k * FRAME_S, 3), "text": p} for k, p in enumerate(streamed.pieces) if p]
    (out / "monologue.json").write_text(
        json.dumps(
            {"frame_s": FRAME_S, "pieces": pieces, "utterances": metrics["monologue"]}, indent=1, ensure_ascii=False
        ),
        encoding="utf-8",
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    if plot:
        tt = metrics["turn_taking"]
        title = (f"{metrics['name']}: turn-taking {_fmt(tt['success_rate'])} ({tt['successes']}/{tt['turns']}), "
                 f"latency {_fmt(tt['latency_s'])} s, false starts {tt['false_starts']}, "
                 f"barge-in stop {_fmt(metrics['barge_in']['success_rate'])}, "
                 f"answers {_fmt(metrics['answers']['accuracy'])}")  # fmt: skip
        plotting.timeline(
            str(out / "timeline.png"), streamed.user, streamed.reply, 24_000, metrics["ipus"]["user"],
            metrics["ipus"]["model"], metrics["user_events"], metrics["monologue"], title=title,
            activity=metrics["activity"],
        )  # fmt: skip


def cmd_conversation(args: argparse.Namespace) -> int:
    from flmjax.eval.activity import CodesActivity
    from flmjax.eval.conversation import mean_metrics, run_scripts
    from flmjax.eval.script import render
    from flmjax.infer.session import Session

    scripts = _scripts(args)
    notes: list[str] = []
    for s in scripts:  # render once up front: bad audio or a missing espeak-ng fails before the model loads
        render(s, notes)
    model, mimi = _load_model(args)
    detector = CodesActivity.from_mimi(mimi) if args.activity == "codes" else None
    session = Session(model, mimi, min(args.batch, len(scripts)), _settings(args), window=args.window)
    results = run_scripts(session, scripts, _settings(args), args.activity, detector, notes, progress="conversation")
    for n in dict.fromkeys(notes):
        _note(n)
    out = Path(args.out)
    single = args.script is not None
    for metrics, streamed in results:
        write_conversation(out if single else out / metrics["name"], metrics, streamed, not args.no_plot)
    if single:
        result = results[0][0]
    else:
        result = {
            **mean_metrics([r[0] for r in results]),
            "per_conversation": {r[0]["name"]: _brief(r[0]) for r in results},
        }
        (out / "metrics.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    summary = [f"{r[0]['name']}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in _brief(r[0]).items()) for r in results]
    summary.append(f"wrote {out}")
    _print(result, args.json, summary)
    return 0


def _brief(m: dict) -> dict:
    """The headline numbers of one conversation."""
    return {
        "turn_taking": m["turn_taking"]["success_rate"],
        "latency_s": m["turn_taking"]["latency_s"],
        "false_starts": m["turn_taking"]["false_starts"],
        "barge_in": m["barge_in"]["success_rate"],
        "answers": m["answers"]["accuracy"],
        "tt_sr_3s": m["bayling"]["tt_sr_3s"],
    }


# --- the parser ----------------------------------------------------------------------------------------


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="HF-layout FLM-Audio directory, or an flmjax trainer checkpoint")
    p.add_argument("--mimi", required=True, help="kyutai Mimi safetensors file, or 'random' (random weights)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--window", type=int, default=None, help="KV cache frames (default: max_position_embeddings)")
    p.add_argument("--batch", type=int, default=8, help="streams stepped together in one Session batch")
    p.add_argument("--greedy", action="store_true", help="argmax decoding, no repetition penalty")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (a script's own 'seed' wins)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from flmjax.eval.conversation import ACTIVITY
    from flmjax.eval.fdb import TASKS
    from flmjax.eval.recognition import NORMALIZERS

    p = argparse.ArgumentParser(prog="evaluate", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("timing", help="turn-taking statistics of a recorded two-channel conversation")
    t.add_argument("--user", help="the user's channel (wav/flac/...)")
    t.add_argument("--model", help="the model's channel, time-aligned with --user")
    t.add_argument("--stereo", help="one file: channel 0 user, channel 1 model")
    t.add_argument("--reference", help="a reference conversation (stereo audio, or `timing --json` output): adds delta")
    t.set_defaults(run=cmd_timing)

    w = sub.add_parser("wer", help="WER (en) or CER (zh) of hypotheses against references")
    w.add_argument("--ref", required=True, help="text file (one utterance a line) or JSONL with 'text' (and 'id')")
    w.add_argument("--hyp", required=True)
    w.add_argument("--lang", default="en", choices=("en", "zh"))
    w.add_argument("--norm", choices=NORMALIZERS, help="default: whisper; seedtts with --per-utterance")
    w.add_argument("--per-utterance", action="store_true", help="also the mean of per-utterance rates (Seed-TTS)")
    w.set_defaults(run=cmd_wer)

    q = sub.add_parser("qa", help="spoken-QA accuracy: an answer appears in the transcript")
    q.add_argument("--hyp", required=True, help="transcripts: text lines or JSONL with 'text' (and 'id')")
    q.add_argument("--answers", required=True, help="JSONL with 'answers' (string or list; and 'id')")
    q.add_argument("--lang", default="en", choices=("en", "zh"))
    q.set_defaults(run=cmd_qa)

    f = sub.add_parser("fdb", help="Full-Duplex-Bench metrics of a task directory")
    f.add_argument("--root", required=True)
    f.add_argument("--task", required=True, choices=TASKS)
    f.add_argument("--gt-distribution", help="backchannel: the benchmark's icc_gt_distribution.json")
    f.set_defaults(run=cmd_fdb)

    fi = sub.add_parser("fdb-infer", help="write output.wav/output.json for every sample folder from a model")
    _model_args(fi)
    fi.add_argument("--root", required=True)
    fi.add_argument("--asr", help="whisper:/path/to/local/whisper (word timestamps) or fake; default: the monologue")
    fi.set_defaults(run=cmd_fdb_infer)

    c = sub.add_parser("conversation", help="scripted users played to the model, measured and drawn")
    _model_args(c)
    c.add_argument("--script", help="one script (JSON)")
    c.add_argument("--scripts", help="a folder of scripts, run as batches of --batch")
    c.add_argument("--out", required=True, help="output folder (one subfolder per script with --scripts)")
    c.add_argument("--activity", default="codes", choices=ACTIVITY, help="voice activity from Mimi codes or Silero VAD")
    c.add_argument("--no-plot", action="store_true", help="skip timeline.png")
    c.set_defaults(run=cmd_conversation)

    for sp in (t, w, q, f, c):
        sp.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if getattr(args, "batch", 1) < 1:
        p.error("--batch must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.run(args)
    except (FlmjaxError, OSError, ValueError) as e:  # bad files and inputs: one line, exit 2
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
