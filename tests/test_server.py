"""The chat server with real websocket clients (aiohttp): the release's protocol, many conversations at once
(each with its own reply), clients that vanish or send garbage, settings, access tokens, the operator view
(/api/status, /metrics, /healthz), HTTPS."""

import asyncio
import dataclasses
import json
import re
import shutil
import ssl
import subprocess
import time

import aiohttp
import numpy as np
import pytest
import sphn
from prometheus_client.parser import text_string_to_metric_families

from flmjax.errors import FlmjaxError
from flmjax.infer.sampling import SamplingSettings
from flmjax.infer.server import STATIC_DIR, ChatServer, Outbox, server_ssl_context
from tests.infer_helpers import load_launcher, serving, shared_session, speech_like

SLOTS = 8
TIMEOUT = 120


@pytest.fixture(scope="module")
def session():
    return shared_session(SLOTS)


@pytest.fixture
def server(session):
    return ChatServer(session, SamplingSettings())


@dataclasses.dataclass
class Reply:
    kinds: list = dataclasses.field(default_factory=list)
    samples: int = 0
    text: str = ""
    errors: list = dataclasses.field(default_factory=list)
    sent: list = dataclasses.field(default_factory=list)  # the Ogg/Opus bytes sent
    audio: list = dataclasses.field(default_factory=list)  # decoded reply pcm, message by message
    stats: list = dataclasses.field(default_factory=list)  # kind 4 JSON (with ?stats=1)


