// transmamba-web: TransMamba / Mamba2 inference on WebGPU, or on the CPU engine compiled into
// the wasm module where WebGPU is missing or a software fallback, run in a Web Worker.
// The page-side API: every call posts a request to the worker and awaits its answer, so the
// page's main thread never runs the model.

import { openStore, SESSION_PREFIX } from './storage.js';

/** Whether this browser exposes WebGPU at all (an adapter may still be missing). */
export function hasWebGPU() {
  return typeof navigator !== 'undefined' && !!navigator.gpu;
}

const NO_WEBGPU =
  'WebGPU is not available in this browser (navigator.gpu is missing): use a browser with ' +
  'WebGPU enabled, such as a recent Chrome or Edge, on a secure (https or localhost) page';

function toTokenArray(tokens, what = 'tokens') {
  if (tokens instanceof Uint32Array) return Array.from(tokens);
  if (!Array.isArray(tokens) && !ArrayBuffer.isView(tokens)) {
    throw new TypeError(`${what} must be an array of token ids`);
  }
  const out = Array.from(tokens, Number);
  for (let i = 0; i < out.length; i++) {
    const t = out[i];
    if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) {
      throw new RangeError(`${what}: entry ${i} (${tokens[i]}) is not a valid token id (a non-negative integer)`);
    }
  }
  return out;
}

/** Schedules as users write them: 'config', 'paper', 8, Infinity, 'inf', [8, 'inf'], '8,inf'. */
export function transpointsToString(tp) {
  if (tp == null) return 'config';
  const one = (v) => (v === Infinity || v === null ? 'inf' : String(v).trim());
  if (Array.isArray(tp)) return tp.map(one).join(',');
  return one(tp);
}

function describeSource(source) {
  if (typeof source === 'string' || source instanceof URL) {
    const base = typeof location !== 'undefined' ? location.href : undefined;
    return { url: new URL(String(source), base).href };
  }
  if (typeof Blob !== 'undefined' && source instanceof Blob) {
    return { blob: source, name: source.name };
  }
  if (source instanceof ArrayBuffer) return { bytes: new Uint8Array(source.slice(0)) };
  if (ArrayBuffer.isView(source)) {
    return { bytes: new Uint8Array(source.buffer.slice(source.byteOffset, source.byteOffset + source.byteLength)) };
  }
  throw new TypeError('a model source must be a URL string, a URL, a File/Blob, an ArrayBuffer or a Uint8Array');
}

const DEVICES = ['auto', 'webgpu', 'cpu'];

/**
 * Loads a model (one .safetensors file with its config in `__metadata__.config`, or a
 * llama.cpp GGUF file of a Mamba2 model: F32, F16, BF16, Q8_0, Q4_0 tensors) into a new
 * worker, on a WebGPU device or the CPU engine (option `device`). Resolves to a
 * {@link TransMambaModel}.
 */
export async function loadModel(source, options = {}) {
  const device = options.device ?? 'auto';
  if (!DEVICES.includes(device)) {
    throw new TypeError(`option device must be 'auto', 'webgpu' or 'cpu', not ${JSON.stringify(device)}`);
  }
  if (device === 'webgpu' && !hasWebGPU()) throw new Error(NO_WEBGPU);
  const threads = options.threads ?? 'auto';
  if (threads !== 'auto' && !(Number.isInteger(threads) && threads >= 1 && threads <= 256)) {
    throw new TypeError(`option threads must be 'auto' or an integer from 1 to 256, not ${JSON.stringify(threads)}`);
  }
  const model = new TransMambaModel(options.workerUrl);
  const { onProgress, signal, tokenizer, cache = false } = options;
  const loadOptions = {};
  for (const k of ['preferF16', 'maxBindingSize', 'maxBufferSize', 'chunkSize', 'maxRows', 'weights', 'device', 'kernels', 'threads']) {
    if (options[k] !== undefined) loadOptions[k] = options[k];
  }
  const onAbort = () => model.dispose();
  try {
    if (signal) {
      if (signal.aborted) throw new DOMException('loading was aborted', 'AbortError');
      signal.addEventListener('abort', onAbort, { once: true });
    }
    const msg = {
      model: describeSource(source),
      tokenizer: tokenizer != null ? describeSource(tokenizer) : null,
      cache,
      options: loadOptions,
    };
    const info = await model._request('load', msg, { onProgress });
    model._info = info;
    return model;
  } catch (e) {
    model.dispose();
    if (signal && signal.aborted) throw new DOMException('loading was aborted', 'AbortError');
    throw e;
  } finally {
    if (signal) signal.removeEventListener('abort', onAbort);
  }
}

