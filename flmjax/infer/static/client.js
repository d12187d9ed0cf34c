// Browser client of the chat protocol: microphone -> Ogg/Opus -> server; server audio -> speaker; the
// monologue live; scopes, timeline, statistics, settings and downloads around them.
import { OggOpusWriter, OggReader, concat, isOpusHeader } from "./ogg.js";
import { Recording } from "./recording.js";
import { SettingsForm } from "./settings.js";
import { COLORS, Scope, Timeline } from "./visuals.js";

const SAMPLE_RATE = 24000;
const FRAME = 1920; // samples of one 80 ms frame
const KIND = { handshake: 0, audio: 1, text: 2, stats: 4, error: 5 };
const SILENCE_LIMIT_MS = 10000; // nothing from the server for this long: the connection is lost
const DRAIN_PATIENCE_MS = 2000;
const CUSHION_S = 0.08; // reply audio is scheduled this far ahead, against network jitter
const MAX_BUFFERED_S = 0.3; // beyond this much unplayed reply audio, late audio is skipped to stay live // on Stop, wait for the replies to what was sent while they keep coming
const RECENT = 12; // statistics are medians over the last RECENT steps (about a second)

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(window.location.search).get("token");

// What the page has done so far (read by tests through the DevTools protocol).
const stats = (window.flmStats = {
  state: "idle", handshake: false, pagesSent: 0, audioMessages: 0, statsMessages: 0, secondsDecoded: 0,
  text: "", errors: [], message: null, frames: 0, decodedRate: null,
});

const MESSAGES = {
  insecure: [
    "The microphone needs a secure page",
    "Browsers give the microphone only to pages served over https:// or from this machine (localhost). " +
      "Start the server with --ssl-cert and --ssl-key (see the README) and open its https:// address.",
  ],
  codecs: [
    "This browser cannot encode Opus audio",
    "It lacks WebCodecs audio (AudioEncoder and AudioDecoder): use a recent Chrome, Edge or Firefox.",
  ],
  denied: [
    "Microphone permission denied",
    "Allow the microphone for this site (the icon at the left of the address bar), then press Start again.",
  ],
  nomic: ["No microphone found", "Connect a microphone, then press Start again."],
  token: [
    "Wrong or missing access token",
    "This server needs its access token: open the page as …/?token=YOUR_TOKEN (ask whoever runs the server).",
  ],
  busy: ["The server is busy", "All conversation slots are taken: try again in a moment."],
  settings: ["Settings refused", ""],
  unreachable: ["Cannot reach the server", "It is not running, or the network is down. Try again when it is back."],
  refused: ["The server refused the conversation", ""],
  lost: ["Connection lost", ""],
  server: ["The server reports a problem", ""],
  failed: ["Something went wrong", ""],
};

function say(kind, detail) {
  const [title, text] = MESSAGES[kind];
  const box = $("message");
  box.hidden = false;
  box.dataset.kind = kind;
  box.querySelector("strong").textContent = title;
  box.querySelector("span").textContent = detail || text;
  stats.message = { kind, title, detail: detail || text };
}

function unsay() {
  $("message").hidden = true;
  stats.message = null;
}

function setState(state) {
  stats.state = state;
  $("state").textContent = state;
  $("state").dataset.state = state;
}

function apiUrl(path, params = {}) {
  const url = new URL(path, window.location.href);
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, String(value));
  if (token) url.searchParams.set("token", token);
  return url;
}

// What a conversation with these settings would get: {status (0: unreachable), body}.
async function probe(overrides = {}) {
  try {
    const response = await fetch(apiUrl("api/settings", overrides), { cache: "no-store" });
    return { status: response.status, body: await response.json().catch(() => ({})) };
  } catch {
    return { status: 0, body: {} };
  }
}

// The reason a probe gives for not talking (a message kind and detail), or null when a slot is free.
function obstacle({ status, body }) {
  if (status === 0) return ["unreachable"];
  if (status === 401) return ["token"];
  if (status === 400) return ["settings", body.error];
  if (status !== 200) return ["refused", `The server answered ${status}: ${body.error || "no reason given"}.`];
  if (body.slots.free === 0) return ["busy", `All ${body.slots.total} conversation slots are taken: try again in a moment.`];
  return null;
}

