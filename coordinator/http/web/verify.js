// In-browser verification of the foldnet ledger, with WebCrypto only (no server's word):
// C2SP signed notes with Ed25519 (type 0x01) and cosignature/v1 (type 0x04) signatures,
// C2SP tlog-checkpoint bodies, and RFC 6962 / RFC 9162 inclusion proofs.
// Formats match ledger/note.py, ledger/checkpoint.py, ledger/cosignature.py, ledger/merkle.py.

const enc = new TextEncoder();
const DASH = "\u2014 ";

export class VerifyError extends Error {}

export function b64decode(s) {
  if (typeof s !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) {
    throw new VerifyError(`not standard base64: ${String(s).slice(0, 40)}`);
  }
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function b64encode(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function concat(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

function subtle() {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new VerifyError(
      "WebCrypto is not available here (it needs a secure context: https or localhost)",
    );
  }
  return crypto.subtle;
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle().digest("SHA-256", bytes));
}

async function ed25519Verify(publicKey, signature, message) {
  let key;
  try {
    key = await subtle().importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    throw new VerifyError(`this browser cannot verify Ed25519 with WebCrypto (${e.name})`);
  }
  return subtle().verify({ name: "Ed25519" }, key, signature, message);
}

// -- keys -----------------------------------------------------------------------------------

// A verifier key "<name>+<hex key id>+<base64(type || 32-byte key)>" (c2sp.org/signed-note).
export async function parseVkey(vkey, wantType = 0x01) {
  // the name has no "+", the base64 may: split at the first two only
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(String(vkey).trim());
  if (!m) throw new VerifyError("a verifier key is <name>+<8 hex digits>+<base64>");
  const [, name, idHex, blob] = m;
  const raw = b64decode(blob);
  if (raw.length !== 33 || raw[0] !== wantType) {
    throw new VerifyError(`not an Ed25519 key of signature type ${wantType}`);
  }
  const pub = raw.slice(1);
  const id = (await sha256(concat(enc.encode(name), new Uint8Array([0x0a, wantType]), pub))).slice(
    0,
    4,
  );
  if (hex(id) !== idHex) throw new VerifyError("the key id does not match the key");
  return { name, keyId: id, publicKey: pub, type: wantType };
}

// -- notes and checkpoints ------------------------------------------------------------------

export function parseNote(text) {
  if (!text.endsWith("\n")) throw new VerifyError("the note does not end with a newline");
  const split = text.lastIndexOf("\n\n");
  if (split < 0) throw new VerifyError("the note has no blank line before its signatures");
  const body = text.slice(0, split + 1);
  const lines = text.slice(split + 2).split("\n").slice(0, -1);
  if (!lines.length) throw new VerifyError("the note has no signature lines");
  const signatures = lines.map((line, n) => {
    if (!line.startsWith(DASH)) throw new VerifyError(`signature line ${n + 1} is malformed`);
    const parts = line.slice(DASH.length).split(" ");
    if (parts.length !== 2) throw new VerifyError(`signature line ${n + 1} is malformed`);
    const raw = b64decode(parts[1]);
    if (raw.length < 5) throw new VerifyError(`signature line ${n + 1} is too short`);
    return { name: parts[0], keyId: raw.slice(0, 4), signature: raw.slice(4) };
  });
  return { body, signatures };
}

export function parseCheckpoint(body) {
  const lines = body.slice(0, -1).split("\n");
  if (lines.length < 3) throw new VerifyError("a checkpoint needs origin, size and root hash");
  const [origin, sizeS, rootS] = lines;
  if (!origin) throw new VerifyError("the checkpoint's origin is empty");
  if (!/^(0|[1-9][0-9]{0,18})$/.test(sizeS)) {
    throw new VerifyError(`checkpoint size ${JSON.stringify(sizeS)} is not a canonical decimal`);
  }
  const root = b64decode(rootS);
  if (root.length !== 32 || b64encode(root) !== rootS) {
    throw new VerifyError("the checkpoint's root hash is not 32 bytes of base64");
  }
  return { origin, size: BigInt(sizeS), root, rootB64: rootS, extensions: lines.slice(3) };
}

// Verify a checkpoint note against the pinned log key; returns its checkpoint and the
// cosignatures it carries (verified for the witness keys given, listed for the others).
export async function verifyCheckpoint(noteText, logKey, witnessKeys = []) {
  const note = parseNote(noteText);
  const cp = parseCheckpoint(note.body);
  if (cp.origin !== logKey.name) {
    throw new VerifyError(`the checkpoint is for log ${cp.origin}, not the pinned ${logKey.name}`);
  }
  const body = enc.encode(note.body);
  let signed = 0;
  const cosignatures = [];
  for (const sig of note.signatures) {
    if (sig.name === logKey.name && equal(sig.keyId, logKey.keyId)) {
      if (!(await ed25519Verify(logKey.publicKey, sig.signature, body))) {
        throw new VerifyError("the log's Ed25519 signature does not verify");
      }
      signed++;
      continue;
    }
    const w = witnessKeys.find((k) => k.name === sig.name && equal(k.keyId, sig.keyId));
    const item = { name: sig.name, keyId: hex(sig.keyId), time: null, verified: null };
    if (sig.signature.length === 72) {
      const ts = new DataView(sig.signature.buffer, sig.signature.byteOffset, 8).getBigUint64(0);
      item.time = ts;
      if (w) {
        const msg = concat(enc.encode(`cosignature/v1\ntime ${ts}\n`), body);
        item.verified = await ed25519Verify(w.publicKey, sig.signature.slice(8), msg);
      }
    }
    cosignatures.push(item);
  }
  if (!signed) {
    throw new VerifyError(`no signature by the pinned key ${logKey.name} (${hex(logKey.keyId)})`);
  }
  return { ...cp, cosignatures };
}

// -- Merkle tree (RFC 6962) -----------------------------------------------------------------

export async function leafHash(entry) {
  return sha256(concat(new Uint8Array([0]), entry));
}

async function nodeHash(left, right) {
  return sha256(concat(new Uint8Array([1]), left, right));
}

function bitLength(n) {
  return n === 0n ? 0 : n.toString(2).length;
}

function popCount(n) {
  let c = 0;
  for (const ch of n.toString(2)) if (ch === "1") c++;
  return c;
}

// The root an inclusion proof leads to (RFC 9162 section 2.1.3.2), as ledger/merkle.py.
export async function rootFromInclusionProof(leaf, index, size, proof) {
  index = BigInt(index);
  size = BigInt(size);
  if (index >= size) throw new VerifyError(`index ${index} is outside a tree of size ${size}`);
  if (leaf.length !== 32) throw new VerifyError("a leaf hash is 32 bytes");
  const inner = bitLength(index ^ (size - 1n));
  const border = popCount(index >> BigInt(inner));
  if (proof.length !== inner + border) {
    throw new VerifyError(
      `the proof has ${proof.length} hashes; index ${index} in a tree of ${size} needs ${inner + border}`,
    );
  }
  let seed = leaf;
  for (let i = 0; i < inner; i++) {
    if (proof[i].length !== 32) throw new VerifyError(`proof hash ${i} is not 32 bytes`);
    seed = ((index >> BigInt(i)) & 1n) === 0n ? await nodeHash(seed, proof[i]) : await nodeHash(proof[i], seed);
  }
  for (let i = inner; i < proof.length; i++) {
    if (proof[i].length !== 32) throw new VerifyError(`proof hash ${i} is not 32 bytes`);
    seed = await nodeHash(proof[i], seed);
  }
  return seed;
}

// Check that entry bytes `data` are leaf `index` of the verified checkpoint `cp`,
// given the served proof {index, tree_size, hashes}.
export async function verifyInclusion(data, index, proofDoc, cp) {
  if (BigInt(proofDoc.tree_size) !== cp.size || BigInt(proofDoc.index) !== BigInt(index)) {
    throw new VerifyError("the proof is for another entry or tree size");
  }
  const leaf = await leafHash(data);
  const root = await rootFromInclusionProof(leaf, index, cp.size, proofDoc.hashes.map(b64decode));
  if (!equal(root, cp.root)) {
    throw new VerifyError(
      `the proof leads to root ${b64encode(root)}, not the signed ${cp.rootB64}`,
    );
  }
  return leaf;
}

// -- the pinned log key ---------------------------------------------------------------------

const PIN = "foldnet.logVkey";

// The pinned log key: the one saved in this browser, else the served one, pinned on first
// use (an auditor compares it with the key the operator publishes out of band).
export async function pinnedLogKey() {
  let vkey = localStorage.getItem(PIN);
  let firstUse = false;
  if (!vkey) {
    const r = await fetch("/v1/ledger/log.vkey", { cache: "no-store" });
    if (!r.ok) throw new VerifyError(`the log's key cannot be read (HTTP ${r.status})`);
    vkey = (await r.text()).trim();
    firstUse = true;
  }
  const key = await parseVkey(vkey);
  if (firstUse) localStorage.setItem(PIN, vkey);
  return { key, vkey, firstUse };
}

export function pinLogKey(vkey) {
  if (vkey) localStorage.setItem(PIN, vkey.trim());
  else localStorage.removeItem(PIN);
}

// Fetch the latest checkpoint and verify it against the pinned key.
export async function latestVerifiedCheckpoint(logKey, witnessKeys = []) {
  const r = await fetch("/v1/ledger/checkpoint", { cache: "no-store" });
  if (!r.ok) throw new VerifyError(`no checkpoint (HTTP ${r.status})`);
  const text = await r.text();
  return { text, cp: await verifyCheckpoint(text, logKey, witnessKeys) };
}

// Fetch an inclusion proof of entry `index` (bytes `data`) and check it against `cp`.
export async function proveEntry(index, data, cp) {
  const r = await fetch(`/v1/ledger/proof/inclusion?index=${index}&tree_size=${cp.size}`, {
    cache: "no-store",
  });
  if (!r.ok) throw new VerifyError(`no proof (HTTP ${r.status})`);
  return verifyInclusion(data, index, await r.json(), cp);
}
