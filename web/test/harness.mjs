// Shared pieces of the browser tests: paths, tm-run, a static server, headless Chromium.
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const DEMO = join(ROOT, 'demo');
export const OUT = join(ROOT, 'out/web/test');
const TARGET = process.env.CARGO_TARGET_DIR || join(ROOT, 'target');
export const TM_RUN = join(TARGET, 'debug/tm-run');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** Builds tm-run (a no-op when it is up to date) and makes the test models. */
export function prepare() {
  mkdirSync(OUT, { recursive: true });
  execFileSync('cargo', ['build', '-q', '-p', 'tm-run'], { cwd: ROOT, stdio: 'inherit' });
  if (!existsSync(join(DEMO, 'node_modules/transmamba-web/index.js'))) {
    throw new Error('demo/node_modules/transmamba-web is missing: run web/build.sh first');
  }
  const tiny = join(OUT, 'tiny.safetensors');
  if (!existsSync(tiny)) tmRun(['make-model', '--preset', 'tiny', '--transpoints', '8,inf', '--out', tiny]);
  return { tiny, demoModel: join(DEMO, 'transmamba-demo.safetensors') };
}

export function tmRun(args) {
  return execFileSync(TM_RUN, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** `tm-run generate --json`'s result for the same model, prompt and schedule. */
export function nativeGenerate(model, tokens, transpoints, maxTokens, backend = 'auto') {
  const out = tmRun([
    'generate', '--json', '--model', model, '--tokens', tokens.join(','),
    '--transpoints', transpoints, '--max-tokens', String(maxTokens), '--backend', backend,
  ]);
  return JSON.parse(out.trim().split('\n').pop());
}

/**
 * `tm-run forward` over `tokens` with `args` (more flags), every row's logits as an array;
 * `name` names its .npy under out/web/test/.
 */
export function nativeForward(name, model, tokens, args = []) {
  const npy = join(OUT, `${name}.npy`);
  tmRun(['forward', '--model', model, '--tokens', tokens.join(','), ...args, '--out', npy]);
  return Array.from(readNpy(npy));
}

/** The largest |a[i] - b[i]| (NaN if either holds one). */
export function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Reads a float32 .npy (as tm-run forward --out writes it). */
export function readNpy(path) {
  const buf = readFileSync(path);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.subarray(10, 10 + headerLen).toString('latin1');
  if (!header.includes("'<f4'")) throw new Error(`unexpected npy dtype: ${header}`);
  const start = 10 + headerLen;
  return new Float32Array(buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + buf.length));
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

/**
 * A plain static server on 127.0.0.1 (a random port): by default demo/ at / and out/web/test/
 * at /__test/; `root` replaces demo/ (a bundler's output directory). `extra` mounts more
 * directories (`[prefix, dir]`, prefix like '/x/'); `isolated` sends the COOP/COEP headers that
 * make a page cross-origin isolated (what multi-threaded wasm needs).
 */
export async function serve(root = DEMO, { extra = [], isolated = false } = {}) {
  const mounts = [...extra, ['/__test/', OUT], ['/', root]];
  const isolation = isolated
    ? { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' }
    : {};
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    for (const [prefix, dir] of mounts) {
      if (!path.startsWith(prefix)) continue;
      let file = normalize(join(dir, path.slice(prefix.length)));
      if (file !== dir && !file.startsWith(dir + sep)) break;
      if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
      if (!existsSync(file) || !statSync(file).isFile()) break;
      res.writeHead(200, {
        'content-type': TYPES[extname(file)] || 'application/octet-stream',
        'content-length': statSync(file).size,
        'cache-control': 'no-store',
        ...isolation,
      });
      createReadStream(file).pipe(res);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  // close() also drops the browser's idle keep-alive connections, which would hold it open.
  const close = () =>
    new Promise((r) => {
      server.close(r);
      server.closeAllConnections();
    });
  return { url: `http://127.0.0.1:${port}`, close };
}

/**
 * Headless Chromium, fresh profile: with WebGPU (SwiftShader on a machine without a GPU), or,
 * with `webgpu: false`, as shipped without `--enable-unsafe-webgpu` (no usable WebGPU there).
 */
export async function launch({ webgpu = true } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'tm-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1100, height: 1400 },
    ignoreDefaultArgs: ['--disable-gpu'],
    args: [
      '--headless',
      '--no-sandbox',
      ...(webgpu ? ['--enable-unsafe-webgpu'] : []),
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Collects console errors and page errors of a page (printed when a test fails). */
export function watch(page) {
  const log = [];
  page.on('console', (m) => log.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  return log;
}
