// The text chunks of a PNG (tEXt, zTXt, iTXt), read in the browser without decoding a pixel:
// where Polychrome writes what made a picture (model, seed, style, recipe, ...). Checks the
// signature, each chunk's bounds and the CRC of the chunks it reads, and caps what a
// compressed chunk may inflate to, like the server's reader.

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const MAX_TEXT_BYTES = 1 << 20; // per chunk, after inflating: a zTXt can be a zip bomb

let crcTable = null;
function crc32(bytes) {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const latin1 = (bytes) => Array.from(bytes, (b) => String.fromCharCode(b)).join("");

async function inflate(bytes) {
  // zlib-wrapped deflate, as PNG stores it; read until the cap, then refuse
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  const reader = stream.getReader();
  const parts = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > MAX_TEXT_BYTES) {
      reader.cancel();
      throw new Error("a PNG text chunk inflates too large");
    }
    parts.push(value);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

const nul = (bytes, from = 0) => {
  const i = bytes.indexOf(0, from);
  if (i < 0) throw new Error("a PNG text chunk has no keyword separator");
  return i;
};

async function textChunk(type, data) {
  const k = nul(data);
  if (k === 0) throw new Error("a PNG text chunk has an empty keyword");
  const key = latin1(data.subarray(0, k));
  if (type === "tEXt") return [key, latin1(data.subarray(k + 1))];
  if (type === "zTXt") return [key, latin1(await inflate(data.subarray(k + 2)))];
  // iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text
  const flag = data[k + 1];
  const lang = nul(data, k + 3);
  const tkey = nul(data, lang + 1);
  const body = data.subarray(tkey + 1);
  return [key, new TextDecoder("utf-8", { fatal: true }).decode(flag ? await inflate(body) : body)];
}

/** {keyword: text} of a PNG Blob / File; throws Error with a reason for a non-PNG or a bad file. */
export async function readPngText(blob) {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error("not a PNG file");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = {};
  let at = 8;
  for (let first = true; ; first = false) {
    if (at + 8 > bytes.length) throw new Error("the PNG is cut short (no IEND chunk)");
    const length = view.getUint32(at);
    const type = latin1(bytes.subarray(at + 4, at + 8));
    if (!/^[A-Za-z]{4}$/.test(type) || first !== (type === "IHDR")) throw new Error(`corrupt PNG chunk ${JSON.stringify(type)}`);
    const end = at + 8 + length;
    if (end + 4 > bytes.length) throw new Error(`the PNG is cut short in its ${type} chunk`);
    if (type === "tEXt" || type === "zTXt" || type === "iTXt") {
      if (crc32(bytes.subarray(at + 4, end)) !== view.getUint32(end)) throw new Error(`bad CRC in the PNG's ${type} chunk`);
      try {
        const [key, value] = await textChunk(type, bytes.subarray(at + 8, end));
        out[key] = value;
      } catch (e) {
        throw new Error(`corrupt PNG ${type} chunk: ${e.message}`);
      }
    }
    if (type === "IEND") return out;
    at = end + 4;
  }
}