const median = (values) => {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

class Conversation {
  constructor(recording) {
    this.recording = recording;
    this.frame = 0; // the input frame of the last step the server reported
    this.sentAt = []; // per input frame, when its last sample left for the server
    this.encoded = 0; // samples encoded and sent
    this.rtt = [];
    this.stepMs = [];
    this.server = { queued: 0, dropped_in: 0, dropped_out: 0 };
    this.gaps = 0;
    this.skipped = 0; // seconds of reply audio not played because it came too late
    this.playhead = 0;
    this.capturing = false;
    this.lastMessage = performance.now();
  }

  // Microphone, then the socket; resolves once the server's handshake came.
  async start(overrides) {
    this.context = new AudioContext({ sampleRate: SAMPLE_RATE });
    this.microphone = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false },
    });
    this.userAnalyser = this.analyser();
    this.modelAnalyser = this.analyser();
    this.modelAnalyser.connect(this.context.destination);
    this.setUpPlayback();
    await this.setUpCapture();
    await this.context.resume();
    await this.connect(overrides);
  }

  analyser() {
    const node = this.context.createAnalyser();
    node.fftSize = 1024;
    return node;
  }

  connect(overrides) {
    const url = apiUrl("api/chat", { ...overrides, stats: 1 });
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.socket = new WebSocket(url);
    this.socket.binaryType = "arraybuffer";
    return new Promise((resolve, reject) => {
      this.handshake = resolve;
      this.socket.onmessage = (event) => this.receive(new Uint8Array(event.data));
      this.socket.onclose = (event) => {
        if (!stats.handshake) reject(new Error("closed before the handshake"));
        else this.onLost?.(event);
      };
    });
  }

  async setUpCapture() {
    const writer = new OggOpusWriter(SAMPLE_RATE);
    let headersSent = false;
    this.encoder = new AudioEncoder({
      output: (chunk) => {
        const data = new Uint8Array(chunk.byteLength);
        chunk.copyTo(data);
        const samples = Math.round((chunk.duration * SAMPLE_RATE) / 1e6);
        const page = writer.packet(data, samples * 2);
        if (!this.send(KIND.audio, headersSent ? page : concat([writer.headers(), page]))) return;
        headersSent = true;
        this.encoded += samples;
        const now = performance.now();
        while (this.sentAt.length < Math.floor(this.encoded / FRAME)) this.sentAt.push(now);
      },
      error: (e) => fail(e),
    });
    this.encoder.configure({ codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1, bitrate: 32000 });
    await this.context.audioWorklet.addModule("static/capture-worklet.js");
    this.capture = new AudioWorkletNode(this.context, "capture");
    let timestamp = 0;
    this.capture.port.onmessage = (event) => {
      if (!this.capturing || this.encoder.state !== "configured") return;
      const samples = event.data;
      this.recording.addUser(samples);
      const data = new AudioData({
        format: "f32-planar", sampleRate: SAMPLE_RATE, numberOfFrames: samples.length,
        numberOfChannels: 1, timestamp, data: samples,
      });
      timestamp += (samples.length * 1e6) / SAMPLE_RATE;
      this.encoder.encode(data);
      data.close();
    };
    const source = this.context.createMediaStreamSource(this.microphone);
    source.connect(this.capture);
    source.connect(this.userAnalyser);
  }

  setUpPlayback() {
    this.reader = new OggReader();
    this.decoder = new AudioDecoder({
      output: (audio) => {
        const samples = new Float32Array(audio.numberOfFrames);
        audio.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
        const rate = audio.sampleRate;
        // The chunk's timestamp is where the packet ends in the reply stream (see receive).
        const end = Math.round((audio.timestamp * SAMPLE_RATE) / 1e6);
        audio.close();
        stats.decodedRate = rate;
        stats.secondsDecoded += samples.length / rate;
        const at24k = rate === SAMPLE_RATE ? samples : resample(samples, rate, SAMPLE_RATE);
        this.recording.addModel(end - at24k.length, at24k);
        this.play(samples, rate);
      },
      error: (e) => fail(e),
    });
    this.decoder.configure({ codec: "opus", sampleRate: SAMPLE_RATE, numberOfChannels: 1 });
  }

  play(samples, rate) {
    const now = this.context.currentTime;
    if (this.playhead - now > MAX_BUFFERED_S) {
      // A burst after a stall: play on from the newest audio rather than fall behind for good (the
      // recording keeps it all).
      this.skipped += samples.length / rate;
      return;
    }
    const buffer = this.context.createBuffer(1, samples.length, rate);
    buffer.copyToChannel(samples, 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.modelAnalyser);
    if (this.playhead > 0 && this.playhead < now) this.gaps += 1; // the reply came too late to play on
    this.playhead = Math.max(this.playhead, now + CUSHION_S);
    source.start(this.playhead);
    this.playhead += buffer.duration;
  }

  send(kind, payload) {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(concat([new Uint8Array([kind]), payload]));
    stats.pagesSent += 1;
    return true;
  }

  receive(message) {
    this.lastMessage = performance.now();
    if (message.length === 0) return;
    const payload = message.subarray(1);
    switch (message[0]) {
      case KIND.handshake:
        stats.handshake = true;
        this.capturing = true;
        this.handshake();
        break;
      case KIND.stats: {
        // Before each step's reply: which input frame was stepped and how the server is doing.
        const info = JSON.parse(new TextDecoder().decode(payload));
        stats.statsMessages += 1;
        this.frame = info.frame;
        this.recording.step(info.frame, info.reply);
        const sent = this.sentAt[info.frame];
        if (sent !== undefined) this.rtt = [...this.rtt.slice(1 - RECENT), performance.now() - sent];
        this.stepMs = [...this.stepMs.slice(1 - RECENT), info.step_ms];
        this.server = info;
        break;
      }
      case KIND.audio:
        stats.audioMessages += 1;
        for (const { data, end } of this.reader.push(payload)) {
          if (isOpusHeader(data)) continue;
          // Every Opus packet decodes on its own; its timestamp carries its place in the reply stream.
          const timestamp = Math.round((end * 1e6) / 48000);
          this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp, data }));
        }
        break;
      case KIND.text: {
        const text = new TextDecoder().decode(payload);
        stats.text += text;
        this.recording.addText(this.frame, text);
        $("monologue").textContent += text;
        $("monologue").scrollTop = $("monologue").scrollHeight;
        break;
      }
      case KIND.error: {
        const text = new TextDecoder().decode(payload);
        stats.errors.push("server: " + text);
        say("server", text);
        break;
      }
      default:
        break; // other kinds are ignored, as the protocol says
    }
  }

  // Figures for the statistics panel.
  figures() {
    const buffered = this.context ? Math.max(0, this.playhead - this.context.currentTime) : 0;
    return {
      rtt: median(this.rtt),
      buffered: buffered * 1000,
      queued: this.server.queued,
      step: median(this.stepMs),
      droppedIn: this.server.dropped_in,
      droppedOut: this.server.dropped_out,
      gaps: this.gaps,
      skipped: this.skipped,
    };
  }

  // Stop listening, send what the encoder holds, and take the replies to all of it (while they come).
  async finish() {
    this.capturing = false;
    if (this.encoder.state === "configured") await this.encoder.flush().catch(() => {});
    const last = Math.floor(this.encoded / FRAME) - 1; // the last whole frame sent
    while (this.frame < last && this.socket.readyState === WebSocket.OPEN) {
      if (performance.now() - this.lastMessage > DRAIN_PATIENCE_MS) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    if (this.decoder.state === "configured") await this.decoder.flush().catch(() => {});
  }

  close() {
    if (this.socket) {
      this.socket.onclose = null;
      this.socket.close();
    }
    this.microphone?.getTracks().forEach((t) => t.stop());
    if (this.encoder?.state === "configured") this.encoder.close();
    if (this.decoder?.state === "configured") this.decoder.close();
    this.context?.close();
  }
}

