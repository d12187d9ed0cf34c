// Ogg encapsulation of Opus (RFC 3533, RFC 7845): just what the chat protocol needs.

const CRC_TABLE = (() => {
  // CRC-32 of Ogg: polynomial 0x04c11db7, no reflection, initial value 0.
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let k = 0; k < 8; k++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    table[i] = r >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let crc = 0;
  for (const b of bytes) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ b) & 0xff]) >>> 0;
  return crc;
}

function ascii(text) {
  return new TextEncoder().encode(text);
}

// Writes one Opus packet per Ogg page, so every page can be sent as soon as it is encoded.
export class OggOpusWriter {
  constructor(sampleRate, preSkip = 312) {
    this.serial = (Math.random() * 0xffffffff) >>> 0;
    this.sequence = 0;
    this.granule = 0; // in 48 kHz samples, as Opus defines it
    this.sampleRate = sampleRate;
    this.preSkip = preSkip;
  }

  headers() {
    const head = new Uint8Array(19);
    head.set(ascii("OpusHead"));
    const view = new DataView(head.buffer);
    view.setUint8(8, 1); // version
    view.setUint8(9, 1); // mono
    view.setUint16(10, this.preSkip, true);
    view.setUint32(12, this.sampleRate, true);
    const vendor = ascii("flmjax");
    const tags = new Uint8Array(8 + 4 + vendor.length + 4);
    tags.set(ascii("OpusTags"));
    new DataView(tags.buffer).setUint32(8, vendor.length, true);
    tags.set(vendor, 12);
    return concat([this.page(head, 0, 0x02), this.page(tags, 0, 0)]);
  }

  packet(data, samples48k) {
    this.granule += samples48k;
    return this.page(data, this.granule, 0);
  }

  page(data, granule, flags) {
    const lacing = [];
    let left = data.length;
    while (left >= 255) {
      lacing.push(255);
      left -= 255;
    }
    lacing.push(left);
    const page = new Uint8Array(27 + lacing.length + data.length);
    const view = new DataView(page.buffer);
    page.set(ascii("OggS"));
    view.setUint8(5, flags);
    view.setUint32(6, granule % 0x100000000, true);
    view.setUint32(10, Math.floor(granule / 0x100000000), true);
    view.setUint32(14, this.serial, true);
    view.setUint32(18, this.sequence++, true);
    view.setUint8(26, lacing.length);
    page.set(lacing, 27);
    page.set(data, 27 + lacing.length);
    view.setUint32(22, crc32(page), true);
    return page;
  }
}

// Splits a byte stream of Ogg pages into packets (header packets included), each with the granule
// position (48 kHz samples of the stream) where it ends.
export class OggReader {
  constructor() {
    this.buffer = new Uint8Array(0);
    this.partial = [];
  }

  *push(bytes) {
    this.buffer = concat([this.buffer, bytes]);
    let offset = 0;
    const packets = [];
    while (this.buffer.length - offset >= 27) {
      const b = this.buffer;
      if (b[offset] !== 0x4f || b[offset + 1] !== 0x67 || b[offset + 2] !== 0x67 || b[offset + 3] !== 0x53) {
        throw new Error("not an Ogg page");
      }
      const segments = b[offset + 26];
      const lacing = b.subarray(offset + 27, offset + 27 + segments);
      if (lacing.length < segments) break;
      const bodySize = lacing.reduce((s, v) => s + v, 0);
      const start = offset + 27 + segments;
      if (b.length < start + bodySize) break;
      const view = new DataView(b.buffer, b.byteOffset + offset);
      const granule = view.getUint32(6, true) + view.getUint32(10, true) * 2 ** 32;
      const done = [];
      let pos = start;
      for (const size of lacing) {
        this.partial.push(b.slice(pos, pos + size));
        pos += size;
        if (size < 255) {
          done.push(concat(this.partial));
          this.partial = [];
        }
      }
      // The page's granule is where its last completed packet ends; earlier ones end before it.
      const ends = [];
      let end = granule;
      for (let i = done.length - 1; i >= 0; i--) {
        ends[i] = end;
        if (!isOpusHeader(done[i])) end -= opusSamples48k(done[i]);
      }
      done.forEach((data, i) => packets.push({ data, end: ends[i] }));
      offset = start + bodySize;
    }
    this.buffer = this.buffer.slice(offset);
    yield* packets;
  }
}

// Samples (at 48 kHz, as Opus counts them) that one Opus packet decodes to: its TOC byte (RFC 6716 3.1).
export function opusSamples48k(packet) {
  const config = packet[0] >> 3;
  const frame =
    config < 12 ? [480, 960, 1920, 2880][config % 4] : config < 16 ? [480, 960][config % 2] : [120, 240, 480, 960][config % 4];
  const code = packet[0] & 3;
  return frame * (code === 0 ? 1 : code < 3 ? 2 : packet[1] & 0x3f);
}

export function concat(parts) {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export function isOpusHeader(packet) {
  const magic = new TextDecoder().decode(packet.subarray(0, 8));
  return magic === "OpusHead" || magic === "OpusTags";
}
