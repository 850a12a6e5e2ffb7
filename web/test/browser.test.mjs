// Headless-Chromium tests of the transmamba-web package (as installed into demo/ from its npm
// tarball by web/build.sh) and of the demo page. Run: web/test.sh (or `node --test` here).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEMO, OUT, ROOT, launch, maxAbsDiff, nativeForward, nativeGenerate, prepare, serve, tmRun, watch } from './harness.mjs';

const PROMPT = [1, 2, 3, 4, 5];
const MAX_TOKENS = 32;
let models;
const decodeRates = {};
let server;
let browser;

before(async () => {
  models = prepare();
  server = await serve();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

async function openDemo(query = '') {
  const page = await browser.context.newPage();
  const log = watch(page);
  await page.goto(`${server.url}/index.html${query}`);
  await page.waitForFunction(() => ['ready', 'empty', 'no-webgpu'].includes(document.body.dataset.state), null, {
    timeout: 120_000,
  });
  return { page, log };
}

async function demoGenerate(page, { tokens, text, transpoints, maxTokens = MAX_TOKENS, continuing = false }) {
  const before = Number((await page.getAttribute('body', 'data-generations')) || 0);
  await page.setChecked('#continue', continuing);
  await page.setChecked('#prompt-tokens', tokens != null);
  await page.fill('#prompt', tokens != null ? tokens.join(',') : text);
  await page.fill('#transpoints', transpoints);
  await page.fill('#max-tokens', String(maxTokens));
  await page.fill('#temperature', '0');
  await page.click('#generate');
  await page.waitForFunction((n) => Number(document.body.dataset.generations || 0) > n, before, { timeout: 180_000 });
  const error = await page.$eval('#error', (e) => (e.hidden ? null : e.textContent));
  const ids = (await page.textContent('#tokens')).split(',').filter(Boolean).map(Number);
  return { error, ids };
}

describe('demo page', () => {
  // auto picks the CPU engine here (the adapter is SwiftShader, a software one); the WebGPU
  // engine is forced with ?device=webgpu. Both must equal tm-run token for token.
  for (const [device, kind] of [['auto', 'cpu'], ['webgpu', 'gpu']]) {
    test(`generates the same tokens as tm-run (demo model, TransPoint 8 crossed while decoding; device ${device} runs ${kind})`, async () => {
      const expected = nativeGenerate(models.demoModel, PROMPT, '8', MAX_TOKENS);
      const { page, log } = await openDemo(`?device=${device}`);
      try {
        assert.equal(await page.getAttribute('body', 'data-state'), 'ready', log.join('\n'));
        assert.equal(await page.getAttribute('body', 'data-engine'), kind);
        const { error, ids } = await demoGenerate(page, { tokens: PROMPT, transpoints: '8' });
        assert.equal(error, null, log.join('\n'));
        assert.equal(ids.length, MAX_TOKENS);
        assert.deepEqual(ids, expected.tokens);
        // Every layer crossed TransPoint 8: no attention entries left, SSM state present.
        const cache = await page.evaluate(() => window.transmambaDemo.summary.cache);
        assert.equal(cache.position, PROMPT.length + MAX_TOKENS - 1);
        for (const l of cache.layers) {
          assert.equal(l.attentionPositions, 8);
          assert.equal(l.attentionEntries, 0);
          assert.equal(l.ssmState, true);
        }
        const stats = await page.textContent('#stats');
        assert.match(stats, /tokens\/s/);
        if (device === 'auto') await page.screenshot({ path: join(ROOT, 'out/web/demo.png'), fullPage: true });
        const s = await page.evaluate(() => window.transmambaDemo.summary);
        decodeRates[device] = s.decodeTokensPerS;
        if (device === 'webgpu') {
          const gpu = nativeGenerate(models.demoModel, PROMPT, '8', MAX_TOKENS, 'gpu');
          console.log(
            `# demo model decode, tokens/s: browser CPU engine ${decodeRates.auto?.toFixed(1)}, ` +
              `browser WebGPU (SwiftShader) ${decodeRates.webgpu.toFixed(1)}; ` +
              `native CPU engine ${expected.decode_tokens_per_s.toFixed(1)}, ` +
              `native GPU engine (lavapipe) ${gpu.decode_tokens_per_s.toFixed(1)}`,
          );
        }
      } finally {
        await page.close();
      }
    });
  }

  test('tiny model with schedule 8,inf (one layer converts, one stays attention) matches tm-run', async () => {
    const expected = nativeGenerate(models.tiny, PROMPT, '8,inf', MAX_TOKENS);
    const { page, log } = await openDemo('?model=/__test/tiny.safetensors');
    try {
      const { error, ids } = await demoGenerate(page, { tokens: PROMPT, transpoints: '8,inf' });
      assert.equal(error, null, log.join('\n'));
      assert.deepEqual(ids, expected.tokens);
      const layers = await page.evaluate(() => window.transmambaDemo.summary.cache.layers);
      assert.deepEqual(
        layers.map((l) => [l.attentionPositions, l.ssmPositions, l.attentionEntries, l.ssmState]),
        [
          [8, PROMPT.length + MAX_TOKENS - 1 - 8, 0, true],
          [PROMPT.length + MAX_TOKENS - 1, 0, PROMPT.length + MAX_TOKENS - 1, false],
        ],
      );
    } finally {
      await page.close();
    }
  });

  test('a malformed or missing model URL shows an error, and the page still works', async () => {
    const expected = nativeGenerate(models.tiny, PROMPT, '8', MAX_TOKENS);
    const { page, log } = await openDemo('?model=/__test/tiny.safetensors');
    try {
      // Not a safetensors file at all (the page's own HTML).
      await page.fill('#model-url', '/index.html');
      await page.click('#load-url');
      await page.waitForFunction(() => !document.getElementById('error').hidden && document.body.dataset.state === 'ready');
      assert.match(await page.textContent('#error'), /malformed safetensors file/i);
      // Not there.
      await page.fill('#model-url', '/models/no-such-model.safetensors');
      await page.click('#load-url');
      await page.waitForFunction(() => /not found/.test(document.getElementById('error').textContent));
      assert.match(await page.textContent('#error'), /HTTP 404/);
      // The previous model still generates.
      const { error, ids } = await demoGenerate(page, { tokens: PROMPT, transpoints: '8' });
      assert.equal(error, null, log.join('\n'));
      assert.deepEqual(ids, expected.tokens);
    } finally {
      await page.close();
    }
  });

  test('bad input becomes a readable error: token out of range, malformed schedule', async () => {
    const { page } = await openDemo('?model=/__test/tiny.safetensors');
    try {
      let r = await demoGenerate(page, { tokens: [1, 2, 999], transpoints: '8' });
      assert.match(r.error, /token id 999 at position 2 is out of range \(vocabulary size 64\)/);
      r = await demoGenerate(page, { tokens: [1, 2], transpoints: '8,x' });
      assert.match(r.error, /invalid TransPoint schedule/);
      r = await demoGenerate(page, { tokens: [1, 2], transpoints: '1,2,3' });
      assert.match(r.error, /3 entries but the model has 2 layers/);
      assert.doesNotMatch(r.error, /unreachable/);
      r = await demoGenerate(page, { tokens: [1, 2], transpoints: 'inf', maxTokens: 4 });
      assert.equal(r.error, null);
      assert.equal(r.ids.length, 4);
    } finally {
      await page.close();
    }
  });

  test('a conversation continues one session; its state downloads, uploads and stays in the browser', async () => {
    const dir = OUT;
    const f1 = join(dir, 'demo-turn1.state');
    const f2 = join(dir, 'demo-turn2.state');
    const t1 = JSON.parse(tmRun(['generate', '--json', '--model', models.demoModel, '--tokens', PROMPT.join(','),
      '--transpoints', '8', '--max-tokens', '6', '--save-state', f1]));
    const t2 = JSON.parse(tmRun(['generate', '--json', '--model', models.demoModel, '--state', f1, '--tokens', '9,10',
      '--max-tokens', '5', '--save-state', f2]));
    const t3 = JSON.parse(tmRun(['generate', '--json', '--model', models.demoModel, '--state', f2, '--tokens', '11',
      '--max-tokens', '3']));
    const { page, log } = await openDemo();
    try {
      const turn = (tokens, maxTokens) => demoGenerate(page, { tokens, transpoints: '8', maxTokens, continuing: true });
      const a = await turn(PROMPT, 6);
      const b = await turn([9, 10], 5);
      assert.equal(a.error, null, log.join('\n'));
      assert.deepEqual(a.ids, t1.tokens);
      assert.deepEqual(b.ids, t2.tokens, 'the second send continues the first');
      // 5 + 6 + 2 + 5 tokens, the last sampled one not yet fed: the state covers 17; the demo
      // model's schedule 8 has converted every layer, so the state is its fixed 840 KiB.
      assert.match(await page.textContent('#session-size'), /state after 17 tokens: 840.0 KiB \(attention caches 0 B/);
      assert.equal(await page.$$eval('#conversation .turn', (t) => t.length), 2);
      // Download the state, start over, upload it: the next send continues where it was.
      const ops = async () => Number((await page.getAttribute('body', 'data-state-ops')) || 0);
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#save-state')]);
      const saved = join(dir, 'demo-download.state');
      await download.saveAs(saved);
      await page.click('#new-conversation');
      let n = await ops();
      await page.setInputFiles('#restore-file', saved);
      await page.waitForFunction((k) => Number(document.body.dataset.stateOps || 0) > k, n);
      const c = await turn([11], 3);
      assert.equal(c.error, null, log.join('\n'));
      assert.deepEqual(c.ids, t3.tokens, 'restored from the downloaded file');
      // The state file tm-run saved after turn 2 restores here too.
      n = await ops();
      await page.setInputFiles('#restore-file', f2);
      await page.waitForFunction((k) => Number(document.body.dataset.stateOps || 0) > k, n);
      assert.deepEqual((await turn([11], 3)).ids, t3.tokens, "restored from tm-run's file");
      // Keep it in the browser, restore it from there.
      n = await ops();
      await page.setInputFiles('#restore-file', f2);
      await page.waitForFunction((k) => Number(document.body.dataset.stateOps || 0) > k, n);
      await page.fill('#store-name', 'demo-test');
      n = await ops();
      await page.click('#store-state');
      await page.waitForFunction((k) => Number(document.body.dataset.stateOps || 0) > k, n);
      await page.click('#new-conversation');
      await page.selectOption('#stored', 'demo-test');
      n = await ops();
      await page.click('#restore-stored');
      await page.waitForFunction((k) => Number(document.body.dataset.stateOps || 0) > k, n);
      assert.deepEqual((await turn([11], 3)).ids, t3.tokens, 'restored from browser storage');
      n = await ops();
      await page.click('#delete-stored');
      await page.waitForFunction((k) => Number(document.body.dataset.stateOps || 0) > k, n);
      const left = await page.$$eval('#stored option', (o) => o.map((x) => x.value));
      assert.ok(!left.includes('demo-test'), left.join());
      // A file that is not a state: an error on the page, the conversation goes on.
      n = await ops();
      await page.setInputFiles('#restore-file', models.tiny);
      await page.waitForFunction((k) => Number(document.body.dataset.stateOps || 0) > k, n);
      assert.match(await page.textContent('#error'), /malformed session state|another model/);
      assert.doesNotMatch(await page.textContent('footer'), /random/);
    } finally {
      await page.close();
    }
  });

  test('a long generation keeps the page bounded: chart history thinned, every token shown', async () => {
    const { page, log } = await openDemo('?model=/__test/tiny.safetensors');
    try {
      const n = 1500;
      const { error, ids } = await demoGenerate(page, { tokens: PROMPT, transpoints: '8', maxTokens: n });
      assert.equal(error, null, log.join('\n'));
      assert.equal(ids.length, n);
      const h = await page.evaluate(() => window.transmambaDemo.history.length);
      assert.ok(h > 256 && h <= 1025, `chart history of ${h} points`);
    } finally {
      await page.close();
    }
  });

  test('without WebGPU the page runs the CPU engine; forced to WebGPU it says clearly why not', async () => {
    const expected = nativeGenerate(models.tiny, PROMPT, '8', MAX_TOKENS);
    const page = await browser.context.newPage();
    const log = watch(page);
    try {
      // The page's navigator loses WebGPU (init scripts do not reach the worker, whose adapter
      // is SwiftShader here: auto picks the CPU engine either way).
      await page.addInitScript(() => {
        delete Navigator.prototype.gpu;
      });
      await page.goto(`${server.url}/index.html?model=/__test/tiny.safetensors`);
      await page.waitForFunction(() => document.body.dataset.state === 'ready', null, { timeout: 120_000 });
      assert.equal(await page.getAttribute('body', 'data-engine'), 'cpu');
      assert.match(await page.textContent('#gpu-status'), /^CPU engine \(wasm SIMD, 1 thread\) · auto: /);
      const { error, ids } = await demoGenerate(page, { tokens: PROMPT, transpoints: '8' });
      assert.equal(error, null, log.join('\n'));
      assert.deepEqual(ids, expected.tokens);
      await page.goto(`${server.url}/index.html?device=webgpu`);
      await page.waitForFunction(() => document.body.dataset.state === 'no-webgpu');
      assert.equal(await page.isVisible('#no-webgpu'), true);
      assert.match(await page.textContent('#no-webgpu'), /This browser has no WebGPU/);
    } finally {
      await page.close();
    }
  });

  test('in Chromium without --enable-unsafe-webgpu the demo model generates on the CPU engine', async () => {
    const expected = nativeGenerate(models.demoModel, PROMPT, '8', MAX_TOKENS);
    const plain = await launch({ webgpu: false });
    try {
      const page = await plain.context.newPage();
      const log = watch(page);
      await page.goto(`${server.url}/index.html`);
      await page.waitForFunction(() => ['ready', 'empty'].includes(document.body.dataset.state), null, { timeout: 120_000 });
      assert.equal(await page.getAttribute('body', 'data-engine'), 'cpu', log.join('\n'));
      const { error, ids } = await demoGenerate(page, { tokens: PROMPT, transpoints: '8' });
      assert.equal(error, null, log.join('\n'));
      assert.deepEqual(ids, expected.tokens);
      const reason = await page.evaluate(() => window.transmambaDemo.info.engine.reason);
      console.log(`# Chromium without WebGPU flag: engine cpu (${reason})`);
    } finally {
      await plain.close();
    }
  });
});

describe('package API', () => {
  test('forward() logits equal tm-run forward; info(), abort and the model cache work', async () => {
    const native = nativeForward('tiny-forward', models.tiny, PROMPT, ['--transpoints', '3']);
    const { page, log } = await openDemo('?autoload=0');
    try {
      const r = await page.evaluate(async (prompt) => {
        const { loadModel, deleteCached } = await import('transmamba-web');
        const progress = [];
        const url = '/__test/tiny.safetensors';
        await deleteCached(url);
        const m = await loadModel(url, { cache: 'tm-test', onProgress: (p) => progress.push(p.phase) });
        const logits = await m.forward(prompt, { transpoints: 3, all: true });
        const info = await m.info();
        const g = await loadModel(url, { device: 'webgpu' });
        const gpuLogits = await g.forward(prompt, { transpoints: 3, all: true });
        const gpuInfo = await g.info();
        g.dispose();
        // The portable kernels forced (no subgroups, no shader-f16), and a bad kernels value.
        const pg = await loadModel(url, { device: 'webgpu', kernels: 'portable' });
        const portableLogits = await pg.forward(prompt, { transpoints: 3, all: true });
        const portableInfo = await pg.info();
        pg.dispose();
        let kernelsError = null;
        try { await loadModel(url, { device: 'webgpu', kernels: 'fast' }); } catch (e) { kernelsError = e.message; }
        let deviceError = null;
        try { await loadModel(url, { device: 'tpu' }); } catch (e) { deviceError = `${e instanceof TypeError} ${e.message}`; }
        // Abort after 3 tokens: the iterator just ends.
        const ctrl = new AbortController();
        const got = [];
        // (The CPU engine generates this tiny model's tokens in microseconds: the abort message
        // takes a few of them to arrive, so "stops" means long before maxTokens.)
        for await (const step of m.generate(prompt, { maxTokens: 100000, signal: ctrl.signal })) {
          got.push(step.token);
          if (got.length === 3) ctrl.abort();
        }
        // break also stops the worker's loop; the next call still works
        for await (const step of m.generate(prompt, { maxTokens: 200 })) { if (step.index === 1) break; }
        // a runaway maxTokens streams (nothing is allocated from it up front) and stops on break
        let runaway = 0;
        for await (const step of m.generate(prompt, { maxTokens: 1e9 })) { runaway += 1; if (step.index === 2) break; }
        const after = [];
        for await (const step of m.generate(prompt, { maxTokens: 2 })) after.push(step.token);
        m.dispose();
        // Second load comes from the Cache API.
        const m2 = await loadModel(url, { cache: 'tm-test' });
        const info2 = await m2.info();
        let rangeError = null;
        try { await m2.forward([70]); } catch (e) { rangeError = `${e instanceof Error} ${e.message}`; }
        m2.dispose();
        return { portableLogits: Array.from(portableLogits), portableKernels: portableInfo.kernels, kernelsError,
          logits: Array.from(logits), gpuLogits: Array.from(gpuLogits), info, gpuInfo, deviceError, progress, got: got.length, after: after.length, runaway, fromCache: info2.loadedFromCache, rangeError };
      }, PROMPT);
      assert.equal(r.logits.length, native.length, log.join('\n'));
      const maxDiff = maxAbsDiff(r.logits, native);
      assert.ok(maxDiff < 1e-3, `max |browser - native| = ${maxDiff}`);
      const gpuDiff = maxAbsDiff(r.gpuLogits, native);
      assert.ok(gpuDiff < 1e-3, `max |browser WebGPU - native| = ${gpuDiff}`);
      const portableDiff = maxAbsDiff(r.portableLogits, native);
      assert.ok(portableDiff < 1e-3, `max |browser WebGPU portable kernels - native| = ${portableDiff}`);
      assert.equal(r.portableKernels, 'portable');
      assert.match(r.kernelsError, /load option `kernels` must be "auto", "gpu", "portable" or "cpu-adapter", not "fast"/);
      assert.equal(r.info.engine.kind, 'cpu');
      assert.match(r.info.engine.reason, /software/);
      assert.equal(r.info.adapter, null);
      assert.equal(r.gpuInfo.engine.kind, 'gpu');
      assert.ok(r.gpuInfo.adapter.web, 'adapter info');
      assert.match(r.deviceError, /^true option device must be 'auto', 'webgpu' or 'cpu'/);
      assert.equal(r.info.model.layers, 2);
      assert.equal(r.info.model.vocab, 64);
      assert.equal(r.info.shaderF16, false);
      assert.equal(r.info.cache.position, PROMPT.length);
      assert.equal(r.info.cache.layers[0].attentionPositions, 3);
      assert.ok(r.progress.includes('download') && r.progress.includes('upload'), r.progress.join());
      assert.ok(r.got >= 3 && r.got < 1000, `abort stopped after ${r.got} tokens`);
      assert.equal(r.after, 2);
      assert.equal(r.runaway, 3);
      assert.equal(r.fromCache, true);
      assert.match(r.rangeError, /^true token id 70 at position 0 is out of range/);
      console.log(
        `# WebGPU adapter: ${JSON.stringify(r.info.webgpu)}; max logit diff: CPU engine ` +
          `${maxDiff.toExponential(2)}, WebGPU engine ${gpuDiff.toExponential(2)} (${r.gpuInfo.kernels} kernels), ` +
          `portable kernels ${portableDiff.toExponential(2)}`,
      );
    } finally {
      await page.close();
    }
  });

  test('sessions continue, save and restore across engines and tm-run, fork, and stay in browser storage', async () => {
    // tm-run: one run of 16 tokens; and 6 tokens saved, then continued by 10 from the file.
    const whole = nativeGenerate(models.tiny, PROMPT, '8,inf', 16);
    const stateFile = join(OUT, 'tiny-6.state');
    tmRun(['generate', '--model', models.tiny, '--tokens', PROMPT.join(','), '--transpoints', '8,inf',
      '--max-tokens', '6', '--save-state', stateFile, '--json']);
    const { page, log } = await openDemo('?autoload=0');
    try {
      const r = await page.evaluate(async (prompt) => {
        const { loadModel, listCached, deleteCached } = await import('transmamba-web');
        const url = '/__test/tiny.safetensors';
        const gen = async (session, p, maxTokens) => {
          const out = [];
          const it = session.generate(p, { maxTokens });
          for (;;) {
            const { value, done } = await it.next();
            if (done) return { tokens: out, summary: value };
            out.push(value.token);
          }
        };
        const cpu = await loadModel(url, { device: 'cpu' });
        const gpu = await loadModel(url, { device: 'webgpu' });
        // 6 tokens, save, restore on each engine, 10 more.
        const s = await cpu.session({ transpoints: '8,inf' });
        const first = await gen(s, prompt, 6);
        const bytes = await s.save();
        const onCpu = await gen(await cpu.restore(bytes), [], 10);
        const onGpu = await gen(await gpu.restore(bytes), [], 10);
        // The state tm-run saved, continued here.
        const nativeBytes = new Uint8Array(await (await fetch('/__test/tiny-6.state')).arrayBuffer());
        const fromNative = await gen(await gpu.restore(nativeBytes), [], 10);
        // A session continues across calls: 6 + 10 in two generate calls.
        const t = await cpu.session({ transpoints: '8,inf' });
        const a = await gen(t, prompt, 6);
        const b = await gen(t, [], 10);
        // Fork: the child and the parent continue independently, each as a fresh sequence would.
        const parent = await gpu.session({ transpoints: '8,inf' });
        await gen(parent, prompt, 3);
        const child = await parent.fork();
        const p1 = await gen(parent, [7], 4);
        const c1 = await gen(child, [9], 4);
        const c2 = await gen(child, [], 2);
        const solo = await gpu.session({ transpoints: '8,inf' });
        await gen(solo, prompt, 3);
        const s1 = await gen(solo, [9], 6);
        const solo2 = await gpu.session({ transpoints: '8,inf' });
        await gen(solo2, prompt, 3);
        const s2 = await gen(solo2, [7], 4);
        // Browser storage: store, list, restore, delete.
        await deleteCached('chat-1');
        const stored = await s.store('chat-1');
        const listed = (await listCached()).filter((c) => c.kind === 'session');
        const fromStore = await gen(await cpu.restoreCached('chat-1'), [], 10);
        const deleted = await deleteCached('chat-1');
        const listedAfter = (await listCached()).filter((c) => c.name === 'chat-1');
        let missing = null;
        try { await cpu.restoreCached('chat-1'); } catch (e) { missing = e.message; }
        // A full quota: the browser's QuotaExceededError becomes an Error naming the size.
        const proto = globalThis.FileSystemFileHandle && FileSystemFileHandle.prototype;
        const original = proto && proto.createWritable;
        let quota = null;
        if (original) {
          proto.createWritable = async function () {
            throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
          };
          try { await s.store('too-big'); } catch (e) { quota = `${e.name}: ${e.message}`; }
          proto.createWritable = original;
        }
        const leftover = (await listCached()).some((c) => c.name === 'too-big');
        // Bad states: Errors naming the problem.
        const errors = {};
        try { await cpu.restore(new Uint8Array([1, 2, 3])); } catch (e) { errors.junk = e.message; }
        try { await cpu.restore(bytes.slice(0, bytes.length - 9)); } catch (e) { errors.truncated = e.message; }
        const demo = await loadModel('/transmamba-demo.safetensors', { device: 'cpu' });
        try { await demo.restore(bytes); } catch (e) { errors.other = e.message; }
        try { await cpu.restore('not bytes'); } catch (e) { errors.type = `${e instanceof TypeError} ${e.message}`; }
        let disposed = null;
        t.dispose();
        try { await gen(t, [], 1); } catch (e) { disposed = e.message; }
        demo.dispose();
        cpu.dispose();
        gpu.dispose();
        return {
          first: first.tokens, firstPosition: first.summary.position, stateBytes: bytes.length,
          onCpu: onCpu.tokens, onGpu: onGpu.tokens, fromNative: fromNative.tokens, resumedAt: onGpu.summary.resumedAt,
          a: a.tokens, b: b.tokens, p1: p1.tokens, c1: c1.tokens, c2: c2.tokens, s1: s1.tokens, s2: s2.tokens,
          stored, listed, fromStore: fromStore.tokens, deleted, listedAfter, missing, errors, disposed,
          storage: listed[0] && listed[0].storage, quota, leftover,
        };
      }, PROMPT);
      const want = whole.tokens;
      assert.deepEqual(r.first, want.slice(0, 6), log.join('\n'));
      assert.equal(r.firstPosition, PROMPT.length + 6);
      assert.deepEqual(r.onCpu, want.slice(6), 'saved on the CPU engine, continued on it');
      assert.deepEqual(r.onGpu, want.slice(6), 'saved on the CPU engine, continued on WebGPU');
      assert.deepEqual(r.fromNative, want.slice(6), 'saved by tm-run, continued on WebGPU');
      assert.equal(r.resumedAt, PROMPT.length + 6);
      assert.deepEqual([...r.a, ...r.b], want, 'one session, two calls');
      assert.deepEqual([...r.c1, ...r.c2], r.s1, 'the fork continues as a fresh sequence would');
      assert.deepEqual(r.p1, r.s2, 'the parent continues as if never forked');
      assert.ok(r.stored === r.stateBytes, `stored ${r.stored} bytes`);
      assert.ok(r.listed.some((c) => c.name === 'chat-1' && c.bytes === r.stateBytes), JSON.stringify(r.listed));
      assert.deepEqual(r.fromStore, want.slice(6), 'restored from browser storage');
      assert.equal(r.deleted, true);
      assert.deepEqual(r.listedAfter, []);
      assert.match(r.missing, /no saved session named "chat-1"/);
      assert.match(r.errors.junk, /malformed session state/);
      assert.match(r.errors.truncated, /malformed session state/);
      assert.match(r.errors.other, /another model/);
      assert.match(r.errors.type, /^true restore\(\) takes the bytes/);
      assert.match(r.disposed, /disposed/);
      assert.match(r.quota, /^QuotaExceededError: the browser's storage quota for this site is exceeded: cannot store the session "too-big" \(\d+\.\d KiB\)/);
      assert.equal(r.leftover, false, 'a failed store leaves nothing behind');
      console.log(`# session state of the tiny model after 11 tokens: ${r.stateBytes} bytes, kept in ${r.storage}`);
    } finally {
      await page.close();
    }
  });

  test('GPU faults: a failed allocation leaves the session usable, a failed submission is an Error, a lost device rejects every call and the demo offers a reload', async () => {
    const { page, log } = await openDemo('?device=webgpu&model=/__test/tiny.safetensors');
    try {
      const r = await page.evaluate(async () => {
        const { loadModel } = await import('transmamba-web');
        const url = '/__test/tiny.safetensors';
        const prompt = Array.from({ length: 10 }, (_, i) => (i * 7 + 2) % 64);
        const run = async (session, p, maxTokens) => {
          const out = [];
          for await (const step of session.generate(p, { maxTokens })) out.push(step.token);
          return out;
        };
        const attempt = async (f) => { try { await f(); return null; } catch (e) { return e.message; } };
        // Allocation failure: the 64-row attention cache fits the pretend 15,000-byte limit,
        // the 128-row one does not. The step fails, the session is as it was.
        const small = await loadModel(url, { device: 'webgpu', maxBufferSize: 15000 });
        const s = await small.session({ transpoints: 'inf' });
        const head = await run(s, prompt, 54); // 63 positions fed, the 54th sampled token pending
        // Appending 2 tokens feeds 3: 66 rows, so the cache must grow, and cannot.
        const tooLarge = await attempt(() => run(s, [5, 6], 3));
        const again = await attempt(() => run(s, [5, 6], 3));
        const state = await s.save(); // feeds the pending token: 64 rows still fit
        const roomy = await loadModel(url, { device: 'webgpu' });
        const tail = await run(await roomy.restore(state), [5, 6], 3);
        const one = await roomy.session({ transpoints: 'inf' });
        const whole = [...(await run(one, prompt, 54)), ...(await run(one, [5, 6], 3))];
        small.dispose();
        // A rejected submission after a step: that call is an Error, the session refuses more.
        const g = await loadModel(url, { device: 'webgpu' });
        const t = await g.session({ transpoints: '8,inf' });
        await run(t, prompt, 2);
        await g._debugFault('failNextSubmission');
        const failed = await attempt(() => run(t, [], 3));
        const poisoned = await attempt(() => run(t, [], 3));
        const fresh = await run(await g.session({ transpoints: '8,inf' }), prompt, 3);
        // A lost device.
        await g._debugFault('loseDevice');
        const lost = await g.lost;
        const afterLoss = await attempt(() => g.forward([1, 2, 3]));
        g.dispose();
        roomy.dispose();
        return { head, tooLarge, again, tail, whole, failed, poisoned, fresh, lost: lost.message, afterLoss };
      });
      assert.match(r.tooLarge, /attention_cache.* exceeds the device limit of 15000 bytes/, log.join('\n'));
      assert.match(r.again, /exceeds the device limit/);
      assert.deepEqual([...r.head, ...r.tail], r.whole, 'the rolled-back state continues elsewhere as one run');
      assert.match(r.failed, /GPU validation error/);
      assert.match(r.poisoned, /session is unusable: a forward pass failed part-way/);
      assert.equal(r.fresh.length, 3);
      assert.match(r.lost, /GPU device was lost \(.*(estroy).*\): load the model again/i);
      assert.match(r.afterLoss, /GPU device was lost/);
      // The demo page: a lost device shows the banner, and reloading brings the model back.
      await page.evaluate(() => window.transmambaDemo.model._debugFault('loseDevice'));
      await page.waitForFunction(() => document.body.dataset.state === 'lost');
      assert.equal(await page.isVisible('#lost'), true);
      assert.match(await page.textContent('#lost'), /GPU device was lost/);
      await page.click('#reload-model');
      await page.waitForFunction(() => document.body.dataset.state === 'ready');
      assert.equal(await page.isVisible('#lost'), false);
      const { error, ids } = await demoGenerate(page, { tokens: PROMPT, transpoints: '8,inf', maxTokens: 4 });
      assert.equal(error, null);
      assert.equal(ids.length, 4);
    } finally {
      await page.close();
    }
  });

  test('WebGPU kernel plans: each equals tm-run; demo model decode tokens/s per plan beside native lavapipe', async () => {
    const native = nativeForward('tiny-plans', models.tiny, PROMPT, ['--transpoints', '3']);
    const { page, log } = await openDemo('?autoload=0');
    try {
      const r = await page.evaluate(async (prompt) => {
        const { loadModel } = await import('transmamba-web');
        const logits = {};
        const names = {};
        for (const kernels of ['auto', 'gpu', 'portable']) {
          const m = await loadModel('/__test/tiny.safetensors', { device: 'webgpu', kernels });
          logits[kernels] = Array.from(await m.forward(prompt, { transpoints: 3, all: true }));
          names[kernels] = (await m.info()).kernels;
          m.dispose();
        }
        // Decode speed of the demo model per plan, alternating (2 rounds of 32 greedy tokens).
        const rates = { gpu: [], portable: [] };
        for (let round = 0; round < 2; round++) {
          for (const kernels of ['gpu', 'portable']) {
            const m = await loadModel('transmamba-demo.safetensors', { device: 'webgpu', kernels });
            const it = m.generate([1, 2, 3, 4, 5], { maxTokens: 32 });
            let step;
            while (!(step = await it.next()).done);
            rates[kernels].push(step.value.decodeTokensPerS);
            m.dispose();
          }
        }
        return { logits, names, rates };
      }, PROMPT);
      for (const k of ['auto', 'gpu', 'portable']) {
        const got = r.logits[k];
        assert.equal(got.length, native.length, log.join('\n'));
        const diff = maxAbsDiff(got, native);
        assert.ok(diff < 1e-3, `kernels ${k} (${r.names[k]}): max |browser - native| = ${diff}`);
      }
      assert.match(r.names.gpu, /^gpu/);
      assert.equal(r.names.portable, 'portable');
      assert.equal(r.names.auto, 'portable', 'auto runs the portable plan on a software adapter');
      const lavapipe = nativeGenerate(models.demoModel, [1, 2, 3, 4, 5], 'config', 32, 'gpu');
      // The same portable kernels on lavapipe: what the adapter, not the kernels, costs.
      const portableOut = tmRun([
        '--kernels', 'portable', 'generate', '--json', '--model', models.demoModel, '--tokens', '1,2,3,4,5',
        '--transpoints', 'config', '--max-tokens', '32', '--backend', 'gpu',
      ]);
      const lavapipePortable = JSON.parse(portableOut.trim().split('\n').pop());
      const fmt = (v) => v.map((x) => x.toFixed(1)).join(' / ');
      console.log(
        `# demo model decode, tokens/s (2 alternating rounds): browser WebGPU plan ${r.names.gpu} ` +
          `${fmt(r.rates.gpu)}, plan portable ${fmt(r.rates.portable)}; native lavapipe: cpu-adapter ` +
          `${lavapipe.decode_tokens_per_s.toFixed(1)}, the same portable kernels ` +
          `${lavapipePortable.decode_tokens_per_s.toFixed(1)}`,
      );
    } finally {
      await page.close();
    }
  });

  test('CPU engine prefill through the packed GEMM (SIMD128 kernels; 24 tokens, f32 and q4_0) equals tm-run forward', async () => {
    // PROMPT is shorter than the GEMM's 8-row threshold: this prompt takes the prefill path.
    const prompt = Array.from({ length: 24 }, (_, i) => 1 + ((i * 7) % 60));
    const native = {};
    for (const w of ['f32', 'q4_0']) {
      native[w] = nativeForward(`tiny-gemm-${w}`, models.tiny, prompt, ['--transpoints', '0', '--weights', w, '--backend', 'cpu']);
    }
    const { page, log } = await openDemo('?autoload=0');
    try {
      const r = await page.evaluate(async (prompt) => {
        const { loadModel } = await import('transmamba-web');
        const out = {};
        for (const weights of ['f32', 'q4_0']) {
          const m = await loadModel('/__test/tiny.safetensors', { device: 'cpu', weights });
          out[weights] = Array.from(await m.forward(prompt, { transpoints: 0, all: true }));
          m.dispose();
        }
        return out;
      }, prompt);
      for (const w of ['f32', 'q4_0']) {
        assert.equal(r[w].length, native[w].length, log.join('\n'));
        const maxDiff = maxAbsDiff(r[w], native[w]);
        assert.ok(maxDiff < 1e-3, `${w}: max |browser CPU - native| = ${maxDiff}`);
      }
    } finally {
      await page.close();
    }
  });

  test('threads: on a cross-origin-isolated page the CPU engine runs a pool of workers and equals tm-run; elsewhere one thread says why; a panic on a thread is an Error', async () => {
    const model = models.demoModel;
    const expected = nativeGenerate(model, PROMPT, '8', MAX_TOKENS, 'cpu');
    // 24 tokens: the prefill goes through the GEMM (parallel over the pool), then decode rows.
    const prompt = Array.from({ length: 24 }, (_, i) => 1 + ((i * 7) % 60));
    const native = {};
    for (const w of ['f32', 'q4_0']) {
      native[w] = nativeForward(`demo-threads-${w}`, model, prompt, ['--transpoints', '8', '--weights', w, '--backend', 'cpu']);
    }
    const isolated = await serve(DEMO, { isolated: true });
    const page = await browser.context.newPage();
    const log = watch(page);
    try {
      await page.goto(`${isolated.url}/index.html?autoload=0`);
      const r = await page.evaluate(async ({ prompt, tokens, maxTokens }) => {
        const { loadModel } = await import('transmamba-web');
        const url = '/transmamba-demo.safetensors';
        const out = { isolated: self.crossOriginIsolated, cores: navigator.hardwareConcurrency, runs: [] };
        for (const [threads, weights] of [['auto', 'f32'], [3, 'q4_0'], [1, 'f32']]) {
          const m = await loadModel(url, { device: 'cpu', threads, weights });
          const info = await m.info();
          const logits = Array.from(await m.forward(prompt, { transpoints: 8, all: true }));
          const ids = [];
          const t0 = performance.now();
          for await (const step of m.generate(tokens, { maxTokens, transpoints: 8 })) ids.push(step.token);
          const seconds = (performance.now() - t0) / 1000;
          out.runs.push({ threads, weights, info, logits, ids, rate: maxTokens / seconds });
          m.dispose();
        }
        // A bug on a pool thread (a panic ends that thread's instance): calls reject, `lost` says so.
        const m = await loadModel(url, { device: 'cpu', threads: 2 });
        try { await m._debugFault('panicOnPoolThread'); } catch (e) { out.faultError = e.message; }
        try { await m.forward(tokens); } catch (e) { out.afterFault = e.message; }
        out.lost = (await m.lost).message;
        try { await loadModel(url, { threads: 0 }); } catch (e) { out.badThreads = `${e instanceof TypeError} ${e.message}`; }
        return out;
      }, { prompt, tokens: PROMPT, maxTokens: MAX_TOKENS });
      assert.equal(r.isolated, true, log.join('\n'));
      for (const run of r.runs) {
        const what = `threads ${run.threads}, ${run.weights}`;
        assert.equal(run.info.engine.kind, 'cpu');
        assert.equal(run.info.threads, run.threads === 'auto' ? Math.min(r.cores, 16) : run.threads, `${what}: ${JSON.stringify(run.info)}`);
        assert.equal(run.info.threadsNote, null, what);
        const want = native[run.weights];
        assert.equal(run.logits.length, want.length, what);
        const maxDiff = maxAbsDiff(run.logits, want);
        assert.ok(maxDiff < 1e-3, `${what}: max |browser CPU - native| = ${maxDiff}`);
        if (run.weights === 'f32') assert.deepEqual(run.ids, expected.tokens, what);
        else assert.equal(run.ids.length, MAX_TOKENS, what);
        // Greedy tokens went through the output screen where the output matrix is f32 (the
        // tokens above are tm-run's); a q4_0 one is no bigger than a screen and has none.
        if (run.weights === 'f32') assert.ok(run.info.outputScreenBytes > 0, what);
        else assert.equal(run.info.outputScreenBytes, 0, what);
      }
      assert.match(r.faultError, /internal error in the wasm module, on a thread of the CPU engine: [\s\S]*debug fault: a panic on a pool thread/);
      assert.equal(r.afterFault, r.faultError);
      assert.equal(r.lost, r.faultError);
      assert.match(r.badThreads, /^true option threads must be 'auto' or an integer from 1 to 256, not 0/);
      console.log(
        `# demo model decode on the browser's CPU engine, tokens/s: ` +
          r.runs.map((x) => `${x.info.threads} thread(s) ${x.weights} ${x.rate.toFixed(1)}`).join(', '),
      );
      // Not isolated (the default server): one thread, and why.
      const plain = await browser.context.newPage();
      try {
        await plain.goto(`${server.url}/index.html?autoload=0`);
        const info = await plain.evaluate(async () => {
          const { loadModel } = await import('transmamba-web');
          const m = await loadModel('/__test/tiny.safetensors', { device: 'cpu' });
          const i = await m.info();
          m.dispose();
          return i;
        });
        assert.equal(info.threads, 1);
        assert.match(info.threadsNote, /^one thread: the page is not cross-origin isolated/);
      } finally {
        await plain.close();
      }
    } finally {
      await page.close();
      await isolated.close();
    }
  });

  test('demo/serve.py serves the demo cross-origin isolated: the page runs the CPU engine on one thread per core', async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const py = spawn('python3', [join(DEMO, 'serve.py'), String(port)], { stdio: 'ignore' });
    const plain = await launch({ webgpu: false });
    try {
      const page = await plain.context.newPage();
      const log = watch(page);
      for (let i = 0; ; i++) {
        try {
          await page.goto(`http://localhost:${port}/index.html`);
          break;
        } catch (e) {
          if (i === 50) throw e;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
      await page.waitForFunction(() => ['ready', 'empty'].includes(document.body.dataset.state), null, { timeout: 120_000 });
      const r = await page.evaluate(() => ({ isolated: self.crossOriginIsolated, cores: navigator.hardwareConcurrency, threads: window.transmambaDemo.info.threads }));
      assert.equal(r.isolated, true, log.join('\n'));
      assert.equal(r.threads, Math.min(r.cores, 16));
      const want = `${r.threads} thread${r.threads === 1 ? '' : 's'}`;
      assert.match(await page.textContent('#gpu-status'), new RegExp(`^CPU engine \\(wasm SIMD, ${want}\\) · auto: `));
    } finally {
      await plain.close();
      py.kill();
    }
  });

  test('quantized weights and GGUF files: logits equal tm-run on both engines; the demo offers q4_0; decode tokens/s per format', async () => {
    const gguf = join(OUT, 'tiny-q4_0.gguf');
    writeFileSync(gguf, readFileSync(join(ROOT, 'tests/fixtures/gguf/hf-mamba2-tiny-q4_0.gguf')));
    const native = {};
    for (const w of ['q8_0', 'q4_0']) {
      native[w] = nativeForward(`tiny-${w}`, models.tiny, PROMPT, ['--weights', w]);
    }
    native.gguf = nativeForward('tiny-gguf', gguf, PROMPT);
    const { page, log } = await openDemo('?autoload=0');
    try {
      const r = await page.evaluate(async (prompt) => {
        const { loadModel } = await import('transmamba-web');
        const out = {};
        for (const device of ['cpu', 'webgpu']) {
          for (const weights of ['q8_0', 'q4_0']) {
            const m = await loadModel('/__test/tiny.safetensors', { device, weights });
            out[`${device}-${weights}`] = Array.from(await m.forward(prompt, { all: true }));
            out[`${device}-${weights}-info`] = (await m.info()).weights;
            m.dispose();
          }
          const g = await loadModel('/__test/tiny-q4_0.gguf', { device });
          out[`${device}-gguf`] = Array.from(await g.forward(prompt, { all: true }));
          out[`${device}-gguf-info`] = (await g.info()).weights;
          g.dispose();
        }
        let badWeights = null;
        try { await loadModel('/__test/tiny.safetensors', { weights: 'q3_k' }); } catch (e) { badWeights = e.message; }
        // Decode speed of the demo model per format on both engines (32 greedy tokens).
        const rates = {};
        for (const device of ['cpu', 'webgpu']) {
          for (const weights of ['f32', 'f16', 'q8_0', 'q4_0']) {
            const m = await loadModel('transmamba-demo.safetensors', { device, weights });
            const it = m.generate([1, 2, 3, 4, 5], { maxTokens: 32 });
            let step;
            while (!(step = await it.next()).done);
            rates[`${device} ${weights}`] = step.value.decodeTokensPerS;
            m.dispose();
          }
        }
        return { out, badWeights, rates };
      }, PROMPT);
      const close = (a, b) => a.length === b.length && a.every((x, i) => Math.abs(x - b[i]) < 1e-4);
      for (const device of ['cpu', 'webgpu']) {
        for (const w of ['q8_0', 'q4_0']) {
          assert.ok(close(r.out[`${device}-${w}`], native[w]), `${device} ${w} vs tm-run\n${log.join('\n')}`);
          assert.equal(r.out[`${device}-${w}-info`], w);
        }
        assert.ok(close(r.out[`${device}-gguf`], native.gguf), `${device} GGUF vs tm-run`);
        assert.equal(r.out[`${device}-gguf-info`], 'q4_0');
      }
      assert.match(r.badWeights, /q8_0/);
      console.log(
        '# demo model decode in the browser, tokens/s: ' +
          Object.entries(r.rates).map(([k, v]) => `${k} ${v?.toFixed(1)}`).join(', '),
      );
    } finally {
      await page.close();
    }
    // The demo page offers the q4_0 file (sizes shown) and generates with it as tm-run does.
    const q4 = join(DEMO, 'transmamba-demo-q4_0.safetensors');
    const expected = nativeGenerate(q4, PROMPT, '8', 8);
    const { page: demo, log: demoLog } = await openDemo('?model=transmamba-demo-q4_0.safetensors&device=cpu');
    try {
      assert.equal(await demo.getAttribute('body', 'data-state'), 'ready', demoLog.join('\n'));
      assert.equal(await demo.inputValue('#model-preset'), 'transmamba-demo-q4_0.safetensors');
      await demo.waitForFunction(() => [...document.querySelectorAll('#model-preset option')].filter((o) => /MiB|KiB|MB/.test(o.textContent)).length === 2);
      const labels = await demo.$$eval('#model-preset option', (os) => os.map((o) => o.textContent));
      console.log(`# demo page model choices: ${labels.join(' | ')}`);
      const { error, ids } = await demoGenerate(demo, { tokens: PROMPT, transpoints: '8', maxTokens: 8 });
      assert.equal(error, null, demoLog.join('\n'));
      assert.deepEqual(ids, expected.tokens);
    } finally {
      await demo.close();
    }
  });

  test("the README's example runs", async () => {
    const readme = readFileSync(join(ROOT, 'web/README.md'), 'utf8');
    const m = readme.match(/<!-- example -->\s*```js\n([\s\S]*?)```/);
    assert.ok(m, 'web/README.md has a ```js block after <!-- example -->');
    // Static imports must stay at the module's top level: hoist them above the try block.
    const lines = m[1].split('\n');
    const imports = lines.filter((l) => /^import\s/.test(l)).join('\n');
    const body = lines.filter((l) => !/^import\s/.test(l)).join('\n');
    const html = `<!doctype html><meta charset="utf-8">
<script type="importmap">{ "imports": { "transmamba-web": "/node_modules/transmamba-web/index.js" } }</script>
<pre id="log"></pre>
<script type="module">
${imports}
const log = (...a) => { document.getElementById('log').textContent += a.join(' ') + '\\n'; };
console.log = log;
try {
${body}
  document.body.dataset.done = 'ok';
} catch (e) { log('ERROR', e.message); document.body.dataset.done = 'error'; }
</script>`;
    writeFileSync(join(OUT, 'readme-example.html'), html);
    const page = await browser.context.newPage();
    const log = watch(page);
    try {
      // The example loads 'transmamba-demo.safetensors' relative to the page: serve it beside it.
      await page.route('**/__test/transmamba-demo.safetensors', (route) =>
        route.fulfill({ body: readFileSync(join(DEMO, 'transmamba-demo.safetensors')), contentType: 'application/octet-stream' }),
      );
      await page.goto(`${server.url}/__test/readme-example.html`);
      await page.waitForFunction(() => document.body.dataset.done, null, { timeout: 120_000 });
      const out = await page.textContent('#log');
      assert.equal(await page.getAttribute('body', 'data-done'), 'ok', out + log.join('\n'));
      assert.match(out, /tokens\/s/);
    } finally {
      await page.close();
    }
  });
});
