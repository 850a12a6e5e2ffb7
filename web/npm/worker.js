// transmamba-web worker: owns the wasm module, the WebGPU device (or the CPU engine) and one model.
//
// Protocol (page -> worker): { id, type: 'load' | 'info' | 'generate' | 'forward' | 'encode' |
// 'decode' | 'newSession' | 'restore' | 'fork' | 'save' | 'sessionStats' | 'disposeSession' |
// 'abort', ... }. Worker -> page: { id, type: 'progress' | 'step' | 'result' | 'error', ... }.
// Requests run one at a time in arrival order; 'abort' is handled at once. Sessions are named by
// ids the page picks (`sid`), so the page can use one before the worker has answered.

// Two builds of one module: the single-threaded one (every load starts with it, and WebGPU runs
// on it), and one with wasm threads for the CPU engine, which needs memory shared between
// workers: only a cross-origin-isolated page has SharedArrayBuffer.
import initSingle, * as single from './wasm/transmamba_web.js';
import initThreaded, * as threaded from './wasm-threads/transmamba_web.js';
import { openStore } from './storage.js';

// The module in use: `threaded` once its pool runs.
let wasm = single;
// The pool's workers (thread.js), kept referenced while they run.
let threadWorkers = [];
// Why the CPU engine runs fewer threads than asked, or null.
let threadsNote = null;

let engine = null;
let loadedFromCache = false;
let cacheError = null;
const sessions = new Map();
let webAdapter = null;
let poisoned = null;
let lostReason = null;
let chain = Promise.resolve();
const aborted = new Set();

const post = (msg, transfer) => self.postMessage(msg, transfer || []);

function errorMessage(e) {
  if (e instanceof WebAssembly.RuntimeError) {
    const panic = wasm.takePanic();
    poisoned = `internal error in the wasm module: ${panic || e.message}`;
    return `${poisoned} (load the model again)`;
  }
  if (e && typeof e.message === 'string' && e.message) return e.message;
  return String(e);
}

async function ensureWebGPU() {
  const gpu = self.navigator && self.navigator.gpu;
  if (!gpu) {
    throw new Error(
      'WebGPU is not available in this browser (navigator.gpu is missing): use a browser with ' +
        'WebGPU enabled, such as a recent Chrome or Edge, on a secure (https or localhost) page',
    );
  }
  let adapter = null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (e) {
    throw new Error(`WebGPU adapter request failed: ${errorMessage(e)}`);
  }
  if (!adapter) {
    throw new Error('WebGPU is available but no GPU adapter was found (it may be disabled or blocklisted)');
  }
  const i = adapter.info || {};
  webAdapter = {
    vendor: i.vendor || '',
    architecture: i.architecture || '',
    device: i.device || '',
    description: i.description || '',
    isFallbackAdapter: !!(i.isFallbackAdapter ?? adapter.isFallbackAdapter),
    features: [...adapter.features].sort(),
  };
}

// What the engine choice (core's engine_choice) needs of WebGPU, as createEngine takes it.
async function adapterFacts(device) {
  if (device === 'cpu') return { error: 'not looked for' };
  try {
    await ensureWebGPU();
  } catch (e) {
    if (device === 'webgpu') throw e;
    return { error: errorMessage(e) };
  }
  const w = webAdapter;
  return { name: [w.architecture, w.description, w.vendor].filter(Boolean).join(' '), fallback: w.isFallbackAdapter };
}

// Settles after a macrotask: between two generated tokens the worker then handles messages
// (an abort), even when the engine computed the step without awaiting anything.
function nextTask() {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => resolve();
    channel.port2.postMessage(null);
  });
}

let wasmReady = null;
function ensureWasm() {
  if (!wasmReady) {
    wasmReady = initSingle().then(() => single.installPanicHook());
  }
  return wasmReady;
}

const MAX_THREADS = 16;

// The CPU engine's threads: the `threads` option ('auto': each core the browser reports, at most
// MAX_THREADS), and the reason it gets one thread where the page cannot share memory.
function threadsWanted(option) {
  const cores = (self.navigator && self.navigator.hardwareConcurrency) || 1;
  const want = option === undefined || option === 'auto' ? Math.min(cores, MAX_THREADS) : option;
  if (want <= 1) return { count: 1, note: null };
  if (!self.crossOriginIsolated || typeof SharedArrayBuffer !== 'function') {
    return {
      count: 1,
      note:
        'one thread: the page is not cross-origin isolated, so it has no SharedArrayBuffer for ' +
        'threads (serve it with the headers Cross-Origin-Opener-Policy: same-origin and ' +
        'Cross-Origin-Embedder-Policy: require-corp)',
    };
  }
  return { count: want, note: null };
}