// Linear interpolation, for decoders that insist on another rate (the recording is at 24 kHz).
function resample(samples, from, to) {
  const out = new Float32Array(Math.round((samples.length * to) / from));
  for (let i = 0; i < out.length; i++) {
    const x = (i * from) / to;
    const k = Math.floor(x);
    const next = samples[Math.min(k + 1, samples.length - 1)];
    out[i] = samples[k] + (next - samples[k]) * (x - k);
  }
  return out;
}

// --- the page ---------------------------------------------------------------------------------------------
const button = $("toggle");
const settings = new SettingsForm($("settings"), $("settings-summary"));
const scopes = { user: new Scope($("scope-user"), COLORS.user), model: new Scope($("scope-model"), COLORS.model) };
const timeline = new Timeline($("timeline"));
let conversation = null;
let recording = null;
let startedAt = null;

function fail(error) {
  stats.errors.push(String(error?.message || error));
  say("failed", String(error?.message || error));
}

function ms(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value)} ms`;
}

function showStatistics() {
  if (!conversation) return;
  const f = conversation.figures();
  $("stat-rtt").textContent = ms(f.rtt);
  $("stat-buffer").textContent = ms(f.buffered);
  $("stat-queue").textContent = `${f.queued} frames`;
  $("stat-step").textContent = f.step === null ? "–" : `${f.step.toFixed(1)} ms of 80`;
  $("stat-dropped-in").textContent = `${f.droppedIn} frames`;
  $("stat-dropped-out").textContent = `${f.droppedOut} frames`;
  $("stat-gaps").textContent = `${f.gaps} · ${f.skipped.toFixed(1)} s skipped`;
  stats.frames = recording.frames;
  Object.assign(stats, { rttMs: f.rtt, stepMs: f.step, gaps: f.gaps });
  $("stat-length").textContent = `${((recording.frames * FRAME) / SAMPLE_RATE).toFixed(1)} s · ${recording.frames} frames`;
}

function draw() {
  scopes.user.draw();
  scopes.model.draw();
  timeline.draw();
  requestAnimationFrame(draw);
}

function end(state) {
  const ending = conversation;
  conversation = null;
  ending?.close();
  clearInterval(ending?.watch);
  scopes.user.detach();
  scopes.model.detach();
  button.textContent = "Start";
  settings.setEnabled(true);
  setState(state);
  if (recording?.frames) for (const id of ["download-wav", "download-text"]) $(id).disabled = false;
}

async function start() {
  unsay();
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) return say("insecure");
  if (typeof AudioEncoder === "undefined" || typeof AudioDecoder === "undefined") return say("codecs");
  if (!settings.valid()) return;
  const overrides = settings.overrides();
  setState("connecting");
  button.disabled = true;
  const reason = obstacle(await probe(overrides));
  button.disabled = false;
  if (reason) {
    setState("idle");
    return say(...reason);
  }
  stats.handshake = false;
  recording = new Recording(SAMPLE_RATE, FRAME);
  conversation = new Conversation(recording);
  const current = conversation;
  current.onLost = (event) => {
    if (conversation !== current) return;
    const seconds = ((recording.frames * FRAME) / SAMPLE_RATE).toFixed(1);
    const why = event.code === 1001 ? "the server shut down" : "the server or the network went away";
    end("lost");
    say("lost", `After ${seconds} s ${why}. What was said so far can still be downloaded.`);
  };
  button.textContent = "Stop";
  settings.setEnabled(false);
  $("monologue").textContent = "";
  timeline.show(recording);
  startedAt = new Date();
  try {
    await current.start(overrides);
  } catch (e) {
    if (conversation !== current) return; // stopped meanwhile
    end("idle");
    if (e.name === "NotAllowedError") return say("denied");
    if (e.name === "NotFoundError" || e.name === "OverconstrainedError") return say("nomic");
    if (e.message === "closed before the handshake") {
      return say(...(obstacle(await probe(overrides)) || ["refused", "It closed the connection before it began."]));
    }
    return fail(e);
  }
  if (conversation !== current) return;
  setState("talking");
  scopes.user.attach(current.userAnalyser);
  scopes.model.attach(current.modelAnalyser);
  current.watch = setInterval(() => {
    showStatistics();
    if (performance.now() - current.lastMessage > SILENCE_LIMIT_MS) current.onLost({ code: 0 });
  }, 250);
}

function download(blob, suffix) {
  const stamp = (startedAt || new Date()).toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
  const link = Object.assign(document.createElement("a"), {
    href: URL.createObjectURL(blob), download: `flm-audio-${stamp}${suffix}`,
  });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

async function stop() {
  const current = conversation;
  if (!current.capturing) return end("idle"); // still connecting: nothing to wait for
  button.disabled = true;
  button.textContent = "Stopping…";
  setState("finishing");
  await current.finish();
  button.disabled = false;
  if (conversation === current) end("idle");
}

button.addEventListener("click", () => (conversation ? stop() : start()));
$("download-wav").addEventListener("click", () => download(recording.wav(), ".wav"));
$("download-text").addEventListener("click", () => download(recording.monologue(), "-monologue.json"));

async function load() {
  setState("idle");
  requestAnimationFrame(draw);
  if (!window.isSecureContext) say("insecure");
  const answer = await probe();
  if (answer.status === 200) settings.show(answer.body.defaults, answer.body.max_repetition_window);
  const reason = obstacle(answer);
  if (reason && reason[0] !== "busy" && window.isSecureContext) say(...reason);
  stats.loaded = true;
}

load();
