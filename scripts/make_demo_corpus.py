"""Rebuild the demo corpus in flmjax/data/demo/ (package data) with espeak-ng (no download;
`apt-get install espeak-ng`).

    python scripts/make_demo_corpus.py [--out flmjax/data/demo]

Writes 16 kHz mono 16-bit WAV files (16 kHz on purpose: preparation must resample to Mimi's 24 kHz) and
three manifests in the formats of docs/data.md:
  speech_auto.jsonl   sentence-aligned speech tagged "auto" (English with word timestamps, Chinese)
  speech_human.jsonl  sentence-aligned speech tagged "human"
  dialogs.jsonl       multi-turn dialogs: two user voices and one model voice per dialog; one dialog has
                      an interruption (the user talks over the model), one takes its user turns as spans
                      of a single recording.
Times are measured on the synthesized audio (leading/trailing silence trimmed). English word timestamps
come from the durations of successive sentence prefixes: an approximation, good enough for a demo of the
word-level layout. The output is deterministic for a given espeak-ng version.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
ESPEAK_RATE = 22_050
SILENCE_DB = -45.0  # below this (frame RMS, dBFS) audio counts as silence when trimming

EN_AUTO = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
]
ZH_AUTO = ["今天天气很好。", "我们去公园散步吧。", "这本书非常有意思。", "请把窗户打开。"]
EN_HUMAN = [
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
]
ZH_HUMAN = ["他每天早上六点起床。", "火车马上就要开了。", "我喜欢喝绿茶。", "明天可能会下雨。"]

# (language, user voices, model voice, turns as (role, text)); the model voice is the same in every
# English dialog, as the papers' SFT data keeps one model voice.
MODEL_EN, MODEL_ZH = "en-us+f3", "cmn+f3"
DIALOGS = [
    ("en", ("en-us+m3", "en-gb+m1"), MODEL_EN, [
        ("user", "Hi, what is the capital of France?"),
        ("model", "The capital of France is Paris."),
        ("user", "And how many people live there?"),
        ("model", "About two million people live in the city itself."),
    ]),
    ("en", ("en-gb-scotland+m2", "en-us+m7"), MODEL_EN, [
        ("user", "Can you tell me a short story?"),
        ("model", "Once upon a time, a small fox lived at the edge of a quiet forest, and every morning it"),
        ("user", "Sorry, make it about a cat instead."),
        ("model", "Sure. Once upon a time, a curious cat lived on a boat."),
    ]),
    ("en", ("en-us+m2", "en-029+m4"), MODEL_EN, [
        ("user", "What should I cook tonight?"),
        ("model", "How about a simple tomato pasta?"),
        ("user", "Sounds good, thank you."),
    ]),
    ("zh", ("cmn+m3", "cmn+m1"), MODEL_ZH, [
        ("user", "你好，今天天气怎么样？"),
        ("model", "今天是晴天，很适合出去走走。"),
        ("user", "谢谢你。"),
        ("model", "不客气。"),
    ]),
]  # fmt: skip
INTERRUPTED_DIALOG = 1  # its user's second turn starts 1.5 s into the model's first answer
REACTION_S = 0.5  # the interrupted model stops this long after the user starts (the papers' reaction delay)
SPAN_DIALOG = 2  # its user turns are spans of one recording
TURN_GAP_S = 0.5  # pause between one speaker's end and the other's start


def synthesize(text: str, voice: str) -> np.ndarray:
    """espeak-ng -> float32 mono at SAMPLE_RATE, leading and trailing silence trimmed."""
    speed = "150" if voice.startswith("cmn") else "165"
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", speed, "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        if w.getframerate() != ESPEAK_RATE or w.getnchannels() != 1:
            raise RuntimeError(
                f"espeak-ng wrote {w.getframerate()} Hz x{w.getnchannels()}, expected {ESPEAK_RATE} Hz mono"
            )
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    pcm = resample_poly(pcm, SAMPLE_RATE // 50, ESPEAK_RATE // 50).astype(np.float32)
    start, end = _voiced_span(pcm)
    return pcm[start:end]


def _voiced_span(pcm: np.ndarray, hop: int = 160) -> tuple[int, int]:
    frames = pcm[: len(pcm) // hop * hop].reshape(-1, hop)
    loud = np.flatnonzero(20 * np.log10(np.sqrt((frames**2).mean(-1)) + 1e-9) > SILENCE_DB)
    if not len(loud):
        raise RuntimeError("espeak-ng produced silence")
    return int(loud[0] * hop), int((loud[-1] + 1) * hop)


def word_times(text: str, voice: str) -> list[dict]:
    """Word timestamps (s, from the start of the trimmed sentence) from durations of growing prefixes."""
    words = text.split()
    ends = [len(synthesize(" ".join(words[: i + 1]), voice)) / SAMPLE_RATE for i in range(len(words))]
    total = len(synthesize(text, voice)) / SAMPLE_RATE
    ends = [min(e, total) for e in ends[:-1]] + [total]
    starts = [0.0] + ends[:-1]
    return [{"start": round(s, 3), "end": round(e, 3), "text": w} for w, s, e in zip(words, starts, ends)]


def write_wav(path: Path, pcm: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)), dtype=np.float32)


def speech_manifest(out: Path, name: str, source: str, en: list[str], zh: list[str]) -> list[dict]:
    """One entry per file; every third file carries two sentences, so a file can hold several segments."""
    items = [("en", s, "en-us" if i % 2 else "en-gb") for i, s in enumerate(en)] + [("zh", s, "cmn") for s in zh]
    entries: list[dict] = []
    i = 0
    while i < len(items):
        group = (
            items[i : i + 2]
            if len(entries) % 3 == 2 and i + 1 < len(items) and items[i][0] == items[i + 1][0]
            else items[i : i + 1]
        )
        i += len(group)
        pcm, segments, t = [silence(0.3)], [], 0.3
        for lang, text, voice in group:
            clip = synthesize(text, voice)
            seg = {"start": round(t, 3), "end": round(t + len(clip) / SAMPLE_RATE, 3), "text": text}
            if lang == "en":  # word timestamps for the word-level ablation, relative to the file
                seg["words"] = [
                    dict(w, start=round(w["start"] + t, 3), end=round(w["end"] + t, 3)) for w in word_times(text, voice)
                ]
            segments.append(seg)
            pcm += [clip, silence(0.6)]
            t += len(clip) / SAMPLE_RATE + 0.6
        uid = f"{name}_{len(entries):03d}"
        write_wav(out / "audio" / f"{uid}.wav", np.concatenate(pcm))
        entries.append(
            {"id": uid, "audio": f"audio/{uid}.wav", "language": group[0][0], "source": source, "segments": segments}
        )
    return entries


def dialog_manifest(out: Path) -> list[dict]:
    entries = []
    for d, (lang, user_voices, model_voice, turns) in enumerate(DIALOGS):
        uid = f"dialog_{d:03d}"
        clips = [
            synthesize(text, model_voice if role == "model" else user_voices[k % 2])
            for k, (role, text) in enumerate(turns)
        ]
        starts: list[float] = []
        t = 0.3
        for k, clip in enumerate(clips):
            if d == INTERRUPTED_DIALOG and k == 2:
                t = starts[1] + 1.5  # the user talks over the model's answer
            starts.append(round(t, 3))
            t += len(clip) / SAMPLE_RATE + TURN_GAP_S
        ends = [start + len(clip) / SAMPLE_RATE for start, clip in zip(starts, clips)]
        if d == INTERRUPTED_DIALOG:  # the model stops talking: its turn ends, cutting its audio
            ends[1] = starts[2] + REACTION_S
        out_turns = []
        if d == SPAN_DIALOG:  # all user turns in one recording, each turn a span of it
            user_file, pos, spans = f"audio/{uid}_user.wav", 0.0, {}
            parts = []
            for k, (role, _) in enumerate(turns):
                if role == "user":
                    spans[k] = {
                        "path": user_file,
                        "start": round(pos, 3),
                        "end": round(pos + len(clips[k]) / SAMPLE_RATE, 3),
                    }
                    parts += [clips[k], silence(0.4)]
                    pos += len(clips[k]) / SAMPLE_RATE + 0.4
            write_wav(out / user_file, np.concatenate(parts))
        for k, ((role, text), clip) in enumerate(zip(turns, clips)):
            audio: str | dict[str, object]  # a file, or a span of the user's one recording
            if d == SPAN_DIALOG and role == "user":
                audio = spans[k]
            else:
                audio = f"audio/{uid}_t{k}.wav"
                write_wav(out / audio, clip)
            out_turns.append({"role": role, "text": text, "audio": audio, "start": starts[k], "end": round(ends[k], 3)})
        entries.append({"id": uid, "language": lang, "turns": out_turns})
    return entries


def write_jsonl(path: Path, entries: list[dict]) -> None:
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "flmjax" / "data" / "demo"))
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    out = Path(args.out)
    if (out / "audio").exists():
        shutil.rmtree(out / "audio")
    (out / "audio").mkdir(parents=True)
    write_jsonl(out / "speech_auto.jsonl", speech_manifest(out, "auto", "auto", EN_AUTO, ZH_AUTO))
    write_jsonl(out / "speech_human.jsonl", speech_manifest(out, "human", "human", EN_HUMAN, ZH_HUMAN))
    write_jsonl(out / "dialogs.jsonl", dialog_manifest(out))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"demo corpus written to {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
