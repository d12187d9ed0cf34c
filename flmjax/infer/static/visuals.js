// Drawing: live scopes of both voices and the scrolling two-channel timeline with the monologue.

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
export const COLORS = {
  user: css("--user") || "#2563eb",
  model: css("--model") || "#ea580c",
  ink: css("--ink") || "#1e293b",
  faint: css("--faint") || "#64748b",
  grid: css("--grid") || "#e2e8f0",
  panel: css("--panel") || "#f8fafc",
};

// The canvas' backing store sized to its CSS box (sharp on high-DPI screens); drawing in CSS pixels.
function fit(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, w: canvas.clientWidth, h: canvas.clientHeight };
}

// 0..1 for -60..0 dBFS: how loud an RMS level looks.
export function loudness(rms) {
  return Math.max(0, Math.min(1, (20 * Math.log10(rms + 1e-9) + 60) / 60));
}

// Waveform of the last ~40 ms and a level meter, from an AnalyserNode.
export class Scope {
  constructor(canvas, color) {
    this.canvas = canvas;
    this.color = color;
    this.analyser = null;
    this.peak = 0;
  }

  attach(analyser) {
    this.analyser = analyser;
    this.samples = new Float32Array(analyser.fftSize);
  }

  detach() {
    this.analyser = null;
    this.peak = 0;
  }

  draw() {
    const { ctx, w, h } = fit(this.canvas);
    ctx.fillStyle = COLORS.panel;
    ctx.fillRect(0, 0, w, h);
    const meter = 10;
    const width = w - meter - 12;
    ctx.strokeStyle = COLORS.grid;
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, h / 2);
    ctx.lineTo(width, h / 2);
    ctx.stroke();
    let rms = 0;
    if (this.analyser) {
      this.analyser.getFloatTimeDomainData(this.samples);
      ctx.strokeStyle = this.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      for (let i = 0; i < this.samples.length; i++) {
        const s = this.samples[i];
        rms += s * s;
        const x = (i / (this.samples.length - 1)) * width;
        const y = h / 2 - Math.max(-1, Math.min(1, s * 2)) * (h / 2 - 4);
        i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
      }
      ctx.stroke();
      rms = Math.sqrt(rms / this.samples.length);
    }
    // Level meter with a slowly falling peak mark.
    const level = loudness(rms);
    this.peak = Math.max(level, this.peak - 0.01);
    const x = w - meter - 4;
    ctx.fillStyle = COLORS.grid;
    ctx.fillRect(x, 4, meter, h - 8);
    ctx.fillStyle = this.color;
    ctx.fillRect(x, 4 + (h - 8) * (1 - level), meter, (h - 8) * level);
    if (this.peak > 0) ctx.fillRect(x, 4 + (h - 8) * (1 - this.peak), meter, 2);
  }
}

// Frames scroll from right (now) to left: your level, the model's level, the monologue at its frames.
export class Timeline {
  constructor(canvas, { pxPerFrame = 6, textRows = 3 } = {}) {
    this.canvas = canvas;
    this.px = pxPerFrame;
    this.textRows = textRows;
    this.recording = null;
    this.follow = true;
    this.viewEnd = 0; // the frame at the right edge
    this.placed = []; // monologue pieces laid out: {frame, at, row, text}
    this.rowEnds = [];
    canvas.addEventListener("pointerdown", (e) => {
      this.drag = { x: e.clientX, end: this.viewEnd };
      canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (!this.drag) return;
      const frames = this.recording ? this.recording.frames : 0;
      const span = this.canvas.clientWidth / this.px;
      const latest = Math.max(frames, span);
      this.viewEnd = Math.max(span, Math.min(latest, this.drag.end - (e.clientX - this.drag.x) / this.px));
      this.follow = this.viewEnd >= latest;
    });
    canvas.addEventListener("pointerup", () => (this.drag = null));
    canvas.addEventListener("dblclick", () => (this.follow = true));
  }

  show(recording) {
    this.recording = recording;
    this.follow = true;
    this.placed = [];
    this.rowEnds = new Array(this.textRows).fill(-Infinity);
  }

  // Each piece goes at its frame in the first text row free there, else where the fullest row ends.
  layout(ctx) {
    const texts = this.recording.texts;
    for (let i = this.placed.length; i < texts.length; i++) {
      const { frame, text } = texts[i];
      const shown = text.replace(/\n/g, "");
      const width = shown ? (ctx.measureText(shown).width + 3) / this.px : 0;
      let row = this.rowEnds.findIndex((end) => end <= frame);
      if (row < 0) row = this.rowEnds.indexOf(Math.min(...this.rowEnds));
      const at = Math.max(frame, this.rowEnds[row]);
      if (shown) this.rowEnds[row] = at + width;
      this.placed.push({ frame, at, row, text: shown, ends: text.endsWith("\n") });
    }
  }

  draw() {
    const { ctx, w, h } = fit(this.canvas);
    ctx.fillStyle = COLORS.panel;
    ctx.fillRect(0, 0, w, h);
    const rec = this.recording;
    const frames = rec ? rec.frames : 0;
    const span = w / this.px;
    if (this.follow) this.viewEnd = Math.max(frames, span); // fills from the left, then scrolls
    const first = this.viewEnd - span;
    const x = (frame) => (frame - first) * this.px;
    const lane = { user: [4, 40], model: [48, 40] };
    const rowHeight = 15;
    const textTop = 94;
    const axis = h - 14;

    // Seconds: a line per second, labelled.
    const framesPerSecond = rec ? rec.sampleRate / rec.frameSize : 12.5;
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "top";
    for (let s = Math.max(0, Math.floor(first / framesPerSecond)); s * framesPerSecond <= this.viewEnd; s++) {
      const at = x(s * framesPerSecond);
      ctx.fillStyle = COLORS.grid;
      ctx.fillRect(at, 0, 1, axis);
      ctx.fillStyle = COLORS.faint;
      ctx.fillText(`${s} s`, at + 3, axis + 1);
    }
    for (const [side, [top, height]] of Object.entries(lane)) {
      ctx.fillStyle = COLORS.grid;
      ctx.fillRect(0, top + height / 2, w, 1);
      if (!rec) continue;
      ctx.fillStyle = COLORS[side];
      for (let k = Math.max(0, Math.floor(first)); k < this.viewEnd; k++) {
        const bar = loudness(rec.level(side, k)) * height;
        if (bar > 0.5) ctx.fillRect(x(k) + 0.5, top + (height - bar) / 2, this.px - 1, bar);
      }
    }
    ctx.fillStyle = COLORS.faint;
    ctx.fillText("you", 4, lane.user[0]);
    ctx.fillText("model", 4, lane.model[0]);
    if (!rec) return;

    ctx.font = "12px system-ui, sans-serif";
    this.layout(ctx);
    for (const piece of this.placed) {
      const at = x(piece.at);
      if (at > w || x(piece.frame) + 400 < 0) continue;
      const y = textTop + piece.row * rowHeight;
      ctx.fillStyle = COLORS.model;
      ctx.fillRect(x(piece.frame), lane.model[0] + lane.model[1] - 3, 1.5, 6); // the piece's frame
      if (piece.ends) ctx.fillRect(x(piece.frame) + this.px - 1, textTop - 2, 1, this.textRows * rowHeight);
      if (piece.text) {
        ctx.fillStyle = COLORS.ink;
        ctx.fillText(piece.text, at, y);
      }
    }
  }
}
