// A fresh app built with the bundlers web developers use, from the packed npm tarball, with no
// configuration: `vite build` and webpack 5 each bundle web/test/app (ten lines importing
// `loadModel` from 'transmamba-web'), a plain static server serves the output, and headless
// Chromium must generate the same tokens as tm-run. This is what breaks when a bundler cannot
// see the worker (issue 15): the worker's import of the wasm glue then 404s at run time.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { OUT, ROOT, launch, nativeGenerate, prepare, serve, watch } from './harness.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const PROMPT = [1, 2, 3, 4, 5];
const MAX_TOKENS = 8;
let models;
let browser;
let app;

/** The packed tarball web/build.sh made. */
function tarball() {
  const dir = join(ROOT, 'out/web');
  const tgz = readdirSync(dir).find((f) => /^transmamba-web-.*\.tgz$/.test(f));
  if (!tgz) throw new Error('out/web/transmamba-web-*.tgz is missing: run web/build.sh first');
  return join(dir, tgz);
}

/** A new app directory: the fixture's files and the package installed from its tarball. */
function freshApp() {
  const dir = join(OUT, 'fresh-app');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  cpSync(join(HERE, 'app'), dir, { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'fresh-app', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--silent', '--no-audit', '--no-fund', '--no-package-lock', tarball()], {
    cwd: dir,
    stdio: 'inherit',
  });
  return dir;
}

/**
 * Serves `dist` and runs the app's page against the tiny model; returns what the page reports
 * (generated ids, engine, threads). `isolated`: served cross-origin isolated, where the CPU
 * engine runs the threaded module on a pool of workers (thread.js, bundled from worker.js).
 */
async function runBuiltApp(dist, { isolated = false } = {}) {
  const server = await serve(dist, { isolated });
  const page = await browser.context.newPage();
  const log = watch(page);
  try {
    const q = `model=/__test/tiny.safetensors&tokens=${PROMPT.join(',')}&tp=8&max=${MAX_TOKENS}`;
    await page.goto(`${server.url}/index.html?${q}`);
    await page.waitForFunction(() => document.body.dataset.done, null, { timeout: 120_000 });
    const out = await page.textContent('#out');
    assert.equal(await page.getAttribute('body', 'data-done'), 'ok', `${out}\n${log.join('\n')}`);
    return JSON.parse(out);
  } finally {
    await page.close();
    await server.close();
  }
}

before(async () => {
  models = prepare();
  app = freshApp();
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

describe('a fresh app, bundled without configuration', () => {
  test('vite build: the worker and the wasm are bundled, and the page generates as tm-run does', async () => {
    const vite = join(dirname(require.resolve('vite/package.json')), 'bin/vite.js');
    const dist = join(app, 'dist-vite');
    execFileSync(process.execPath, [vite, 'build', '--outDir', dist, '--emptyOutDir', '--logLevel', 'warn'], {
      cwd: app,
      stdio: 'inherit',
    });
    const assets = readdirSync(join(dist, 'assets'));
    assert.ok(assets.some((f) => f.endsWith('.wasm')), `vite emitted the wasm: ${assets.join(', ')}`);
    await checkBoth(dist);
  });

  test('webpack 5: the same page, the same tokens', async () => {
    const cli = join(dirname(require.resolve('webpack-cli/package.json')), 'bin/cli.js');
    const dist = join(app, 'dist-webpack');
    rmSync(dist, { recursive: true, force: true });
    execFileSync(
      process.execPath,
      [cli, 'build', '--mode', 'production', '--entry', './main.js', '--output-path', dist, '--no-stats'],
      { cwd: app, stdio: 'inherit' },
    );
    // webpack emits a classic script (its automatic public path reads document.currentScript).
    writeFileSync(
      join(dist, 'index.html'),
      '<!doctype html><meta charset="utf-8"><pre id="out">loading…</pre><script src="main.js"></script>',
    );
    assert.ok(existsSync(join(dist, 'main.js')));
    assert.ok(readdirSync(dist).some((f) => f.endsWith('.wasm')), 'webpack emitted the wasm');
    await checkBoth(dist);
  });
});

/** The built app generates as tm-run does: one thread on a plain page, a pool when isolated. */
async function checkBoth(dist) {
  const expected = nativeGenerate(models.tiny, PROMPT, '8', MAX_TOKENS);
  const plain = await runBuiltApp(dist);
  assert.deepEqual(plain.tokens, expected.tokens);
  assert.equal(plain.engine, 'cpu');
  assert.equal(plain.threads, 1);
  const isolated = await runBuiltApp(dist, { isolated: true });
  assert.deepEqual(isolated.tokens, expected.tokens);
  assert.equal(isolated.threads, Math.min(isolated.cores, 16), 'the threaded module ran its pool');
}