/** A model living in its own Web Worker. Create it with {@link loadModel}. */
export class TransMambaModel {
  constructor(workerUrl) {
    // Bundlers (Vite, webpack 5, Parcel) bundle a worker, and the wasm it imports, only when
    // they see `new Worker(new URL(<literal>, import.meta.url), ...)` written out: any other
    // expression (such as `workerUrl || new URL(...)`) hides it, so the default keeps that form.
    this._worker = workerUrl
      ? new Worker(workerUrl, { type: 'module' })
      : new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this._next = 1;
    this._pending = new Map();
    this._disposed = false;
    this._info = null;
    this._lost = null;
    /**
     * Resolves with `{ message }` if the GPU device is lost (a driver reset, the browser's GPU
     * process gone) or a thread of the CPU engine died (a bug); every call then rejects with
     * that message. Load the model again to go on.
     */
    this.lost = new Promise((resolve) => {
      this._resolveLost = resolve;
    });
    this._worker.onmessage = (ev) => this._onMessage(ev.data);
    this._worker.onerror = (ev) => {
      ev.preventDefault?.();
      this._failAll(new Error(`the transmamba worker failed: ${ev.message || 'could not start (is worker.js served?)'}`));
    };
  }

  _onMessage(msg) {
    if (msg.type === 'threadPort') {
      // A thread of the CPU engine's pool tells us here if it dies: the worker then waits on
      // it forever, so its calls fail and the worker goes.
      msg.port.onmessage = (ev) => this._threadFailed(ev.data.message);
      return;
    }
    if (msg.type === 'lost') {
      this._lost = msg.message;
      this._resolveLost({ message: msg.message });
      this._failAll(new Error(msg.message));
      return;
    }
    const p = this._pending.get(msg.id);
    if (!p) return;
    if (msg.type === 'progress') {
      if (p.onProgress) p.onProgress(msg.progress);
    } else if (msg.type === 'step') {
      if (p.onStep) p.onStep(msg.step);
    } else if (msg.type === 'result') {
      this._pending.delete(msg.id);
      p.resolve(msg.value);
    } else if (msg.type === 'error') {
      this._pending.delete(msg.id);
      p.reject(new Error(msg.message));
    }
  }

  _threadFailed(message) {
    if (this._disposed || this._lost) return;
    this._lost = message;
    this._resolveLost({ message });
    this._failAll(new Error(message));
    this._worker.terminate();
  }

  _failAll(err) {
    for (const p of this._pending.values()) p.reject(err);
    this._pending.clear();
  }

