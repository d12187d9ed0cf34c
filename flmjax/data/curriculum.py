"""A synthetic full-duplex curriculum: espeak-ng speech, a closed set of questions with deterministic
answers, dialogs with FLM-Audio's timings, and a held-out split as `evaluate.py conversation` scripts.

    from flmjax.data.curriculum import CurriculumSize, generate
    corpus = generate("runs/school/corpus", CurriculumSize(), seed=0)

Writes (24 kHz mono WAV under `audio/`, manifests in docs/data.md's formats):
  speech.jsonl        sentence-aligned speech for post-training: every training question in the user
                      voices, every answer in the model voice (one sentence a file);
  dialogs_ft1.jsonl   semi-duplex dialogs: questions (some with a mid-turn hesitation), answers;
  dialogs_ft2.jsonl   the same kind of dialogs plus back-channels over the model's answers (ft2's layout
                      adds interruptions itself with its probability and reaction delay);
  heldout/scripts/*.json  held-out dialogs as conversation scripts (turns with their answers,
                      hesitations, back-channels, barge-ins); heldout/reference.json the timeline each
                      one would have with a model that follows the training layouts (for Table 6's deltas).

The questions: arithmetic (sums and differences of 1..9), capitals, colours of things, spelling and
successors: `qa_items()`. Every answer restates the question ("seven plus three is ten."), so the
answer is in the model's monologue. Timings follow what the layouts teach: the model's reply text starts
when the user's turn ends and its speech `LEAD_S` later; back-channels are at most `BACKCHANNEL_MAX_S`
(shorter than the 0.5 s reaction delay, so a layout does not take them for interruptions); a hesitation
ends all but the question's last word with "um" and pauses `HESITATION_S` before the rest of the question.

Held-out: other user voices and speaking rates, other pause lengths, arithmetic questions never trained
on, and new combinations of the other questions (each held-out dialog mixes categories in an order drawn
apart from the training ones). Facts (capitals, colours) cannot be held out without being unknowable:
their held-out questions are trained ones in unseen voices and dialogs (said so in the report).
Everything is drawn from `seed`; espeak-ng makes the same audio for the same text, voice and rate.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile

from flmjax import audio

SAMPLE_RATE = 24_000
MODEL_VOICE = "en-us+f3"
MODEL_SPEED = 160
TRAIN_VOICES = ("en-us+m1", "en-gb+m3", "en-us+f2", "en-gb-scotland+m2", "en-029+m4", "en-gb-x-rp+f4")
TRAIN_SPEEDS = (150, 165, 180)
HELD_OUT_VOICES = ("en-us+m7", "en-gb-x-gbclan+f1", "en-us-nyc+m5")
HELD_OUT_SPEEDS = (140, 172, 195)
LEAD_S = 0.16  # the layouts' lead: speech starts 2 frames after the reply's text, which starts at the turn's end
TURN_GAP_S = (0.6, 1.4)  # the user's next question after the model stops (training); held out: (1.5, 2.0)
HELD_OUT_GAP_S = (1.5, 2.0)
HESITATION_S = (0.8, 1.3)  # training; held out: (1.4, 1.7)
HELD_OUT_HESITATION_S = (1.4, 1.7)
HESITATION_PROB = 0.3
BACKCHANNELS = ("yeah", "okay", "mm", "right")
BACKCHANNEL_SPEED = 230
BACKCHANNEL_MAX_S = 0.44
BACKCHANNEL_PROB = 0.4
BARGE_IN_PROB = 0.7  # held-out dialogs: a later question talks over the answer before it (ft2's probability)
HELD_OUT_ARITHMETIC = 0.2  # fraction of the arithmetic questions kept out of training

NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
           "sixteen seventeen eighteen nineteen twenty").split()  # fmt: skip
CAPITALS = (
    ("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Japan", "Tokyo"),
    ("Egypt", "Cairo"), ("Peru", "Lima"), ("Greece", "Athens"), ("Russia", "Moscow"), ("China", "Beijing"),
    ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Poland", "Warsaw"), ("Cuba", "Havana"), ("Chile", "Santiago"),
    ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Portugal", "Lisbon"), ("Sweden", "Stockholm"),
    ("Canada", "Ottawa"), ("India", "Delhi"), ("Thailand", "Bangkok"), ("Mexico", "Mexico City"),
    ("Hungary", "Budapest"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"),
    ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Argentina", "Buenos Aires"),
)  # fmt: skip
COLOURS = (
    ("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"), ("a banana", "yellow"),
    ("a tomato", "red"), ("an orange", "orange"), ("a lemon", "yellow"), ("the sea", "blue"), ("milk", "white"),
    ("a frog", "green"), ("a strawberry", "red"), ("chocolate", "brown"), ("a crow", "black"),
    ("a carrot", "orange"), ("a plum", "purple"), ("a flamingo", "pink"), ("the sun", "yellow"),
    ("a leaf", "green"), ("ink", "black"), ("an elephant", "grey"), ("a pumpkin", "orange"),
    ("blood", "red"), ("a cloud", "white"), ("a violet", "purple"),
)  # fmt: skip
SPELLING = ("cat dog sun hat cup pen box bus egg map red bed car fox owl pig ant bee cow jam "
            "tree fish milk book ball door frog lamp rain star").split()  # fmt: skip


@dataclasses.dataclass(frozen=True)
class QA:
    """One question: what the user asks, what the model says, and the answer scored in the monologue."""

    key: str
    question: str
    reply: str
    answer: str
    kind: str

    def split(self) -> tuple[str, str]:
        """The question said with a hesitation: (all but its last word + " um", the last word)."""
        words = self.question.split()
        cut = max(1, len(words) - 1)
        return " ".join(words[:cut]) + " um", " ".join(words[cut:])


def qa_items() -> list[QA]:
    """Every question of the curriculum (a few hundred), in a fixed order."""
    items = []
    for a in range(1, 10):
        for b in range(1, 10):
            s = NUMBERS[a + b]
            items.append(QA(f"plus-{a}-{b}", f"What is {NUMBERS[a]} plus {NUMBERS[b]}?",
                            f"{NUMBERS[a].capitalize()} plus {NUMBERS[b]} is {s}.", s, "arithmetic"))  # fmt: skip
            if a > b:
                d = NUMBERS[a - b]
                items.append(QA(f"minus-{a}-{b}", f"What is {NUMBERS[a]} minus {NUMBERS[b]}?",
                                f"{NUMBERS[a].capitalize()} minus {NUMBERS[b]} is {d}.", d, "arithmetic"))  # fmt: skip
    for country, city in CAPITALS:
        items.append(QA(f"capital-{country}", f"What is the capital of {country}?",
                        f"The capital of {country} is {city}.", city, "capital"))  # fmt: skip
    for thing, colour in COLOURS:
        items.append(QA(f"colour-{thing}", f"What colour is {thing}?", f"{thing[0].upper()}{thing[1:]} is {colour}.",
                        colour, "colour"))  # fmt: skip
    for word in SPELLING:
        letters = " ".join(word.upper())
        items.append(QA(f"spell-{word}", f"How do you spell {word}?", f"{word.capitalize()} is spelled {letters}.",
                        " ".join(word), "spelling"))  # fmt: skip
    for n in range(1, 20):
        items.append(QA(f"after-{n}", f"What number comes after {NUMBERS[n]}?",
                        f"After {NUMBERS[n]} comes {NUMBERS[n + 1]}.", NUMBERS[n + 1], "successor"))  # fmt: skip
    return items


def split_items(seed: int = 0) -> tuple[list[QA], list[QA]]:
    """(training questions, held-out-only questions): a seeded `HELD_OUT_ARITHMETIC` of the arithmetic."""
    items = qa_items()
    arithmetic = [q for q in items if q.kind == "arithmetic"]
    rng = np.random.default_rng([seed, 1])
    held = {arithmetic[i].key for i in rng.permutation(len(arithmetic))[: int(len(arithmetic) * HELD_OUT_ARITHMETIC)]}
    return [q for q in items if q.key not in held], [q for q in items if q.key in held]


def vocabulary() -> list[str]:
    """The words of `WordTokenizer` for the school models: every word of the curriculum's texts as the
    tokenizer's pieces (with and without their leading space), in a fixed order."""
    from flmjax.data.text_tokenizer import _PIECES

    texts = [t for q in qa_items() for t in (q.question, q.reply, *q.split())] + list(BACKCHANNELS)
    words: dict[str, None] = {}
    for text in texts:
        for piece in _PIECES.findall(text):
            if re.fullmatch(r" ?[A-Za-z']{2,}| ?[0-9]+| [A-Za-z]", piece):
                words[piece.strip()] = None
                words[" " + piece.strip()] = None
    return sorted(words)


