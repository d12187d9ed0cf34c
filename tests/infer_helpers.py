"""Small models and a running chat server shared by the session, server and browser tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import ssl
import threading

import numpy as np
from aiohttp import web

from flmjax import FLMAudio
from flmjax.config import get_model_config
from flmjax.infer.sampling import SamplingSettings
from flmjax.infer.session import Session
from flmjax.mimi import Mimi, MimiConfig

# Mimi's real frame geometry (1920 samples, 8 codebooks of 2048) with tiny layers: compiles and runs fast.
SMALL_MIMI = MimiConfig(
    dimension=32, n_filters=4, num_heads=2, num_layers=1, dim_feedforward=64, codebook_dim=16, context=32
)


# Cached: every test module of one pytest process shares them (parameters are never donated or changed,
# and a session's rows are reset by whoever uses them), which saves model init and compile time.


@functools.cache
def small_mimi(seed: int = 0) -> Mimi:
    return Mimi.random(seed, config=SMALL_MIMI)


@functools.cache
def tiny_model(seed: int = 1) -> FLMAudio:
    # Larger-than-default weights make the distributions peaked (text keeps changing, argmax is stable).
    return FLMAudio.init(get_model_config("tiny", initializer_range=0.2), seed=seed)


@functools.cache
def shared_session(batch_size: int) -> Session:
    """A compiled session over the tiny model and small Mimi (greedy by default); reset rows before use."""
    session = Session(tiny_model(), small_mimi(), batch_size, SamplingSettings().greedy_deterministic(), window=64)
    session.warm_up()
    return session


def speech_like(frames: int, seed: int = 0, sample_rate: int = 24_000) -> np.ndarray:
    """Synthetic 'user audio': a gliding tone with syllable-rate amplitude bursts and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * 1920) / sample_rate
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.7 * t)
    tone = np.sin(2 * np.pi * np.cumsum(pitch) / sample_rate)
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) * (t % 1.5 < 1.0)
    return (0.3 * envelope * tone + 0.01 * rng.normal(size=t.shape)).astype(np.float32)


def load_launcher(name: str):
    """The program behind launch/<name>.py: flmjax.cli.<name> (its `main(argv)` runs in this process)."""
    return importlib.import_module(f"flmjax.cli.{name}")


@contextlib.contextmanager
def serving(app: web.Application, ssl_context: ssl.SSLContext | None = None):
    """Run an aiohttp app on 127.0.0.1 (free port) in a background thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    started = threading.Event()
    box = {}

    async def start():
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        box["port"] = site._server.sockets[0].getsockname()[1]

    def run():
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not started.wait(60):
        raise RuntimeError("server did not start")
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{box['port']}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(60)
        loop.close()
