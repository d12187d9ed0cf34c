"""The chat server with real websocket clients (aiohttp): the release's protocol, many conversations at once,
clients that vanish or send garbage, settings, access tokens."""

import asyncio
import dataclasses

import aiohttp
import pytest
import sphn

from flmjax.infer.sampling import SamplingSettings
from flmjax.infer.server import ChatServer, Outbox
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


async def converse(ws, pcm, reply, expect_samples):
    """Send pcm as Ogg/Opus (one page per 80 ms) and read until `expect_samples` reply samples arrived."""
    writer, reader = sphn.OpusStreamWriter(24000), sphn.OpusStreamReader(24000)
    for k in range(len(pcm) // 1920):
        await ws.send_bytes(b"\x01" + writer.append_pcm(pcm[k * 1920 : (k + 1) * 1920]))
    while reply.samples < expect_samples:
        message = await ws.receive_bytes(timeout=TIMEOUT)
        reply.kinds.append(message[0])
        if message[0] == 1:
            reply.samples += reader.append_bytes(message[1:]).shape[-1]
        elif message[0] == 2:
            reply.text += message[1:].decode("utf-8")
        elif message[0] == 5:
            reply.errors.append(message[1:].decode("utf-8"))
    return reply


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


def test_eight_concurrent_conversations_and_a_ninth_is_refused(server):
    async def run(base):
        async with aiohttp.ClientSession() as http:
            sockets = [await http.ws_connect(f"{base}/api/chat") for _ in range(SLOTS)]
            for ws in sockets:
                await handshake(ws)
            with pytest.raises(aiohttp.WSServerHandshakeError) as ninth:
                await http.ws_connect(f"{base}/api/chat")
            replies = await asyncio.gather(
                *(converse(ws, speech_like(8, seed=i), Reply(), 7 * 1920) for i, ws in enumerate(sockets))
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
            return refused.value.status, settings, settings_ok, reply

    with serving(server.app()) as base:
        refused, settings, settings_ok, reply = asyncio.run(run(base))
    assert (refused, settings, settings_ok) == (401, 401, 200)
    assert reply.samples == 2 * 1920


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


def test_browser_page_is_served(server):
    async def run(base):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/") as page, http.get(f"{base}/static/client.js") as script:
                return page.status, await page.text(), script.status

    with serving(server.app()) as base:
        status, html, script = asyncio.run(run(base))
    assert status == 200 and "static/client.js" in html and script == 200


def test_serve_cli_rejects_a_missing_checkpoint(tmp_path, capsys):
    serve = load_launcher("serve")
    assert serve.main(["--checkpoint", str(tmp_path / "nowhere"), "--mimi", "random"]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
