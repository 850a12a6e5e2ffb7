// transmamba-web's CPU engine against wllama (llama.cpp compiled to wasm) in the same headless
// Chromium, on the same GGUF file, alternating: prefill and decode tokens/s. Not part of the
// tests or the build.
//
//   node docs/bench/browser-vs-wllama.mjs MODEL.gguf [ROUNDS] [THREADS]
//
// MODEL.gguf: e.g. the files docs/bench/compare-llama-cpp.sh leaves in its WORK directory
// (model-f32.gguf, model-q8_0.gguf, model-q4_0.gguf: the mamba2-130m shape by llama.cpp's own
// converter). wllama comes from npm (@wllama/wllama@2.4.0, installed into WLLAMA_DIR, default
// /tmp/wllama-bench); the page is served cross-origin isolated so that wllama may use
// THREADS threads (default 2; 1 runs both single-threaded), and transmamba-web's CPU engine the
// same number (its threaded module). Both engines get the same 64 token ids, then decode
// 32 tokens greedily. Run web/build.sh first (and `npm ci` in web/test).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { launch, prepare, serve } from '../../web/test/harness.mjs';

const model = resolve(process.argv[2] || '/tmp/tm-vs-llama/model-q8_0.gguf');
const rounds = Number(process.argv[3] || 3);
const threads = Number(process.argv[4] || 2);
const WLLAMA_DIR = process.env.WLLAMA_DIR || '/tmp/wllama-bench';
const WLLAMA = `${WLLAMA_DIR}/node_modules/@wllama/wllama/esm`;
if (!existsSync(model)) throw new Error(`${model} is missing (see the header of this file)`);
if (!existsSync(`${WLLAMA}/index.js`)) {
  execFileSync('npm', ['install', '--prefix', WLLAMA_DIR, '@wllama/wllama@2.4.0'], { stdio: 'inherit' });
}
prepare();
const server = await serve(undefined, {
  extra: [['/wllama/', WLLAMA], ['/gguf/', dirname(model)]],
  isolated: true,
});
const browser = await launch({ webgpu: false });
const page = await browser.context.newPage();
await page.goto(`${server.url}/index.html?autoload=0`);
if (!(await page.evaluate(() => crossOriginIsolated))) throw new Error('the page is not cross-origin isolated');
const url = `/gguf/${basename(model)}`;
const prompt = Array.from({ length: 64 }, (_, i) => 1 + ((i * 37) % 1000));
const gen = 32;

const transmamba1 = (threads) =>
  page.evaluate(
    async ({ url, prompt, gen, threads }) => {
      const { loadModel } = await import('transmamba-web');
      const m = await loadModel(url, { device: 'cpu', threads });
      const it = m.generate(prompt, { maxTokens: gen });
      let last;
      for (;;) {
        const n = await it.next();
        if (n.done) { last = n.value; break; }
      }
      const info = await m.info();
      m.dispose();
      return { what: `${info.engine.kind} (${info.weights}), ${info.threads} threads`, prefill: last.prefillTokensPerS, decode: last.decodeTokensPerS };
    },
    { url, prompt, gen, threads },
  );

const wllama = () =>
  page.evaluate(
    async ({ url, prompt, gen, threads }) => {
      const { Wllama } = await import('/wllama/index.js');
      const w = new Wllama({
        'single-thread/wllama.wasm': new URL('/wllama/single-thread/wllama.wasm', location.href).href,
        'multi-thread/wllama.wasm': new URL('/wllama/multi-thread/wllama.wasm', location.href).href,
      });
      await w.loadModelFromUrl(new URL(url, location.href).href, { n_ctx: 512, n_batch: 512, n_threads: threads });
      await w.samplingInit({ temp: 0, top_k: 1 });
      const t0 = performance.now();
      await w.decode(prompt, {});
      const t1 = performance.now();
      for (let i = 0; i < gen; i++) {
        const { token } = await w.samplingSample();
        await w.samplingAccept([token]);
        await w.decode([token], {});
      }
      const t2 = performance.now();
      const what = `wllama ${w.isMultithread() ? 'multi' : 'single'}-thread, ${w.getNumThreads()} threads`;
      await w.exit();
      return { what, prefill: (prompt.length * 1000) / (t1 - t0), decode: (gen * 1000) / (t2 - t1) };
    },
    { url, prompt, gen, threads },
  );

try {
  for (let r = 0; r < rounds; r++) {
    for (const [name, run] of [["tm-1", () => transmamba1(1)], ["tm-2", () => transmamba1(2)]]) {
      const s = await run();
      console.log(`round ${r + 1} ${basename(model)} ${name.padEnd(14)} ${s.what}: ` +
        `prefill ${prompt.length} tokens ${s.prefill.toFixed(1)} tokens/s, decode ${s.decode.toFixed(2)} tokens/s`);
    }
  }
} finally {
  await browser.close();
  await server.close();
}
