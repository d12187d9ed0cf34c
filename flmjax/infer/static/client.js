// Browser client of the chat protocol: microphone -> Ogg/Opus -> server; server audio -> speaker; text live.
import { OggOpusWriter, OggReader, concat, isOpusHeader } from "./ogg.js";

const SAMPLE_RATE = 24000;
const KIND = { handshake: 0, audio: 1, text: 2, error: 5 };

// What the page has done so far (read by tests through the DevTools protocol).
const stats = (window.flmStats = {
  state: "idle", handshake: false, pagesSent: 0, audioMessages: 0, secondsDecoded: 0,
  text: "", errors: [],
});

const button = document.getElementById("toggle");
const status = document.getElementById("status");
const monologue = document.getElementById("monologue");
let conversation = null;

function show(state, isError = false) {
  stats.state = state;
  status.textContent = state;
  status.classList.toggle("error", isError);
}

function fail(message) {
  stats.errors.push(String(message));
  show(String(message), true);
}

class Conversation {
  async start() {
    stats.handshake = false;
    if (typeof AudioEncoder === "undefined" || typeof AudioDecoder === "undefined") {
      throw new Error("this browser lacks WebCodecs audio (AudioEncoder/AudioDecoder)");
    }
    this.context = new AudioContext({ sampleRate: SAMPLE_RATE });
    this.microphone = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false },
    });
    this.socket = await this.connect();
    this.setUpPlayback();
    await this.setUpCapture();
    await this.context.resume();
  }

  connect() {
    const url = new URL("api/chat", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const token = new URLSearchParams(window.location.search).get("token");
    if (token) url.searchParams.set("token", token);
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.receive(new Uint8Array(event.data));
    socket.onclose = () => {
      if (conversation === this) stop("disconnected");
    };
    return new Promise((resolve, reject) => {
      socket.onopen = () => resolve(socket);
      socket.onerror = () => reject(new Error("cannot reach the server"));
    });
  }

  async setUpCapture() {
    const writer = new OggOpusWriter(SAMPLE_RATE);
    let headersSent = false;
    this.encoder = new AudioEncoder({
      output: (chunk) => {
        const data = new Uint8Array(chunk.byteLength);
        chunk.copyTo(data);
        const page = writer.packet(data, Math.round((chunk.duration * 48000) / 1e6));
        this.send(KIND.audio, headersSent ? page : concat([writer.headers(), page]));
        headersSent = true;
      },
      error: (e) => fail(e),
    });
    this.encoder.configure({ codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1, bitrate: 32000 });
    await this.context.audioWorklet.addModule("static/capture-worklet.js");
    this.capture = new AudioWorkletNode(this.context, "capture");
    let timestamp = 0;
    this.capture.port.onmessage = (event) => {
      if (!stats.handshake || this.encoder.state !== "configured") return;
      const samples = event.data;
      const data = new AudioData({
        format: "f32-planar", sampleRate: SAMPLE_RATE, numberOfFrames: samples.length,
        numberOfChannels: 1, timestamp, data: samples,
      });
      timestamp += (samples.length * 1e6) / SAMPLE_RATE;
      this.encoder.encode(data);
      data.close();
    };
    this.context.createMediaStreamSource(this.microphone).connect(this.capture);
  }

  setUpPlayback() {
    this.reader = new OggReader();
    this.playhead = 0;
    this.decoder = new AudioDecoder({
      output: (audio) => {
        const samples = new Float32Array(audio.numberOfFrames);
        audio.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
        const buffer = this.context.createBuffer(1, samples.length, audio.sampleRate);
        buffer.copyToChannel(samples, 0);
        audio.close();
        const source = this.context.createBufferSource();
        source.buffer = buffer;
        source.connect(this.context.destination);
        // Keep a small cushion ahead of the clock so network jitter does not click.
        this.playhead = Math.max(this.playhead, this.context.currentTime + 0.08);
        source.start(this.playhead);
        this.playhead += buffer.duration;
        stats.secondsDecoded += buffer.duration;
      },
      error: (e) => fail(e),
    });
    this.decoder.configure({ codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1 });
  }

  send(kind, payload) {
    if (this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(concat([new Uint8Array([kind]), payload]));
    stats.pagesSent += 1;
  }

  receive(message) {
    if (message.length === 0) return;
    const payload = message.subarray(1);
    switch (message[0]) {
      case KIND.handshake:
        stats.handshake = true;
        show("connected: talk");
        break;
      case KIND.audio:
        stats.audioMessages += 1;
        for (const packet of this.reader.push(payload)) {
          if (isOpusHeader(packet)) continue;
          // Every Opus packet decodes on its own; the output is played in arrival order.
          this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: 0, data: packet }));
        }
        break;
      case KIND.text: {
        const text = new TextDecoder().decode(payload);
        stats.text += text;
        monologue.textContent += text;
        break;
      }
      case KIND.error:
        fail("server: " + new TextDecoder().decode(payload));
        break;
      default:
        break; // other kinds are ignored, as the protocol says
    }
  }

  close() {
    this.socket?.close();
    this.microphone?.getTracks().forEach((t) => t.stop());
    if (this.encoder?.state === "configured") this.encoder.close();
    if (this.decoder?.state === "configured") this.decoder.close();
    this.context?.close();
  }
}

function stop(state) {
  conversation?.close();
  conversation = null;
  button.textContent = "Start";
  show(state);
}

button.addEventListener("click", async () => {
  if (conversation) return stop("idle");
  conversation = new Conversation();
  button.textContent = "Stop";
  monologue.textContent = "";
  show("connecting");
  try {
    await conversation.start();
  } catch (e) {
    stop("idle");
    fail(e.message || e);
  }
});
