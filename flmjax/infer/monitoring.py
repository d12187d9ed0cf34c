"""The chat server's operator view: frame times over the last minute and Prometheus metrics.

`FrameTimes` keeps the decoder step durations of a sliding window (for p50/p99 in `GET /api/status`);
`ServerMetrics` renders `GET /metrics` in Prometheus' text format: a histogram of step times observed as
they happen, and everything else read from the server's status snapshot at scrape time, so the numbers
on both endpoints are the same numbers.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Around the 80 ms real-time budget of one frame.
FRAME_SECONDS_BUCKETS = (0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.32, 0.64, 1.28)


class FrameTimes:
    """Durations of the decoder steps that ended in the last `window_s` seconds."""

    def __init__(self, window_s: float = 60.0):
        self.window_s = window_s
        self._items: collections.deque[tuple[float, float]] = collections.deque()  # (end time, seconds)

    def add(self, now: float, seconds: float) -> None:
        self._items.append((now, seconds))
        self._forget(now)

    def quantiles_ms(self, now: float) -> dict[str, Any]:
        """{"p50", "p99"} in milliseconds (None without steps), "steps" counted, "window_s"."""
        self._forget(now)
        times = np.array([s for _, s in self._items]) * 1e3
        p50, p99 = (round(float(q), 3) for q in np.percentile(times, (50, 99))) if len(times) else (None, None)
        return {"p50": p50, "p99": p99, "steps": len(times), "window_s": self.window_s}

    def _forget(self, now: float) -> None:
        while self._items and self._items[0][0] < now - self.window_s:
            self._items.popleft()


class _StatusCollector(Collector):
    """Metric families from the server's status snapshot (see ChatServer.status)."""

    def __init__(self, status: Callable[[], dict[str, Any]]):
        self.status = status

    def collect(self) -> Iterator[Metric]:
        s = self.status()
        slots = GaugeMetricFamily("flmjax_slots", "Conversation slots by state", labels=["state"])
        slots.add_metric(["in_use"], s["slots"]["in_use"])
        slots.add_metric(["free"], s["slots"]["free"])
        yield slots
        yield CounterMetricFamily(
            "flmjax_conversations_started", "Conversations accepted", value=s["conversations_started"]
        )
        refused = CounterMetricFamily("flmjax_conversations_refused", "Conversations refused", labels=["reason"])
        for reason, count in sorted(s["refused"].items()):
            refused.add_metric([reason], count)
        yield refused
        yield CounterMetricFamily("flmjax_decoder_steps", "Batched decoder steps", value=s["frames_stepped"])
        yield CounterMetricFamily(
            "flmjax_stream_frames", "Conversation frames stepped (80 ms each)", value=s["stream_frames"]
        )
        dropped = CounterMetricFamily(
            "flmjax_dropped_frames",
            "Frames dropped: input the model could not keep up with, output a client did not take",
            labels=["direction"],
        )
        for direction, count in sorted(s["dropped_frames"].items()):
            dropped.add_metric([direction], count)
        yield dropped
        recent = GaugeMetricFamily(
            "flmjax_frame_time_last_minute_seconds",
            "Decoder step time over the last minute",
            labels=["quantile"],
        )
        for name, q in (("p50", "0.5"), ("p99", "0.99")):
            if s["frame_time_ms"][name] is not None:
                recent.add_metric([q], s["frame_time_ms"][name] / 1e3)
        yield recent


class ServerMetrics:
    """One server's Prometheus registry (not the process-wide default: several servers may share a process)."""

    def __init__(self, status: Callable[[], dict[str, Any]]):
        self.registry = CollectorRegistry(auto_describe=False)
        self.frame_seconds = Histogram(
            "flmjax_frame_seconds",
            "Time of one batched decoder step (Mimi encode, model, Mimi decode)",
            buckets=FRAME_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StatusCollector(status))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