  _request(type, body = {}, hooks = {}) {
    if (this._disposed) return Promise.reject(new Error('this model was disposed'));
    if (this._lost) return Promise.reject(new Error(this._lost));
    const id = this._next++;
    const promise = new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject, ...hooks });
    });
    this._worker.postMessage({ ...body, id, type }, hooks.transfer || []);
    hooks.onId?.(id);
    return promise;
  }

  /** Model shape, adapter, shader-f16 use and cache memory of the latest sequence. */
  async info() {
    this._info = await this._request('info');
    return this._info;
  }

  /** Text to token ids (the model's tokenizer.json, or UTF-8 bytes when it has none). */
  encode(text) {
    return this._request('encode', { text: String(text) });
  }

  /** Token ids to text. */
  decode(tokens) {
    return this._request('decode', { tokens: toTokenArray(tokens) });
  }

  /** Resolves a schedule against the model: e.g. 'paper' -> '0,128'. Rejects if malformed. */
  resolveTranspoints(transpoints) {
    return this._request('resolveTranspoints', { spec: transpointsToString(transpoints) });
  }

  /**
   * Runs a fresh sequence over `tokens`; resolves to the logits as a Float32Array: the last
   * token's row [vocab], or with `{ all: true }` every row [tokens.length * vocab].
   */
  async forward(tokens, options = {}) {
    const list = toTokenArray(tokens);
    return this._request('forward', {
      tokens: list,
      transpoints: transpointsToString(options.transpoints),
      all: !!options.all,
    });
  }

  /**
   * Generates tokens after `prompt` (a string, or token ids) in a fresh sequence. An async
   * iterator of steps `{ index, token, text, elapsedMs, tokensPerS, cache }`; it ends after
   * `maxTokens` tokens, when `signal` aborts, or when the loop breaks. Its return value is the
   * run's summary. For a conversation that continues, use {@link TransMambaModel#session}.
   */
  generate(prompt, options = {}) {
    return this._generate(null, prompt, options, true);
  }

  /**
   * A sequence that lasts: each `generate` continues it, `save()` gives its state (a few
   * hundred KiB once every layer is past its TransPoint, whatever the length), `fork()` branches
   * it. Option `transpoints` (default: the model's).
   */
  async session(options = {}) {
    const unknown = Object.keys(options).filter((k) => k !== 'transpoints');
    if (unknown.length) throw new TypeError(`unknown session option(s): ${unknown.join(', ')}`);
    const sid = this._nextSession();
    const stats = await this._request('newSession', { sid, transpoints: transpointsToString(options.transpoints) });
    return new TransMambaSession(this, sid, stats);
  }

  /**
   * A session continuing from a saved state: bytes (`Uint8Array`, `ArrayBuffer`, a `Blob` such
   * as an uploaded file) from `session.save()` or `tm-run generate --save-state`, saved on
   * either engine. Rejects with an Error naming what does not fit (another model, a truncated
   * or altered file).
   */
  async restore(source) {
    let bytes;
    let name = 'session state';
    if (typeof Blob !== 'undefined' && source instanceof Blob) {
      bytes = new Uint8Array(await source.arrayBuffer());
      name = source.name || name;
    } else if (source instanceof ArrayBuffer) {
      bytes = new Uint8Array(source.slice(0));
    } else if (ArrayBuffer.isView(source)) {
      bytes = new Uint8Array(source.buffer.slice(source.byteOffset, source.byteOffset + source.byteLength));
    } else {
      throw new TypeError('restore() takes the bytes of a saved state: a Uint8Array, an ArrayBuffer or a Blob');
    }
    const sid = this._nextSession();
    const stats = await this._request('restore', { sid, bytes, name }, { transfer: [bytes.buffer] });
    return new TransMambaSession(this, sid, stats);
  }

  /** A session continuing from a state kept in the browser by `session.store(name)`. */
  async restoreCached(name) {
    const store = await openStore();
    const bytes = await store.get(SESSION_PREFIX + name);
    if (!bytes) throw new Error(`no saved session named ${JSON.stringify(name)} in this browser's storage`);
    return this.restore(bytes);
  }

  _nextSession() {
    this._sessions = (this._sessions || 0) + 1;
    return this._sessions;
  }

  _generate(sid, prompt, options, fresh) {
    const { signal, ...rest } = options;
    const opts = {};
    const map = { maxTokens: 'maxTokens', temperature: 'temperature', topK: 'topK', topP: 'topP', seed: 'seed' };
    for (const [k, v] of Object.entries(map)) if (rest[k] !== undefined) opts[v] = rest[k];
    const allowed = (k) => k in map || (fresh && k === 'transpoints');
    const unknown = Object.keys(rest).filter((k) => !allowed(k));
    if (unknown.length) {
      const why = !fresh && unknown.includes('transpoints') ? ' (a session keeps the schedule it was made with)' : '';
      throw new TypeError(`unknown generate option(s): ${unknown.join(', ')}${why}`);
    }
    if (fresh) opts.transpoints = transpointsToString(rest.transpoints);
    const body = { options: opts, sid };
    if (typeof prompt === 'string') body.text = prompt;
    else body.tokens = toTokenArray(prompt, 'prompt');
    return this._stream(body, signal);
  }

  async *_stream(body, signal) {
    const queue = [];
    let wake = null;
    let finished = false;
    let failure = null;
    let summary = null;
    let id = 0;
    const notify = () => {
      if (wake) {
        const w = wake;
        wake = null;
        w();
      }
    };
    const abort = () => {
      if (id && !finished) this._worker.postMessage({ type: 'abort', target: id });
    };
    if (signal?.aborted) return null;
    const done = this._request('generate', body, {
      onStep: (step) => {
        step.tokensPerS = step.index > 0 ? (1000 * step.index) / Math.max(step.elapsedMs, 1e-3) : 0;
        queue.push(step);
        notify();
      },
      onId: (i) => {
        id = i;
      },
    });
    done.then(
      (s) => {
        summary = s;
        finished = true;
        notify();
      },
      (e) => {
        failure = e;
        finished = true;
        notify();
      },
    );
    signal?.addEventListener('abort', abort, { once: true });
    try {
      for (;;) {
        if (queue.length) {
          yield queue.shift();
        } else if (finished) {
          if (failure) throw failure;
          return summary;
        } else {
          await new Promise((r) => {
            wake = r;
          });
        }
      }
    } finally {
      signal?.removeEventListener('abort', abort);
      abort(); // the consumer stopped early (break / return): stop the worker's loop too
    }
  }

  /** Test hook: `'loseDevice'` or `'failNextSubmission'` on the WebGPU engine. */
  _debugFault(kind) {
    return this._request('debugFault', { kind });
  }

  /** Terminates the worker and frees the GPU device. */
  dispose() {
    if (this._disposed) return;
    this._disposed = true;
    this._worker.terminate();
    this._failAll(new Error('this model was disposed'));
  }
}