# --- speech ----------------------------------------------------------------------------------------------


@functools.cache
def speech(text: str, voice: str, speed: int) -> np.ndarray:
    """espeak-ng at 24 kHz, silence trimmed: exactly what `evaluate.py conversation` plays for a text event."""
    return audio.espeak(text, voice, speed)


def _write(path: Path, pcm: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")


def backchannel(voice: str, rng: np.random.Generator) -> str:
    """A back-channel word that `voice` says short enough not to count as an interruption."""
    for k in rng.permutation(len(BACKCHANNELS)):
        if len(speech(BACKCHANNELS[k], voice, BACKCHANNEL_SPEED)) / SAMPLE_RATE <= BACKCHANNEL_MAX_S:
            return BACKCHANNELS[k]
    return BACKCHANNELS[0]


# --- dialogs ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CurriculumSize:
    """How much to generate. Defaults: the benchmark (`launch/bench_learning.py`); tests use less."""

    train_dialogs: int = 96
    held_out_dialogs: int = 24
    exchanges: tuple[int, int] = (2, 3)  # questions per dialog (inclusive range)
    speech_items: int = 0  # post-training: questions recorded (with their answers); 0: every training question


@dataclasses.dataclass
class Event:
    """One utterance on a dialog's timeline (seconds)."""

    role: str  # user | model
    kind: str  # turn | hesitation | backchannel | barge_in (user); reply (model)
    text: str
    voice: str
    speed: int
    start: float
    end: float
    answer: str | None = None
    cut: float | None = None  # a model reply stopped here (interrupted)

    @property
    def stop(self) -> float:
        return self.end if self.cut is None else self.cut


def plan_dialog(
    questions: Sequence[QA], voice: str, speed: int, rng: np.random.Generator, held_out: bool
) -> list[Event]:
    """The timeline of one dialog: each question (maybe with a hesitation), the model's reply, maybe a
    back-channel over it; held-out dialogs also barge in: the next question over the reply."""
    gap_s = HELD_OUT_GAP_S if held_out else TURN_GAP_S
    pause_s = HELD_OUT_HESITATION_S if held_out else HESITATION_S
    events: list[Event] = []
    t = float(rng.uniform(0.4, 0.8))
    for n, qa in enumerate(questions):
        barge = held_out and n > 0 and events[-1].role == "model" and rng.random() < BARGE_IN_PROB
        if barge:  # talk over the previous reply, somewhere in its first two thirds
            reply = events[-1]
            t = reply.start + float(rng.uniform(0.3, 0.66)) * (reply.end - reply.start)
        parts = qa.split() if not barge and rng.random() < HESITATION_PROB else (qa.question,)
        for k, text in enumerate(parts):
            clip = speech(text, voice, speed)
            kind = "hesitation" if k < len(parts) - 1 else ("barge_in" if barge else "turn")
            events.append(Event("user", kind, text, voice, speed, t, t + len(clip) / SAMPLE_RATE,
                                answer=qa.answer if kind == "turn" else None))  # fmt: skip
            if barge:
                reply.cut = min(reply.end, t + 0.5)
            t = events[-1].end + (float(rng.uniform(*pause_s)) if k < len(parts) - 1 else 0.0)
        start = t + LEAD_S
        clip = speech(qa.reply, MODEL_VOICE, MODEL_SPEED)
        events.append(
            Event("model", "reply", qa.reply, MODEL_VOICE, MODEL_SPEED, start, start + len(clip) / SAMPLE_RATE)
        )
        reply = events[-1]
        if reply.end - reply.start > 1.5 and rng.random() < BACKCHANNEL_PROB:
            word = backchannel(voice, rng)
            at = reply.start + float(rng.uniform(0.5, 0.9))
            bc = speech(word, voice, BACKCHANNEL_SPEED)
            events.append(Event("user", "backchannel", word, voice, BACKCHANNEL_SPEED, at, at + len(bc) / SAMPLE_RATE))
        t = reply.end + float(rng.uniform(*gap_s))
    return events


def _draw(pool: Sequence[QA], count: int, rng: np.random.Generator) -> list[QA]:
    """`count` questions of different kinds where possible (a dialog mixes categories)."""
    picks: list[QA] = []
    for _ in range(count):
        kinds = {q.kind for q in picks}
        fresh = [q for q in pool if q.kind not in kinds] or list(pool)
        picks.append(fresh[int(rng.integers(len(fresh)))])
    return picks


def dialog_entry(name: str, events: Sequence[Event], audio_dir: Path, root: Path, with_backchannels: bool) -> dict:
    """A dialog-manifest entry (docs/data.md) of a timeline; writes each utterance's audio."""
    turns = []
    for k, e in enumerate(events):
        if e.kind == "backchannel" and not with_backchannels:
            continue
        path = audio_dir / f"{name}_{k}.wav"
        _write(path, speech(e.text, e.voice, e.speed))
        turn = {"role": e.role, "text": e.text, "audio": str(path.relative_to(root)), "start": round(e.start, 3)}
        if e.cut is not None:
            turn["end"] = round(e.cut, 3)
        turns.append(turn)
    return {"id": name, "language": "en", "turns": turns}


def script_of(name: str, events: Sequence[Event], seed: int) -> dict:
    """The conversation script of a held-out timeline (the user's events; the model is what is tested)."""
    duration = max(e.stop for e in events) + 2.0
    user = []
    for e in events:
        if e.role != "user":
            continue
        event = {"start": round(e.start, 3), "text": e.text, "voice": e.voice, "speed": e.speed, "kind": e.kind}
        if e.answer is not None:
            event["answer"] = e.answer
        user.append(event)
    return {"name": name, "duration_s": round(duration, 2), "seed": seed, "user": user}


@dataclasses.dataclass(frozen=True)
class Curriculum:
    root: Path
    speech: Path
    dialogs_ft1: Path
    dialogs_ft2: Path
    scripts: Path  # folder of held-out conversation scripts
    reference: Path  # held-out reference timelines: {name: {"user": [[s, e]...], "model": [...], "duration_s"}}

    @classmethod
    def at(cls, root: Path) -> Curriculum:
        """The files of a curriculum generated under `root`."""
        held = root / "heldout"
        return cls(root, root / "speech.jsonl", root / "dialogs_ft1.jsonl", root / "dialogs_ft2.jsonl",
                   held / "scripts", held / "reference.json")  # fmt: skip


def generate(out: str | Path, size: CurriculumSize = CurriculumSize(), seed: int = 0) -> Curriculum:
    """Write the whole curriculum under `out` (see the module docstring); deterministic in `seed`."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    train_items, held_items = split_items(seed)
    rng = np.random.default_rng([seed, 2])

    speech_entries = []
    recorded = train_items
    if size.speech_items:
        recorded = [train_items[int(i)] for i in sorted(rng.permutation(len(train_items))[: size.speech_items])]
    for i, qa in enumerate(recorded):
        voice, speed = TRAIN_VOICES[i % len(TRAIN_VOICES)], TRAIN_SPEEDS[i % len(TRAIN_SPEEDS)]
        speech_entries.append(_speech_entry(root, f"q{i:03d}", qa.question, voice, speed, "human"))
        speech_entries.append(_speech_entry(root, f"a{i:03d}", qa.reply, MODEL_VOICE, MODEL_SPEED, "human"))
    _jsonl(root / "speech.jsonl", speech_entries)

    ft1, ft2 = [], []
    for d in range(size.train_dialogs):
        count = int(rng.integers(size.exchanges[0], size.exchanges[1] + 1))
        voice, speed = TRAIN_VOICES[int(rng.integers(len(TRAIN_VOICES)))], int(rng.choice(TRAIN_SPEEDS))
        events = plan_dialog(_draw(train_items, count, rng), voice, speed, rng, held_out=False)
        ft1.append(dialog_entry(f"d{d:04d}", events, root / "audio" / "dialogs", root, with_backchannels=False))
        ft2.append(dialog_entry(f"d{d:04d}", events, root / "audio" / "dialogs", root, with_backchannels=True))
    _jsonl(root / "dialogs_ft1.jsonl", ft1)
    _jsonl(root / "dialogs_ft2.jsonl", ft2)

    scripts = root / "heldout" / "scripts"
    shutil.rmtree(scripts, ignore_errors=True)  # a smaller held-out split leaves no stale scripts behind
    scripts.mkdir(parents=True)
    reference = {}
    # Held-out questions: the unseen arithmetic first, then trained facts in new combinations.
    held_pool = held_items + [q for q in train_items if q.kind != "arithmetic"]
    held_rng = np.random.default_rng([seed, 3])
    for d in range(size.held_out_dialogs):
        count = int(held_rng.integers(size.exchanges[0], size.exchanges[1] + 1))
        voice = HELD_OUT_VOICES[d % len(HELD_OUT_VOICES)]
        speed = HELD_OUT_SPEEDS[int(held_rng.integers(len(HELD_OUT_SPEEDS)))]
        first = held_items[d % len(held_items)]
        questions = [first, *_draw([q for q in held_pool if q.kind != first.kind], count - 1, held_rng)]
        events = plan_dialog(questions, voice, speed, held_rng, held_out=True)
        name = f"heldout_{d:03d}"
        script = script_of(name, events, seed + d)
        (scripts / f"{name}.json").write_text(json.dumps(script, indent=1), encoding="utf-8")
        reference[name] = {
            "duration_s": script["duration_s"],
            "user": [[round(e.start, 3), round(e.end, 3)] for e in events if e.role == "user"],
            "model": [[round(e.start, 3), round(e.stop, 3)] for e in events if e.role == "model"],
        }  # fmt: skip
    (root / "heldout" / "reference.json").write_text(json.dumps(reference, indent=1), encoding="utf-8")
    return Curriculum.at(root)


def _speech_entry(root: Path, name: str, text: str, voice: str, speed: int, source: str) -> dict:
    clip = speech(text, voice, speed)
    path = root / "audio" / "speech" / f"{name}.wav"
    _write(path, np.concatenate([np.zeros(SAMPLE_RATE // 5, np.float32), clip, np.zeros(SAMPLE_RATE // 5, np.float32)]))
    end = 0.2 + len(clip) / SAMPLE_RATE
    return {"id": name, "audio": str(path.relative_to(root)), "language": "en", "source": source,
            "segments": [{"start": 0.2, "end": round(end, 3), "text": text}]}  # fmt: skip


def _jsonl(path: Path, entries: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