function startThread(module, memory, workers) {
  // Written out as `new Worker(new URL(<literal>, import.meta.url), { type: 'module' })`, the
  // form bundlers recognise and bundle (see index.js).
  const w = new Worker(new URL('./thread.js', import.meta.url), { type: 'module' });
  workers.push(w);
  const { port1, port2 } = new MessageChannel();
  return new Promise((resolve, reject) => {
    w.onmessage = (ev) => (ev.data && ev.data.ready ? resolve(port1) : reject(new Error(ev.data && ev.data.error)));
    w.onerror = (ev) => {
      ev.preventDefault?.();
      reject(new Error(ev.message || 'it could not start (is thread.js served?)'));
    };
    w.postMessage({ module, memory, port: port2 }, [port2]);
  });
}

// Instantiates the threaded module and starts `count` workers on its memory; only once each is
// ready (instantiated, waiting for its thread) is rayon's pool built, so a worker that fails
// leaves no pool thread that would never run. Each worker's port goes to the page, which hears
// from it if the thread dies (a panic) while this worker waits on it.
async function startThreads(count) {
  await initThreaded();
  threaded.installPanicHook();
  const [module, memory] = threaded.threadPoolParts();
  const workers = [];
  let timer;
  try {
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('they did not start within 60 s')), 60_000);
    });
    const ports = await Promise.race([Promise.all(Array.from({ length: count }, () => startThread(module, memory, workers))), timeout]);
    threaded.buildThreadPool(count);
    for (const port of ports) post({ type: 'threadPort', port }, [port]);
    threadWorkers = workers;
  } catch (e) {
    for (const w of workers) w.terminate();
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function concat(chunks, length) {
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

// Reads a source: { url } | { blob } | { bytes }. Returns { bytes, name, commit } where commit()
// keeps a fresh download in the browser's storage (storage.js; called only once the model
// loaded fine).
async function readSource(src, what, id, cache) {
  const progress = (phase, loaded, total) =>
    post({ id, type: 'progress', progress: { file: what, phase, loaded, total } });
  if (src.bytes) {
    progress('read', src.bytes.byteLength, src.bytes.byteLength);
    return { bytes: new Uint8Array(src.bytes), name: src.name || what, commit: async () => {} };
  }
  if (src.blob) {
    const total = src.blob.size;
    progress('read', 0, total);
    let bytes;
    try {
      bytes = new Uint8Array(await src.blob.arrayBuffer());
    } catch (e) {
      throw new Error(`cannot read the ${what} file ${src.blob.name || ''}: ${errorMessage(e)}`);
    }
    progress('read', total, total);
    return { bytes, name: src.blob.name || what, commit: async () => {} };
  }
  const url = src.url;
  const store = cache ? await openStore() : null;
  if (store && store.kind) {
    const hit = await store.get(url);
    if (hit) {
      progress('cache', hit.length, hit.length);
      return { bytes: hit, name: url, fromCache: true, commit: async () => {} };
    }
  }
  let resp;
  try {
    resp = await fetch(url);
  } catch (e) {
    throw new Error(`cannot download the ${what} from ${url}: ${errorMessage(e)}`);
  }
  if (!resp.ok) {
    const why = resp.status === 404 ? 'not found (HTTP 404)' : `HTTP ${resp.status} ${resp.statusText}`.trim();
    throw new Error(`cannot download the ${what} from ${url}: ${why}`);
  }
  const total = Number(resp.headers.get('content-length')) || 0;
  const chunks = [];
  let loaded = 0;
  let last = 0;
  progress('download', 0, total);
  if (resp.body && resp.body.getReader) {
    const reader = resp.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      loaded += value.length;
      const now = Date.now();
      if (now - last > 50) {
        last = now;
        progress('download', loaded, Math.max(total, loaded));
      }
    }
  } else {
    const b = new Uint8Array(await resp.arrayBuffer());
    chunks.push(b);
    loaded = b.length;
  }
  progress('download', loaded, Math.max(total, loaded));
  const bytes = concat(chunks, loaded);
  const commit = async () => {
    if (!store || !store.kind) return;
    try {
      await store.put(url, bytes);
    } catch (e) {
      // The model loaded; only keeping it failed (quota): info().cacheError says why.
      cacheError = errorMessage(e);
    }
  };
  return { bytes, name: url, fromCache: false, commit };
}

function parsedInfo() {
  const info = JSON.parse(engine.info());
  if (info.adapter) info.adapter.web = webAdapter;
  info.webgpu = webAdapter;
  info.loadedFromCache = loadedFromCache;
  info.cacheError = cacheError;
  if (info.engine.kind === 'cpu') info.threadsNote = threadsNote;
  return info;
}

function lostMessage(reason) {
  return `the GPU device was lost (${reason}): load the model again`;
}

function requireEngine() {
  if (lostReason) throw new Error(lostMessage(lostReason));
  if (poisoned) throw new Error(`${poisoned} (load the model again)`);
  if (!engine) throw new Error('no model is loaded');
  return engine;
}

const handlers = {
  async load(msg) {
    if (engine) throw new Error('this worker already holds a model; create a new one');
    const { threads, ...options } = msg.options || {};
    const facts = await adapterFacts(options.device || 'auto');
    await ensureWasm();
    if (single.chooseEngine(JSON.stringify(options), JSON.stringify(facts)) === 'cpu') {
      const want = threadsWanted(threads);
      threadsNote = want.note;
      if (want.count > 1) {
        try {
          await startThreads(want.count);
          wasm = threaded;
        } catch (e) {
          threadsNote = `one thread: starting ${want.count} threads failed (${errorMessage(e)})`;
        }
      }
    }
    const cache = !!msg.cache;
    const model = await readSource(msg.model, 'model', msg.id, cache);
    const tok = msg.tokenizer ? await readSource(msg.tokenizer, 'tokenizer', msg.id, cache) : null;
    post({ id: msg.id, type: 'progress', progress: { file: 'model', phase: 'upload', loaded: 0, total: 0 } });
    engine = await wasm.createEngine(
      model.bytes,
      model.name,
      tok ? tok.bytes : undefined,
      JSON.stringify(options),
      JSON.stringify(facts),
    );
    // A lost device (driver reset, GPU process crash): refuse every later call, tell the page.
    engine.lost().then((reason) => {
      lostReason = reason;
      post({ type: 'lost', message: lostMessage(reason) });
    });
    await model.commit();
    if (tok) await tok.commit();
    loadedFromCache = !!model.fromCache;
    return parsedInfo();
  },
  async info() {
    requireEngine();
    return parsedInfo();
  },
  async encode(msg) {
    return Array.from(requireEngine().encode(msg.text));
  },
  async decode(msg) {
    return requireEngine().decode(Uint32Array.from(msg.tokens));
  },
  async resolveTranspoints(msg) {
    return requireEngine().resolveTranspoints(msg.spec);
  },
  async forward(msg) {
    const e = requireEngine();
    const logits = await e.forward(Uint32Array.from(msg.tokens), msg.transpoints, !!msg.all);
    return { transfer: logits, transferList: [logits.buffer] };
  },
  async generate(msg) {
    const e = requireEngine();
    const tokens = msg.text != null ? e.encode(msg.text) : Uint32Array.from(msg.tokens);
    const onStep = async (json) => {
      post({ id: msg.id, type: 'step', step: JSON.parse(json) });
      await nextTask();
      return !aborted.has(msg.id);
    };
    // With a session id the sequence continues; without, a fresh one runs and is dropped.
    const target = msg.sid != null ? requireSession(msg.sid) : e;
    return JSON.parse(await target.generate(tokens, JSON.stringify(msg.options || {}), onStep));
  },
  async debugFault(msg) {
    requireEngine().debugFault(msg.kind);
    return null;
  },
  async newSession(msg) {
    const s = requireEngine().createSession(msg.transpoints);
    sessions.set(msg.sid, s);
    return JSON.parse(s.stats());
  },
  async restore(msg) {
    const s = requireEngine().restoreSession(msg.bytes, msg.name || 'session state');
    sessions.set(msg.sid, s);
    return JSON.parse(s.stats());
  },
  async fork(msg) {
    const s = await requireSession(msg.from).fork();
    sessions.set(msg.sid, s);
    return JSON.parse(s.stats());
  },
  async save(msg) {
    const bytes = await requireSession(msg.sid).save();
    return { transfer: bytes, transferList: [bytes.buffer] };
  },
  async sessionStats(msg) {
    return JSON.parse(requireSession(msg.sid).stats());
  },
  async disposeSession(msg) {
    const s = sessions.get(msg.sid);
    if (s) {
      sessions.delete(msg.sid);
      s.free();
    }
    return null;
  },
};

function requireSession(sid) {
  requireEngine();
  const s = sessions.get(sid);
  if (!s) throw new Error('this session was disposed, or its creation failed');
  return s;
}

self.onmessage = (ev) => {
  const msg = ev.data;
  if (msg.type === 'abort') {
    aborted.add(msg.target);
    return;
  }
  const handler = handlers[msg.type];
  chain = chain.then(async () => {
    if (aborted.has(msg.id)) {
      aborted.delete(msg.id);
      post({ id: msg.id, type: 'result', value: null, aborted: true });
      return;
    }
    try {
      if (!handler) throw new Error(`unknown request ${msg.type}`);
      const out = await handler(msg);
      if (out && out.transfer) {
        post({ id: msg.id, type: 'result', value: out.transfer }, out.transferList);
      } else {
        post({ id: msg.id, type: 'result', value: out });
      }
    } catch (e) {
      post({ id: msg.id, type: 'error', message: errorMessage(e) });
    } finally {
      aborted.delete(msg.id);
    }
  });
};
