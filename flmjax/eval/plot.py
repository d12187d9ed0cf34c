"""A conversation as a picture: both channels' waveforms with their speech segments, the script's user
events, and the model's monologue at the frames it wrote it (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np

KIND_COLORS = {"turn": "#1f77b4", "hesitation": "#9467bd", "barge_in": "#d62728", "backchannel": "#2ca02c"}
USER_COLOR, MODEL_COLOR = "#4c72b0", "#dd8452"


def _envelope(pcm: np.ndarray, sample_rate: int, points: int = 4000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, min, max) of `pcm` over at most `points` bins: a waveform drawn at any length."""
    hop = max(1, len(pcm) // points)
    n = len(pcm) // hop * hop
    bins = pcm[:n].reshape(-1, hop) if n else np.zeros((1, 1))
    return np.arange(len(bins)) * hop / sample_rate, bins.min(axis=1), bins.max(axis=1)


def _printable(text: str) -> str:
    """Text a font can draw: control and undecodable characters become a middle dot."""
    return "".join(c if c.isprintable() and c != "\ufffd" else "·" for c in text)


def _lanes(starts: Sequence[float], widths: Sequence[float], lanes: int) -> list[int]:
    """Put labels in the lowest lane where they do not run into the previous label (cyclic when full)."""
    ends = [-np.inf] * lanes
    out = []
    for i, (s, w) in enumerate(zip(starts, widths)):
        lane = next((k for k in range(lanes) if ends[k] <= s), i % lanes)
        ends[lane] = s + w
        out.append(lane)
    return out


def timeline(
    path: str,
    user: np.ndarray,
    reply: np.ndarray,
    sample_rate: int,
    user_segments: Sequence[tuple[float, float]],
    model_segments: Sequence[tuple[float, float]],
    events: Sequence[dict],
    monologue: Sequence[dict],
    title: str = "",
    activity: str = "",
) -> None:
    """Write the PNG. `events`: metrics' user_events rows (kind, start_s, end_s, text, latency_s...);
    `monologue`: [{"start_s", "end_s", "text"}]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    duration = max(len(user), len(reply)) / sample_rate
    width = min(40.0, max(12.0, duration * 0.6))
    fig, axes = plt.subplots(
        3, 1, figsize=(width, 7.5), sharex=True, gridspec_kw={"height_ratios": [2.2, 2.2, 1.6], "hspace": 0.08}
    )
    for ax, pcm, segs, color, label in (
        (axes[0], user, user_segments, USER_COLOR, "user"),
        (axes[1], reply, model_segments, MODEL_COLOR, "model"),
    ):
        t, lo, hi = _envelope(np.asarray(pcm, np.float32), sample_rate)
        peak = max(float(np.abs(pcm).max()) if len(pcm) else 0.0, 1e-3)
        ax.fill_between(t, lo / peak, hi / peak, color=color, linewidth=0.4, alpha=0.9)
        for start, end in segs:
            ax.axvspan(start, end, ymin=0.0, ymax=0.08, color=color, alpha=0.9, linewidth=0)
            ax.axvspan(start, end, color=color, alpha=0.10, linewidth=0)
        ax.set_ylim(-1.25, 1.25)
        ax.set_yticks([])
        ax.set_ylabel(f"{label}\n(peak {peak:.2f})", rotation=0, ha="right", va="center", fontsize=10)
        ax.grid(axis="x", alpha=0.3)

    # User events: a coloured band over the speech, a label above the plot, a dashed line where a turn ends
    # (on both channels), and the reply latency as an arrow on the model's channel.
    ax = axes[0]
    above = blended_transform_factory(ax.transData, ax.transAxes)
    # A label's width in seconds: ~0.075 inch per character at 8.5 pt over the axis' ~0.8 * width inches.
    s_per_char = 0.075 * duration / (0.8 * width)
    labels = [f"{e['kind']}: " + textwrap.shorten(_printable(e.get("text") or "(audio)"), 40, placeholder="…")
              for e in events]  # fmt: skip
    lanes = _lanes([e["start_s"] for e in events], [(len(t) + 2) * s_per_char for t in labels], 3)
    for e, label, lane in zip(events, labels, lanes):
        color = KIND_COLORS.get(e["kind"], "black")
        ax.axvspan(e["start_s"], e["end_s"], color=color, alpha=0.12, linewidth=0)
        ax.axvspan(e["start_s"], e["end_s"], ymin=0.93, ymax=1.0, color=color, alpha=0.9, linewidth=0)
        ax.text(e["start_s"], 1.03 + 0.1 * lane, label, transform=above, color=color, fontsize=8.5, va="bottom")
        if e["kind"] == "turn":
            for a in axes[:2]:
                a.axvline(e["end_s"], color=color, ls="--", lw=0.9)
        if e.get("reply_start_s") is not None:
            axes[1].annotate(
                "", xy=(e["reply_start_s"], 1.1), xytext=(e["end_s"], 1.1),
                arrowprops={"arrowstyle": "->", "color": color, "lw": 1.2},
            )  # fmt: skip
            axes[1].text(e["reply_start_s"], 1.12, f"{e['latency_s']:.2f}s", color=color, fontsize=7.5, va="bottom")

    # The monologue: each utterance at the frame it began, in lanes so that labels do not collide.
    ax = axes[2]
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("monologue", rotation=0, ha="right", va="center", fontsize=10)
    texts = [textwrap.shorten(_printable(m["text"]), 60, placeholder="…") for m in monologue]
    lanes = _lanes([m["start_s"] for m in monologue], [(len(t) + 2) * s_per_char for t in texts], 4)
    for m, label, lane in zip(monologue, texts, lanes):
        y = 0.82 - 0.22 * lane
        ax.plot([m["start_s"], m["end_s"]], [y - 0.06, y - 0.06], color=MODEL_COLOR, lw=2)
        ax.text(m["start_s"], y, label, fontsize=8, va="center", color="#333333")
    ax.set_xlim(0, duration)
    ax.set_xlabel("time (s)")
    handles = [Patch(color=c, label=k) for k, c in KIND_COLORS.items()]
    handles += [Patch(color=USER_COLOR, alpha=0.5, label=f"user speech ({activity})"),
                Patch(color=MODEL_COLOR, alpha=0.5, label=f"model speech ({activity})")]  # fmt: skip
    axes[2].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=len(handles), fontsize=8.5,
                   frameon=False)  # fmt: skip
    fig.suptitle(title, x=0.01, y=1.0, ha="left", va="bottom", fontsize=11)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