/**
 * One sequence of a model that lasts across calls. Make it with `model.session()`,
 * `model.restore(bytes)` or `model.restoreCached(name)`.
 */
export class TransMambaSession {
  constructor(model, sid, stats) {
    this._model = model;
    this._sid = sid;
    this._stats = stats;
    this._disposed = false;
  }

  /** Position, schedule and cache bytes (per layer) as of the last call. */
  get stats() {
    return this._stats;
  }

  _check() {
    if (this._disposed) throw new Error('this session was disposed');
  }

  /**
   * Continues the sequence: appends `prompt` (a string or token ids; '' or [] continues from the
   * last token) and streams generated steps, as `model.generate` does. The summary's `position`
   * is the sequence's length after the call.
   */
  async *generate(prompt, options = {}) {
    this._check();
    const summary = yield* this._model._generate(this._sid, prompt, options, false);
    if (summary) this._stats = summary.cache;
    return summary;
  }

  /** The state as bytes (a `.safetensors` file): restore it with `model.restore(bytes)`. */
  async save() {
    this._check();
    return this._model._request('save', { sid: this._sid });
  }

  /**
   * Keeps the state in the browser (Origin Private File System, else the Cache API) under
   * `name`; `model.restoreCached(name)` continues it later, even after a reload. Rejects with a
   * QuotaExceededError naming the size when the site's storage quota is exceeded.
   */
  async store(name) {
    const bytes = await this.save();
    const store = await openStore();
    await store.put(SESSION_PREFIX + String(name), bytes, `the session ${JSON.stringify(String(name))}`);
    return bytes.byteLength;
  }

  /** An independent copy (a branch of the conversation). */
  async fork() {
    this._check();
    const sid = this._model._nextSession();
    const stats = await this._model._request('fork', { sid, from: this._sid });
    return new TransMambaSession(this._model, sid, stats);
  }

  /** Frees the session's memory in the worker (its GPU buffers or CPU state). */
  dispose() {
    if (this._disposed) return;
    this._disposed = true;
    this._model._request('disposeSession', { sid: this._sid }).catch(() => {});
  }
}

/**
 * What this browser keeps for this site (models cached by `loadModel(url, { cache: true })`,
 * sessions kept by `session.store(name)`): `[{ name, kind: 'model' | 'session', bytes }]`, and
 * where (`storage`: 'opfs' or 'cache').
 */
export async function listCached() {
  const store = await openStore();
  const items = await store.list();
  return items.map(({ name, bytes }) =>
    name.startsWith(SESSION_PREFIX)
      ? { name: name.slice(SESSION_PREFIX.length), kind: 'session', bytes, storage: store.kind }
      : { name, kind: 'model', bytes, storage: store.kind },
  );
}

/**
 * Deletes a cached model (by its URL) or a stored session (by its name); resolves to whether
 * something was deleted.
 */
export async function deleteCached(name) {
  const store = await openStore();
  if (await store.delete(SESSION_PREFIX + name)) return true;
  const url = (() => {
    try {
      return new URL(String(name), typeof location !== 'undefined' ? location.href : undefined).href;
    } catch {
      return String(name);
    }
  })();
  return (await store.delete(url)) || (await store.delete(String(name)));
}

export default loadModel;
