"""The release's websocket protocol (spec section 5), serving many conversations through one batched decoder.

`GET /api/chat` upgrades to a websocket of binary messages whose first byte is the kind: 0x00 handshake
(server -> client, once the conversation is ready), 0x01 Ogg/Opus 24 kHz mono audio (both ways), 0x02
UTF-8 monologue text (server -> client; "\\n" when `<wait>` follows text), 0x05 UTF-8 error (server ->
client, Moshi's error kind: a malformed message is answered, never fatal). Other kinds are ignored.
`POST /api/settings` takes the release's sampling names for the next conversations and answers 503 while
any conversation runs. `GET /` serves the browser client (static/).

Extensions, invisible to the release's clients (they never ask for them):
- the release's setting names as query parameters of `/api/chat` (`?temp_text=0.7&top_k_audio=250`) set
  that conversation's sampling only; other parameters (Moshi's names among them) are ignored, as the
  release ignores them all;
- `?stats=1` on `/api/chat`: before each step's reply the server sends 0x04 + JSON (Moshi's "metadata"
  kind): {"frame": input frame stepped, "reply": index of the reply frame that follows (null on the first
  step, which has none), "step_ms", "queued" input frames, "dropped_in", "dropped_out"};
- `GET /api/settings`: the settings a conversation would get (query overrides resolved) and free slots;
- the operator view: `GET /api/status` (JSON), `GET /metrics` (Prometheus text), `GET /healthz`.
Everything but the page and its static files is behind the access token when one is set.

Each connection holds one row (slot) of a fixed batch. One frame clock steps every slot that has a
frame of input in one decoder program; slots without input rest (their state does not move, as in the
release, which steps only on input). The clock waits at most one frame period for stragglers so
clients streaming in real time share steps, and runs flat out while every slot has input queued.
Queues are bounded both ways: a client sending faster than the model runs loses its oldest input, a
client reading too slowly loses its oldest reply audio, and neither slows anyone else down.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import hmac
import json
import logging
import ssl
import time
from pathlib import Path
from typing import Any

import numpy as np
import sphn
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CONTENT_TYPE_LATEST

from flmjax.errors import FlmjaxError
from flmjax.infer.monitoring import FrameTimes, ServerMetrics
from flmjax.infer.sampling import SamplingSettings, SettingsError, parse_release_settings
from flmjax.infer.session import FrameResult, Session

log = logging.getLogger(__name__)

KIND_HANDSHAKE, KIND_AUDIO, KIND_TEXT, KIND_INFO, KIND_ERROR = 0, 1, 2, 4, 5
STATIC_DIR = Path(__file__).parent / "static"
RECENT_CONVERSATIONS = 16  # closed conversations kept for /api/status


@dataclasses.dataclass(frozen=True)
class ServerLimits:
    frame_period_s: float = 0.08  # real time; the clock's longest wait for stragglers
    max_queued_input_s: float = 60.0  # per connection, audio received but not yet stepped
    max_unsent_output_s: float = 10.0  # per connection, reply audio not yet taken by the client
    max_message_bytes: int = 1 << 20
    stalled_step_s: float = 30.0  # /healthz fails while one decoder step has run longer than this


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS for the server from a PEM certificate (chain) and its private key."""
    for path in (cert, key):
        if not Path(path).is_file():
            raise FlmjaxError(f"{path}: no such certificate or key file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise FlmjaxError(f"{cert}, {key}: not a PEM certificate and its private key ({e.reason})") from None
    return context


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings: they may carry the access token."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("%s %s %s %d %.3fs", request.remote, request.method, request.path, response.status, time)


class Outbox:
    """Bounded messages to one client; when full the oldest droppable one (reply audio) goes."""

    def __init__(self, max_droppable: int):
        self.max_droppable = max_droppable
        self.items: collections.deque[tuple[bytes, bool]] = collections.deque()
        self.dropped = 0
        self.ready = asyncio.Event()

    def put(self, message: bytes, droppable: bool = False) -> None:
        self.items.append((message, droppable))
        if droppable and sum(d for _, d in self.items) > self.max_droppable:
            oldest = next(i for i, (_, d) in enumerate(self.items) if d)
            del self.items[oldest]
            self.dropped += 1
        self.ready.set()

    async def get(self) -> bytes:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        return self.items.popleft()[0]


class Connection:
    """One client's slot: Opus decoding into 80 ms frames, the bounded queues, Opus encoding of replies."""

    def __init__(
        self,
        row: int,
        settings: SamplingSettings,
        frame_size: int,
        sample_rate: int,
        limits: ServerLimits,
        wants_stats: bool = False,
    ):
        frames_per_s = sample_rate / frame_size
        self.row = row
        self.settings = settings
        self.frame_size = frame_size
        self.sample_rate = sample_rate
        self.wants_stats = wants_stats
        self.started = time.monotonic()
        # (index among the frames received, samples); the index survives drops of older frames
        self.inbox: collections.deque[tuple[int, np.ndarray]] = collections.deque(
            maxlen=max(1, int(limits.max_queued_input_s * frames_per_s))
        )
        self.outbox = Outbox(max(1, int(limits.max_unsent_output_s * frames_per_s)))
        self.reader = sphn.OpusStreamReader(sample_rate)
        self.writer = sphn.OpusStreamWriter(sample_rate)
        self.pending = np.zeros(0, np.float32)
        self.frames_received = 0
        self.frames_stepped = 0
        self.replies = 0
        self.dropped_input = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent_header = False
        self.ws: web.WebSocketResponse | None = None

    def receive_audio(self, payload: bytes) -> int:
        """Ogg/Opus bytes -> whole frames queued (returned); raises ValueError on bad data."""
        try:
            pcm = self.reader.append_bytes(payload)
        except Exception as e:  # a corrupt stream poisons the reader: start a fresh one
            self.reader = sphn.OpusStreamReader(self.sample_rate)
            raise ValueError(f"bad Ogg/Opus audio ({e})") from None
        self.pending = np.concatenate([self.pending, np.asarray(pcm, np.float32).reshape(-1)])
        frames = len(self.pending) // self.frame_size
        for k in range(frames):
            if len(self.inbox) == self.inbox.maxlen:
                self.dropped_input += 1
            self.inbox.append((self.frames_received, self.pending[k * self.frame_size : (k + 1) * self.frame_size]))
            self.frames_received += 1
        self.pending = self.pending[frames * self.frame_size :]
        return frames

    def send_step(self, frame: int, step_s: float, pcm: np.ndarray | None, text: str) -> None:
        """What one step produced for this client: input `frame` stepped, reply `pcm` (None on a stream's
        first step) and text; with stats on, the step's statistics go first."""
        self.frames_stepped += 1
        if self.wants_stats:
            stats = {
                "frame": frame,
                "reply": None if pcm is None else self.replies,
                "step_ms": round(step_s * 1e3, 2),
                "queued": len(self.inbox),
                "dropped_in": self.dropped_input,
                "dropped_out": self.outbox.dropped,
            }
            self.outbox.put(bytes([KIND_INFO]) + json.dumps(stats, separators=(",", ":")).encode())
        if pcm is not None:
            self.replies += 1
            page = self.writer.append_pcm(pcm)
            if page:
                # The first page carries the Ogg/Opus headers: losing it would make the rest undecodable.
                self.outbox.put(bytes([KIND_AUDIO]) + page, droppable=self.sent_header)
                self.sent_header = True
        if text:
            self.outbox.put(bytes([KIND_TEXT]) + text.encode("utf-8"))

    def send_error(self, message: str) -> None:
        self.outbox.put(bytes([KIND_ERROR]) + message.encode("utf-8"))

    def status(self, now: float) -> dict[str, Any]:
        return {
            "slot": self.row,
            "state": "talking" if self.ready.done() else "joining",
            "age_s": round(now - self.started, 3),
            "frames_received": self.frames_received,
            "frames_stepped": self.frames_stepped,
            "queued_input_frames": len(self.inbox),
            "dropped_input_frames": self.dropped_input,
            "dropped_output_frames": self.outbox.dropped,
            "settings": self.settings.release(),
        }


class ChatServer:
    """Serves `session.batch_size` concurrent conversations; build the aiohttp app with `app()`."""

    def __init__(
        self,
        session: Session,
        settings: SamplingSettings = SamplingSettings(),
        access_token: str | None = None,
        limits: ServerLimits = ServerLimits(),
    ):
        self.session = session
        self.settings = settings.validate(session.decoder.history)
        self.access_token = access_token
        self.limits = limits
        self.free_rows = list(range(session.batch_size))
        self.connections: dict[int, Connection] = {}  # row -> connection, joining ones included
        # Every device call (reset, step) runs on this one thread, in order, off the event loop.
        self.device = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="flmjax-decoder")
        self.wake = asyncio.Event()  # replaced on each start: an Event belongs to the loop that first waits on it
        self.clock_task: asyncio.Task | None = None
        self.started = time.monotonic()
        self.frames_stepped = 0  # batched decoder steps
        self.stream_frames = 0  # conversation frames stepped (rows of those steps)
        self.step_started: float | None = None  # while a step runs (for /healthz)
        self.frame_times = FrameTimes()
        self.conversations_started = 0
        self.refused = {"busy": 0, "token": 0, "settings": 0}
        self.closed_drops = {"input": 0, "output": 0}  # of conversations that ended
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_CONVERSATIONS)
        self.metrics = ServerMetrics(self.status)

    # --- application --------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_message_bytes)
        app.router.add_get("/api/chat", self.handle_chat)
        app.router.add_post("/api/settings", self.handle_settings)
        app.router.add_get("/api/settings", self.handle_get_settings)
        app.router.add_get("/api/status", self.handle_status)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/", self.handle_index)
        app.router.add_static("/static/", STATIC_DIR)
        app.on_startup.append(self._start_clock)
        app.on_shutdown.append(self._close_conversations)
        app.on_cleanup.append(self._stop_clock)
        return app

    async def _start_clock(self, app: web.Application) -> None:
        self.wake = asyncio.Event()
        self.clock_task = asyncio.create_task(self._clock())

    async def _close_conversations(self, app: web.Application) -> None:
        """Tell every client the server is going away (close code 1001) instead of dropping it."""
        sockets = [c.ws for c in self.connections.values() if c.ws is not None]
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in sockets),
            return_exceptions=True,
        )

    async def _stop_clock(self, app: web.Application) -> None:
        if self.clock_task:
            self.clock_task.cancel()
            await asyncio.gather(self.clock_task, return_exceptions=True)
        self.device.shutdown(wait=True)

    def _authorized(self, request: web.Request) -> bool:
        if self.access_token is None:
            return True
        given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        return hmac.compare_digest(given.encode(), self.access_token.encode())

    @staticmethod
    def _unauthorized() -> web.Response:
        return web.json_response({"error": "missing or wrong access token"}, status=401)

    def _settings_for(self, request: web.Request) -> SamplingSettings:
        """The server's settings with the query's overrides (release names); raises SettingsError."""
        overrides = parse_release_settings(request.query)
        return self.settings.updated(overrides).validate(self.session.decoder.history)

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def handle_settings(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "Invalid JSON"}, status=400)
        if self.connections:
            return web.json_response({"error": "Server is busy, please try again later."}, status=503)
        if not isinstance(body, dict):
            return web.json_response({"error": "settings must be a JSON object"}, status=400)
        try:
            self.settings = self.settings.updated(body).validate(self.session.decoder.history)
        except SettingsError as e:
            return web.json_response({"error": str(e)}, status=400)
        log.info("settings for the next conversations: %s", self.settings)
        return web.json_response({"status": "success"})

    async def handle_get_settings(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        try:
            settings = self._settings_for(request)
        except SettingsError as e:
            return web.json_response({"error": str(e)}, status=400)
        return web.json_response(
            {
                "defaults": self.settings.release(),
                "settings": settings.release(),
                "max_repetition_window": self.session.decoder.history,
                "slots": self._slots(),
                "sample_rate": self.session.sample_rate,
                "frame_size": self.session.frame_size,
            }
        )

    # --- operator view ------------------------------------------------------------------------------------
    def _slots(self) -> dict[str, int]:
        return {"total": self.session.batch_size, "in_use": len(self.connections), "free": len(self.free_rows)}

    def status(self) -> dict[str, Any]:
        """What `GET /api/status` answers (and `/metrics` renders)."""
        now = time.monotonic()
        live = [c.status(now) for _, c in sorted(self.connections.items())]
        return {
            "slots": self._slots(),
            "conversations": live,
            "recent": list(self.recent),
            "frame_time_ms": self.frame_times.quantiles_ms(now),
            "frames_stepped": self.frames_stepped,
            "stream_frames": self.stream_frames,
            "dropped_frames": {
                "input": self.closed_drops["input"] + sum(c["dropped_input_frames"] for c in live),
                "output": self.closed_drops["output"] + sum(c["dropped_output_frames"] for c in live),
            },
            "conversations_started": self.conversations_started,
            "refused": dict(self.refused),
            "uptime_s": round(now - self.started, 3),
        }

    async def handle_status(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        return web.json_response(self.status())

    async def handle_metrics(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(self, request: web.Request) -> web.Response:
        """200 while the frame clock runs and no decoder step is stuck; 503 (with the reason) otherwise."""
        if not self._authorized(request):
            return self._unauthorized()
        problem = None
        if self.clock_task is None or self.clock_task.done():
            failure = self.clock_task.exception() if self.clock_task and not self.clock_task.cancelled() else None
            problem = f"the frame clock has stopped ({failure!r})" if failure else "the frame clock is not running"
        elif self.step_started is not None and time.monotonic() - self.step_started > self.limits.stalled_step_s:
            problem = f"a decoder step has been running for {time.monotonic() - self.step_started:.0f} s"
        body = {"status": problem or "ok", "slots": self._slots()}
        return web.json_response(body, status=503 if problem else 200)

    # --- one conversation ---------------------------------------------------------------------------------
    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            self.refused["token"] += 1
            return self._unauthorized()
        try:
            settings = self._settings_for(request)
        except SettingsError as e:
            self.refused["settings"] += 1
            return web.json_response({"error": str(e)}, status=400)
        if not self.free_rows:
            self.refused["busy"] += 1
            return web.json_response(
                {"error": f"all {self.session.batch_size} conversation slots are busy"}, status=503
            )
        row = self.free_rows.pop(0)
        conn = Connection(
            row,
            settings,
            self.session.frame_size,
            self.session.sample_rate,
            self.limits,
            wants_stats=request.query.get("stats") == "1",
        )
        self.connections[row] = conn
        self.conversations_started += 1
        ws = conn.ws = web.WebSocketResponse(max_msg_size=self.limits.max_message_bytes)
        sender = None
        try:
            await ws.prepare(request)
            self.wake.set()  # the clock resets the row, then marks the connection ready
            await conn.ready
            conn.outbox.put(bytes([KIND_HANDSHAKE]))
            sender = asyncio.create_task(self._send_loop(ws, conn))
            log.info("slot %d: conversation started", row)
            await self._receive_loop(ws, conn)
        finally:
            del self.connections[row]
            self.free_rows.append(row)
            if sender:
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
            self._closed(conn)
        return ws

    def _closed(self, conn: Connection) -> None:
        summary = conn.status(time.monotonic())
        del summary["state"], summary["queued_input_frames"]
        self.recent.append(summary)
        self.closed_drops["input"] += conn.dropped_input
        self.closed_drops["output"] += conn.outbox.dropped
        log.info(
            "slot %d: closed after %.1f s, %d frames stepped (%d input and %d reply frames dropped)",
            conn.row,
            summary["age_s"],
            conn.frames_stepped,
            conn.dropped_input,
            conn.outbox.dropped,
        )

    async def _receive_loop(self, ws: web.WebSocketResponse, conn: Connection) -> None:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    return
                conn.send_error("expected binary messages (kind byte + payload)")
                continue
            data: bytes = message.data
            if not data:
                conn.send_error("empty message")
            elif data[0] == KIND_AUDIO:
                try:
                    if conn.receive_audio(data[1:]):
                        self.wake.set()
                except ValueError as e:
                    conn.send_error(str(e))
            else:
                log.debug("slot %d: ignoring message kind %d", conn.row, data[0])

    async def _send_loop(self, ws: web.WebSocketResponse, conn: Connection) -> None:
        while not ws.closed:
            message = await conn.outbox.get()
            try:
                await ws.send_bytes(message)
            except ConnectionError:
                return

    # --- the frame clock ----------------------------------------------------------------------------------
    async def _clock(self) -> None:
        loop = asyncio.get_running_loop()
        last_step = -float("inf")
        while True:
            await self.wake.wait()
            self.wake.clear()
            joining = {r: c for r, c in self.connections.items() if not c.ready.done()}
            if joining:
                rows = {r: c.settings for r, c in joining.items()}
                await loop.run_in_executor(self.device, self.session.reset, rows)
                for c in joining.values():
                    c.ready.set_result(None)
            if not any(c.inbox for c in self.connections.values()):
                continue
            # Give real-time clients until one frame period after the last step to deliver their frame.
            while not all(c.inbox for c in self.connections.values() if c.ready.done()):
                remaining = last_step + self.limits.frame_period_s - loop.time()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self.wake.wait(), remaining)
                except TimeoutError:
                    break
                self.wake.clear()
            await self._step(loop)
            last_step = loop.time()
            if any(c.inbox for c in self.connections.values()) or any(
                not c.ready.done() for c in self.connections.values()
            ):
                self.wake.set()

    def _timed_step(self, pcm: np.ndarray, active: np.ndarray) -> tuple[FrameResult, float]:
        self.step_started = time.monotonic()
        try:
            result = self.session.step(pcm, active)
        finally:
            seconds, self.step_started = time.monotonic() - self.step_started, None
        return result, seconds

    async def _step(self, loop: asyncio.AbstractEventLoop) -> None:
        stepping = [c for c in self.connections.values() if c.ready.done() and c.inbox]
        pcm = np.zeros((self.session.batch_size, self.session.frame_size), np.float32)
        active = np.zeros(self.session.batch_size, bool)
        frames = {}
        for c in stepping:
            frames[c.row], pcm[c.row] = c.inbox.popleft()
            active[c.row] = True
        result, seconds = await loop.run_in_executor(self.device, self._timed_step, pcm, active)
        self.frames_stepped += 1
        self.stream_frames += len(stepping)
        self.frame_times.add(time.monotonic(), seconds)
        self.metrics.frame_seconds.observe(seconds)
        for c in stepping:
            if self.connections.get(c.row) is c:  # still connected
                reply = result.pcm[c.row] if result.valid[c.row] else None
                c.send_step(frames[c.row], seconds, reply, result.text[c.row] if reply is not None else "")
