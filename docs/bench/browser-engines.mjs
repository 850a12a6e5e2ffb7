// The browser's two engines side by side on one model, in headless Chromium (SwiftShader as the
// WebGPU adapter on a machine without a GPU), alternating: decode (and prefill) tokens/s of the
// CPU engine (wasm SIMD128, one thread) and the WebGPU engine. Not part of the tests.
//
//   node docs/bench/browser-engines.mjs [MODEL.safetensors] [ROUNDS]
//
// Default model: the mamba2-130m shape, written once by `tm-run make-model --preset mamba2-130m
// --out out/web/test/mamba2-130m.safetensors` (config in its metadata, random weights, 514 MB).
// Run web/build.sh first. Uses web/test's harness (its node_modules: run `npm ci` in web/test).
import { existsSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { OUT, launch, prepare, serve, tmRun } from '../../web/test/harness.mjs';

prepare();
const model = resolve(process.argv[2] || join(OUT, 'mamba2-130m.safetensors'));
const rounds = Number(process.argv[3] || 2);
if (!existsSync(model)) tmRun(['make-model', '--preset', 'mamba2-130m', '--out', model]);
if (!model.startsWith(OUT)) throw new Error(`the model must live under ${OUT} (served as /__test/)`);
const server = await serve();
const browser = await launch();
const page = await browser.context.newPage();
await page.goto(`${server.url}/index.html?autoload=0`);
const url = `/__test/${model.slice(OUT.length + 1)}`;
const prompt = Array.from({ length: 64 }, (_, i) => 1 + ((i * 37) % 1000));
try {
  for (let r = 0; r < rounds; r++) {
    for (const device of ['cpu', 'webgpu']) {
      const s = await page.evaluate(
        async ({ url, device, prompt }) => {
          const { loadModel } = await import('transmamba-web');
          const m = await loadModel(url, { device });
          const it = m.generate(prompt, { maxTokens: 16 });
          let last;
          for (;;) {
            const n = await it.next();
            if (n.done) { last = n.value; break; }
          }
          const info = await m.info();
          m.dispose();
          return { engine: info.engine.kind, weights: info.weights, prefill: last.prefillTokensPerS, decode: last.decodeTokensPerS };
        },
        { url, device, prompt },
      );
      console.log(`round ${r + 1} ${basename(model)} ${device.padEnd(6)} engine ${s.engine} (${s.weights}): ` +
        `prefill ${prompt.length} tokens ${s.prefill.toFixed(1)} tokens/s, decode ${s.decode.toFixed(2)} tokens/s`);
    }
  }
} finally {
  await browser.close();
  await server.close();
}