async def converse(ws, pcm, reply, expect_samples):
    """Send pcm as Ogg/Opus (one page per 80 ms) and read until `expect_samples` reply samples arrived."""
    writer, reader = sphn.OpusStreamWriter(24000), sphn.OpusStreamReader(24000)
    for k in range(len(pcm) // 1920):
        reply.sent.append(writer.append_pcm(pcm[k * 1920 : (k + 1) * 1920]))
        await ws.send_bytes(b"\x01" + reply.sent[-1])
    while reply.samples < expect_samples:
        message = await ws.receive_bytes(timeout=TIMEOUT)
        reply.kinds.append(message[0])
        if message[0] == 1:
            reply.audio.append(reader.append_bytes(message[1:]).reshape(-1))
            reply.samples += len(reply.audio[-1])
        elif message[0] == 2:
            reply.text += message[1:].decode("utf-8")
        elif message[0] == 4:
            reply.stats.append(json.loads(message[1:]))
        elif message[0] == 5:
            reply.errors.append(message[1:].decode("utf-8"))
    return reply


def voice(i, frames):
    """Client i's own audio: louder and noisier with i (the tiny random model answers each differently)."""
    noise = np.random.default_rng(i).normal(0, 0.02 * (1 + i), frames * 1920)
    return (speech_like(frames, seed=i) * (0.5 + 0.3 * i) + noise).astype(np.float32)


def expected_replies(session, settings, replies):
    """What each client should have received: its own audio (decoded from the Opus it sent, as the server
    decodes it) stepped through the session, one row per client, then the reply frames through Opus.
    Returns the text of each reply frame and the decoded audio, per client."""
    pcm = [sphn.OpusStreamReader(24000).append_bytes(b"".join(r.sent)).reshape(-1) for r in replies]
    frames = min(len(p) for p in pcm) // 1920
    session.reset({row: settings for row in range(session.batch_size)})
    texts, audio = [[] for _ in replies], [[] for _ in replies]
    for t in range(frames):
        batch = np.zeros((session.batch_size, 1920), np.float32)
        for i, p in enumerate(pcm):
            batch[i] = p[t * 1920 : (t + 1) * 1920]
        result = session.step(batch, np.arange(session.batch_size) < len(replies))
        for i in range(len(replies)):
            if result.valid[i]:
                texts[i].append(result.text[i])
                audio[i].append(result.pcm[i])
    decoded = []
    for frames_of_one in audio:
        writer, reader = sphn.OpusStreamWriter(24000), sphn.OpusStreamReader(24000)
        decoded.append(np.concatenate([reader.append_bytes(writer.append_pcm(f)).reshape(-1) for f in frames_of_one]))
    return texts, decoded


async def handshake(ws):
    assert await ws.receive_bytes(timeout=TIMEOUT) == b"\x00"


def chat(base, frames, seed=0, query=""):
    async def run():
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{base}/api/chat{query}") as ws:
            await handshake(ws)
            return await converse(ws, speech_like(frames, seed), Reply(), (frames - 1) * 1920)

    return run()


def test_handshake_audio_both_ways_and_text(server):
    with serving(server.app()) as base:
        reply = asyncio.run(chat(base, 10))
    # The first frame has no reply (the model's speech lags by one frame); every later frame has one.
    assert reply.samples == 9 * 1920
    assert reply.kinds.count(1) == 9 and not reply.errors
    assert reply.text.strip()  # the tiny random model says plenty


def test_eight_concurrent_conversations_each_get_their_own_reply_and_a_ninth_is_refused(server):
    async def run(base):
        async with aiohttp.ClientSession() as http:
            sockets = [await http.ws_connect(f"{base}/api/chat") for _ in range(SLOTS)]
            for ws in sockets:
                await handshake(ws)
            with pytest.raises(aiohttp.WSServerHandshakeError) as ninth:
                await http.ws_connect(f"{base}/api/chat")
            replies = await asyncio.gather(
                *(converse(ws, voice(i, 8), Reply(), 7 * 1920) for i, ws in enumerate(sockets))
            )
            for ws in sockets:
                await ws.close()
            return replies, ninth.value.status

    with serving(server.app()) as base:
        replies, refused = asyncio.run(run(base))
    assert [r.samples for r in replies] == [7 * 1920] * SLOTS
    assert all(not r.errors for r in replies)
    assert refused == 503
    assert server.frames_stepped < SLOTS * 8  # the conversations shared decoder steps
    # Content, not counts: each client's text and audio are what its own audio alone gives, and they differ.
    texts, audio = expected_replies(server.session, server.settings, replies)
    for reply, text, pcm in zip(replies, texts, audio):
        assert reply.text == "".join(text[:-1])  # the last frame's text follows its audio, where reading stopped
        np.testing.assert_array_equal(np.concatenate(reply.audio), pcm)
    assert len({"".join(t) for t in texts}) == len({a.tobytes() for a in audio}) == SLOTS  # all differ


def test_settings_refused_during_a_conversation(server):
    async def run(base):
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/settings", json={"temp_text": 0.7, "top_k_text": 25}) as r:
                idle = r.status
            async with http.ws_connect(f"{base}/api/chat") as ws:
                await handshake(ws)
                async with http.post(f"{base}/api/settings", json={"temp_text": 0.2}) as r:
                    busy = r.status, await r.json()
            await asyncio.sleep(0.2)  # the server notices the closed websocket
            async with http.post(f"{base}/api/settings", data=b"{not json") as r:
                bad_json = r.status
            async with http.post(f"{base}/api/settings", json={"temperature": 1}) as r:
                unknown = r.status, (await r.json())["error"]
            return idle, busy, bad_json, unknown

    with serving(server.app()) as base:
        idle, busy, bad_json, unknown = asyncio.run(run(base))
    assert idle == 200 and server.settings.text_temperature == 0.7 and server.settings.text_top_k == 25
    assert busy[0] == 503 and "busy" in busy[1]["error"]
    assert bad_json == 400
    assert unknown[0] == 400 and "unknown setting 'temperature'" in unknown[1]


def test_client_vanishing_mid_stream_frees_its_slot(server):
    async def run(base):
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{base}/api/chat")
            await handshake(ws)
            writer = sphn.OpusStreamWriter(24000)
            pcm = speech_like(4, seed=3)
            for k in range(4):
                await ws.send_bytes(b"\x01" + writer.append_pcm(pcm[k * 1920 : (k + 1) * 1920]))
            ws._response.connection.transport.abort()  # gone without a close frame
            other = await chat(base, 6, seed=4)
            for _ in range(100):
                if len(server.free_rows) == SLOTS:
                    break
                await asyncio.sleep(0.05)
            return other

    with serving(server.app()) as base:
        other = asyncio.run(run(base))
    assert other.samples == 5 * 1920 and not other.errors
    assert sorted(server.free_rows) == list(range(SLOTS)) and not server.connections


def test_garbage_messages_get_errors_and_the_conversation_goes_on(server):
    async def run(base):
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{base}/api/chat") as ws:
            await handshake(ws)
            await ws.send_bytes(b"")
            await ws.send_str("hello")
            await ws.send_bytes(b"\x01" + b"definitely not ogg" * 10)
            await ws.send_bytes(b"\x07unknown kind: ignored")
            errors = [(await ws.receive_bytes(timeout=TIMEOUT)) for _ in range(3)]
            reply = await converse(ws, speech_like(6, seed=5), Reply(), 5 * 1920)
            return errors, reply

    with serving(server.app()) as base:
        errors, reply = asyncio.run(run(base))
    assert [e[0] for e in errors] == [5, 5, 5]
    text = [e[1:].decode() for e in errors]
    assert text[0] == "empty message" and "binary" in text[1] and "Ogg/Opus" in text[2]
    assert reply.samples == 5 * 1920 and not reply.errors


def test_access_token(session):
    server = ChatServer(session, access_token="s3cret")

    async def run(base):
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{base}/api/chat?token=wrong")
            async with http.post(f"{base}/api/settings", json={}) as r:
                settings = r.status
            async with http.post(f"{base}/api/settings", json={}, headers={"Authorization": "Bearer s3cret"}) as r:
                settings_ok = r.status
            reply = await chat(base, 3, query="?token=s3cret")
            operator = {}
            for path in ("/api/status", "/metrics", "/healthz", "/api/settings"):
                async with http.get(f"{base}{path}") as r, http.get(f"{base}{path}?token=s3cret") as ok:
                    operator[path] = r.status, ok.status
            async with http.get(f"{base}/") as page:  # the page itself is public: it says what is missing
                return refused.value.status, settings, settings_ok, reply, operator, page.status

    with serving(server.app()) as base:
        refused, settings, settings_ok, reply, operator, page = asyncio.run(run(base))
    assert (refused, settings, settings_ok) == (401, 401, 200)
    assert reply.samples == 2 * 1920
    assert operator == {path: (401, 200) for path in operator} and page == 200
    assert server.refused == {"busy": 0, "token": 1, "settings": 0}


def test_outbox_drops_oldest_reply_audio_but_keeps_headers_and_text():
    async def run():
        box = Outbox(max_droppable=2)
        box.put(b"header", droppable=False)
        for k in range(4):
            box.put(b"audio%d" % k, droppable=True)
        box.put(b"text", droppable=False)
        return [await box.get() for _ in range(len(box.items))], box.dropped

    messages, dropped = asyncio.run(run())
    assert messages == [b"header", b"audio2", b"audio3", b"text"] and dropped == 2


def test_browser_page_and_every_file_it_loads_are_served(server):
    """No build step: the page loads its ES modules, style and audio worklet by relative path, and each
    must be there; every file of static/ is one of them."""
    reference = re.compile(r'(?:from |addModule\(|href=|src=)"(?:\./|static/)([\w.-]+)"')

    async def run(base):
        async with aiohttp.ClientSession() as http:
            served, wanted = {}, {""}  # "" is the page itself, at /
            while wanted - served.keys():
                name = (wanted - served.keys()).pop()
                async with http.get(f"{base}/{'static/' + name if name else ''}") as r:
                    served[name] = r.status
                    wanted |= set(reference.findall(await r.text()))
            return served

    with serving(server.app()) as base:
        served = asyncio.run(run(base))
    assert served == {name: 200 for name in served}
    assert {f.name for f in STATIC_DIR.iterdir()} == (set(served) - {""}) | {"index.html"}


def test_serve_cli_rejects_a_missing_checkpoint(tmp_path, capsys):
    serve = load_launcher("serve")
    assert serve.main(["--checkpoint", str(tmp_path / "nowhere"), "--mimi", "random"]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err


def test_conversation_settings_travel_in_the_chat_query(server):
    """The release's setting names as query parameters set one conversation's sampling (its decoder row);
    the server's defaults and other conversations keep theirs; Moshi's names are ignored, as the release does."""
    moshi = "text_temperature=0.7&text_topk=25&audio_topk=250&repetition_penalty=1.5&pad_mult=0&text_seed=7"
    query = f"?temp_text=0.7&top_k_audio=250&use_sampling=false&{moshi}"

    async def run(base):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/api/settings{query}") as r:
                resolved = await r.json()
            rejected = []
            for bad in ("?temp_text=hot", "?top_p_text=2", "?use_sampling=maybe", "?top_k_text=2.5"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(f"{base}/api/chat{bad}")
                async with http.get(f"{base}/api/settings{bad}") as r:
                    rejected.append((refused.value.status, r.status, (await r.json())["error"]))
            async with http.ws_connect(f"{base}/api/chat{query}") as mine, http.ws_connect(f"{base}/api/chat") as other:
                await handshake(mine)
                await handshake(other)
                rows = {r: c.settings for r, c in server.connections.items()}
                decoder_rows = {r: server.session.settings[r] for r in rows}
                async with http.get(f"{base}/api/status") as r:
                    status = await r.json()
            return resolved, rejected, rows, decoder_rows, status

    with serving(server.app()) as base:
        resolved, rejected, rows, decoder_rows, status = asyncio.run(run(base))
    defaults = SamplingSettings()
    assert resolved["defaults"] == defaults.release() and resolved["slots"] == {"total": 8, "in_use": 0, "free": 8}
    assert resolved["settings"] == {**defaults.release(), "temp_text": 0.7, "top_k_audio": 250, "use_sampling": False}
    assert [(ws, get) for ws, get, _ in rejected] == [(400, 400)] * 4
    assert "temp_text" in rejected[0][2] and "top_p" in rejected[1][2] and "integer" in rejected[3][2]
    mine, other = rows[0], rows[1]  # rows go to connections in order
    assert (mine.text_temperature, mine.audio_top_k, mine.greedy) == (0.7, 250, True)
    assert other == defaults and decoder_rows == rows and server.settings == defaults
    assert [c["settings"]["temp_text"] for c in status["conversations"]] == [0.7, defaults.text_temperature]
    assert server.refused["settings"] == 4


def test_stats_messages_only_for_clients_that_ask(server):
    """?stats=1: a kind-4 JSON before each step's reply (input frame, reply index, step time, queue, drops);
    clients that do not ask (the release's, Moshi's) never see kind 4."""

    async def run(base):
        async with aiohttp.ClientSession() as http:
            async with (
                http.ws_connect(f"{base}/api/chat?stats=1") as asking,
                http.ws_connect(f"{base}/api/chat") as plain,
            ):
                await handshake(asking)
                await handshake(plain)
                return await asyncio.gather(
                    converse(asking, speech_like(6, seed=1), Reply(), 5 * 1920),
                    converse(plain, speech_like(6, seed=2), Reply(), 5 * 1920),
                )

    with serving(server.app()) as base:
        asking, plain = asyncio.run(run(base))
    assert 4 not in plain.kinds and 4 in asking.kinds
    assert [s["frame"] for s in asking.stats] == list(range(len(asking.stats)))
    assert [s["reply"] for s in asking.stats] == [None, *range(len(asking.stats) - 1)]
    assert all(s["step_ms"] > 0 and s["dropped_in"] == s["dropped_out"] == 0 for s in asking.stats)
    # Each step's stats come before its audio: kinds read 4, then (4, 1, text...) for every later step.
    audio_after_stats = [asking.kinds[i - 1] for i, k in enumerate(asking.kinds) if k == 1]
    assert set(audio_after_stats) == {4}


def metric_families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(exposition, name, **labels):
    """The value of one sample of a Prometheus exposition (text, or families parsed from it)."""
    families = metric_families(exposition) if isinstance(exposition, str) else exposition
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(f"{name} {labels}")


def test_status_metrics_and_health_follow_slots_opening_and_closing(server):
    async def run(base):
        seen = {}
        async with aiohttp.ClientSession() as http:

            async def look(moment):
                async with http.get(f"{base}/api/status") as r, http.get(f"{base}/metrics") as m:
                    seen[moment] = await r.json(), m.headers["Content-Type"], await m.text()

            await look("idle")
            first = await http.ws_connect(f"{base}/api/chat")
            second = await http.ws_connect(f"{base}/api/chat")
            await handshake(first)
            await handshake(second)
            await asyncio.gather(
                converse(first, speech_like(6, seed=1), Reply(), 5 * 1920),
                converse(second, speech_like(4, seed=2), Reply(), 3 * 1920),
            )
            await look("two")
            await first.close()
            for _ in range(100):
                if len(server.connections) == 1:
                    break
                await asyncio.sleep(0.05)
            await look("one")
            async with http.get(f"{base}/healthz") as r:
                healthy = r.status, await r.json()
            server.step_started = time.monotonic() - 100  # as if a decoder step had hung for 100 s
            async with http.get(f"{base}/healthz") as r:
                stalled = r.status, await r.json()
            server.step_started = None
            await second.close()
            for _ in range(100):
                if not server.connections:
                    break
                await asyncio.sleep(0.05)
            await look("none")
        return seen, healthy, stalled

    with serving(server.app()) as base:
        seen, healthy, stalled = asyncio.run(run(base))
    slots = {moment: status["slots"] for moment, (status, _, _) in seen.items()}
    assert slots == {
        "idle": {"total": 8, "in_use": 0, "free": 8},
        "two": {"total": 8, "in_use": 2, "free": 6},
        "one": {"total": 8, "in_use": 1, "free": 7},
        "none": {"total": 8, "in_use": 0, "free": 8},
    }
    two = seen["two"][0]
    assert [c["slot"] for c in two["conversations"]] == [0, 1]
    assert [c["frames_received"] for c in two["conversations"]] == [6, 4]
    assert [c["frames_stepped"] for c in two["conversations"]] == [6, 4]
    assert all(
        c["age_s"] > 0 and c["dropped_input_frames"] == c["dropped_output_frames"] == 0 for c in two["conversations"]
    )
    assert 0 < two["frame_time_ms"]["p50"] <= two["frame_time_ms"]["p99"]
    assert two["frame_time_ms"]["steps"] == two["frames_stepped"] and two["stream_frames"] == 10
    assert [c["slot"] for c in seen["one"][0]["conversations"]] == [1]
    assert [(r["slot"], r["frames_stepped"]) for r in seen["none"][0]["recent"]] == [(0, 6), (1, 4)]
    # /metrics: Prometheus text that its own parser reads, with the same numbers.
    content_type, text = seen["two"][1:]
    assert content_type.startswith("text/plain")
    families = metric_families(text)
    assert sample(families, "flmjax_slots", state="in_use") == 2 and sample(families, "flmjax_slots", state="free") == 6
    assert sample(families, "flmjax_conversations_started_total") == 2
    assert sample(families, "flmjax_decoder_steps_total") == two["frames_stepped"]
    assert sample(families, "flmjax_stream_frames_total") == 10
    assert sample(families, "flmjax_frame_seconds_count") == two["frames_stepped"]
    assert sample(families, "flmjax_dropped_frames_total", direction="input") == 0
    assert sample(families, "flmjax_frame_time_last_minute_seconds", quantile="0.5") == pytest.approx(
        two["frame_time_ms"]["p50"] / 1e3
    )
    assert sample(seen["none"][2], "flmjax_slots", state="in_use") == 0
    assert healthy == (200, {"status": "ok", "slots": {"total": 8, "in_use": 1, "free": 7}})
    assert stalled[0] == 503 and "running for 100 s" in stalled[1]["status"]


# The README's self-signed example, for 127.0.0.1 instead of a LAN address.
OPENSSL = (
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 "
    "-keyout key.pem -out cert.pem -subj /CN=flmjax -addext subjectAltName=IP:127.0.0.1,DNS:localhost"
)


def test_https_with_a_self_signed_certificate(session, tmp_path):
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed: the README's certificate recipe cannot be checked")
    subprocess.run(OPENSSL.split(), cwd=tmp_path, check=True, capture_output=True)
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    server = ChatServer(session, access_token="s3cret")
    trust = ssl.create_default_context(cafile=cert)

    async def run(base):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz?token=s3cret", ssl=trust) as r:
                health = r.status
            async with http.ws_connect(f"{base.replace('https', 'wss')}/api/chat?token=s3cret", ssl=trust) as ws:
                await handshake(ws)
                reply = await converse(ws, speech_like(3), Reply(), 2 * 1920)
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{base}/healthz")  # an unknown self-signed certificate is refused
            return health, reply

    with serving(server.app(), server_ssl_context(cert, key)) as base:
        health, reply = asyncio.run(run(base))
    assert base.startswith("https://") and health == 200 and reply.samples == 2 * 1920
    with pytest.raises(FlmjaxError, match="nowhere.pem: no such"):
        server_ssl_context(str(tmp_path / "nowhere.pem"), key)
    with pytest.raises(FlmjaxError, match="not a PEM certificate"):
        server_ssl_context(key, cert)


def test_serve_cli_rejects_a_missing_certificate_or_key(tmp_path, capsys):
    serve = load_launcher("serve")
    common = ["--checkpoint", str(tmp_path), "--mimi", "random"]
    assert serve.main([*common, "--ssl-cert", str(tmp_path / "cert.pem")]) == 2
    assert "--ssl-cert and --ssl-key go together" in capsys.readouterr().err
    assert serve.main([*common, "--ssl-cert", str(tmp_path / "c.pem"), "--ssl-key", str(tmp_path / "k.pem")]) == 2
    assert "c.pem: no such certificate or key file" in capsys.readouterr().err
