// One conversation as the model lived it, frame by frame: the user's audio as sent, the model's reply
// placed at the input frame it answered, the monologue text at its frames. Feeds the timeline and the
// downloads (a stereo WAV and the monologue as JSON).

export class Recording {
  constructor(sampleRate, frameSize) {
    this.sampleRate = sampleRate;
    this.frameSize = frameSize;
    this.userBlocks = [];
    this.userLength = 0; // samples
    this.userEnergy = []; // per frame, sum of squares
    this.model = new Map(); // input frame -> Float32Array(frameSize) of the reply placed there
    this.modelEnergy = [];
    this.lastModelFrame = -1;
    this.replyFrame = []; // reply frame index -> the input frame it answered (from the server's stats)
    this.texts = []; // {frame, text}
  }

  get frames() {
    return Math.max(Math.ceil(this.userLength / this.frameSize), this.lastModelFrame + 1);
  }

  addUser(samples) {
    this.userBlocks.push(samples);
    for (let i = 0; i < samples.length; i++) {
      const k = Math.floor((this.userLength + i) / this.frameSize);
      this.userEnergy[k] = (this.userEnergy[k] || 0) + samples[i] * samples[i];
    }
    this.userLength += samples.length;
  }

  // The server stepped input frame `frame` and its reply frame `reply` follows (null: no reply yet).
  step(frame, reply) {
    if (reply !== null) this.replyFrame[reply] = frame;
  }

  // Reply audio at `position` samples into the model's reply stream (from the Ogg granule positions).
  addModel(position, samples) {
    for (let i = 0; i < samples.length; ) {
      const j = Math.floor((position + i) / this.frameSize);
      const offset = position + i - j * this.frameSize;
      const n = Math.min(samples.length - i, this.frameSize - offset);
      const k = this.replyFrame[j] ?? j + 1; // without stats the reply lags its input by one frame
      if (!this.model.has(k)) this.model.set(k, new Float32Array(this.frameSize));
      this.lastModelFrame = Math.max(this.lastModelFrame, k);
      this.model.get(k).set(samples.subarray(i, i + n), offset);
      let energy = 0;
      for (let m = i; m < i + n; m++) energy += samples[m] * samples[m];
      this.modelEnergy[k] = (this.modelEnergy[k] || 0) + energy;
      i += n;
    }
  }

  addText(frame, text) {
    this.texts.push({ frame, text });
  }

  // RMS of frame k of "user" or "model" (0 where nothing was heard).
  level(side, k) {
    const energy = (side === "user" ? this.userEnergy : this.modelEnergy)[k] || 0;
    return Math.sqrt(energy / this.frameSize);
  }

  // 16-bit stereo WAV: left the user, right the model, as long as the conversation (every sample sent).
  wav() {
    const length = Math.max(this.userLength, (this.lastModelFrame + 1) * this.frameSize);
    const data = new Int16Array(2 * length);
    let pos = 0;
    for (const block of this.userBlocks) {
      for (let i = 0; i < block.length; i++) data[2 * (pos + i)] = toInt16(block[i]);
      pos += block.length;
    }
    for (const [k, samples] of this.model) {
      for (let i = 0; i < samples.length; i++) data[2 * (k * this.frameSize + i) + 1] = toInt16(samples[i]);
    }
    const header = new DataView(new ArrayBuffer(44));
    const ascii = (offset, text) => [...text].forEach((c, i) => header.setUint8(offset + i, c.charCodeAt(0)));
    ascii(0, "RIFF");
    header.setUint32(4, 36 + data.byteLength, true);
    ascii(8, "WAVEfmt ");
    header.setUint32(16, 16, true); // PCM format chunk size
    header.setUint16(20, 1, true); // PCM
    header.setUint16(22, 2, true); // channels
    header.setUint32(24, this.sampleRate, true);
    header.setUint32(28, this.sampleRate * 4, true); // bytes per second
    header.setUint16(32, 4, true); // bytes per sample frame
    header.setUint16(34, 16, true); // bits per sample
    ascii(36, "data");
    header.setUint32(40, data.byteLength, true);
    return new Blob([header, data], { type: "audio/wav" });
  }

  // JSON in the shape the evaluation tools write (evaluate.py conversation's monologue.json, less its
  // utterances): {"frame_s", "pieces": [{"frame", "time_s", "text"}]}.
  monologue() {
    const frameS = this.frameSize / this.sampleRate;
    const pieces = this.texts.map(({ frame, text }) => ({ frame, time_s: +(frame * frameS).toFixed(3), text }));
    return new Blob([JSON.stringify({ frame_s: frameS, pieces }, null, 1)], { type: "application/json" });
  }
}

function toInt16(x) {
  return Math.max(-32768, Math.min(32767, Math.round(x * 32767)));
}
