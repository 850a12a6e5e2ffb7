// In-browser storage for models and saved sessions: the Origin Private File System where the
// browser has it (files, no size cap beyond the origin's quota), else the Cache API. One
// namespace: models are stored under their URL, sessions under `session:<name>`.
//
// Both the page (listCached, deleteCached, session.store / model.restoreCached) and the worker
// (loadModel's `cache` option) use it.

const DIR = 'transmamba';
const CACHE = 'transmamba-store';
// Cache API keys must be http(s) URLs: names live under this path of the page's origin.
const CACHE_PREFIX = '/__transmamba_store__/';

export const SESSION_PREFIX = 'session:';

function quotaError(e, name, bytes) {
  const size = bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`;
  const err = new Error(
    `the browser's storage quota for this site is exceeded: cannot store ${name} (${size}); ` +
      'free space with deleteCached(name) or in the browser settings',
  );
  err.name = 'QuotaExceededError';
  err.cause = e;
  return err;
}

function isQuota(e) {
  return !!e && (e.name === 'QuotaExceededError' || e.code === 22 || /quota/i.test(String(e.message)));
}

async function opfsDir() {
  const storage = globalThis.navigator && navigator.storage;
  if (!storage || typeof storage.getDirectory !== 'function') return null;
  try {
    const root = await storage.getDirectory();
    const dir = await root.getDirectoryHandle(DIR, { create: true });
    // createWritable is missing on some main threads (Safari): then use the Cache API.
    const probe = await dir.getFileHandle('.probe', { create: true });
    if (typeof probe.createWritable !== 'function') return null;
    return dir;
  } catch {
    return null; // opaque origins, private modes
  }
}

async function cacheStore() {
  if (!globalThis.caches) return null;
  try {
    return await caches.open(CACHE);
  } catch {
    return null;
  }
}

const fileName = (name) => encodeURIComponent(name);
const cacheUrl = (name) => new URL(CACHE_PREFIX + encodeURIComponent(name), globalThis.location.href).href;

let opened = null;

/** The store: { kind: 'opfs' | 'cache' | null, get, put, list, delete }. */
export function openStore() {
  if (!opened) opened = open();
  return opened;
}

async function open() {
  const dir = await opfsDir();
  if (dir) {
    return {
      kind: 'opfs',
      async get(name) {
        try {
          const h = await dir.getFileHandle(fileName(name));
          return new Uint8Array(await (await h.getFile()).arrayBuffer());
        } catch {
          return null;
        }
      },
      async put(name, bytes, label = name) {
        let w = null;
        try {
          const h = await dir.getFileHandle(fileName(name), { create: true });
          w = await h.createWritable();
          await w.write(bytes);
          await w.close();
        } catch (e) {
          if (w) await w.abort().catch(() => {});
          await dir.removeEntry(fileName(name)).catch(() => {});
          if (isQuota(e)) throw quotaError(e, label, bytes.byteLength);
          throw new Error(`cannot store ${label}: ${e.message || e}`);
        }
      },
      async list() {
        const out = [];
        for await (const [file, h] of dir.entries()) {
          if (h.kind !== 'file' || file === '.probe') continue;
          const f = await h.getFile();
          out.push({ name: decodeURIComponent(file), bytes: f.size });
        }
        return out;
      },
      async delete(name) {
        try {
          await dir.removeEntry(fileName(name));
          return true;
        } catch {
          return false;
        }
      },
    };
  }
  const cache = await cacheStore();
  if (cache) {
    return {
      kind: 'cache',
      async get(name) {
        const hit = await cache.match(cacheUrl(name));
        return hit ? new Uint8Array(await hit.arrayBuffer()) : null;
      },
      async put(name, bytes, label = name) {
        try {
          await cache.put(cacheUrl(name), new Response(bytes, { headers: { 'content-type': 'application/octet-stream' } }));
        } catch (e) {
          if (isQuota(e)) throw quotaError(e, label, bytes.byteLength);
          throw new Error(`cannot store ${label}: ${e.message || e}`);
        }
      },
      async list() {
        const out = [];
        for (const req of await cache.keys()) {
          const path = new URL(req.url).pathname;
          if (!path.startsWith(CACHE_PREFIX)) continue;
          const resp = await cache.match(req);
          const size = resp ? (await resp.arrayBuffer()).byteLength : 0;
          out.push({ name: decodeURIComponent(path.slice(CACHE_PREFIX.length)), bytes: size });
        }
        return out;
      },
      async delete(name) {
        return cache.delete(cacheUrl(name));
      },
    };
  }
  const none = async () => {
    throw new Error('this browser offers no storage to this page (no Origin Private File System, no Cache API)');
  };
  return { kind: null, get: async () => null, put: none, list: async () => [], delete: async () => false };
}
