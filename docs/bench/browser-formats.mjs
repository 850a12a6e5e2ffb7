// The browser's CPU engine on one model in each weight format, in headless Chromium without
// WebGPU, alternating the formats within each round: decode tokens/s of f32, f16, q8_0 and
// q4_0 (issue 17: no quantized format slower than f32). Not part of the tests.
//
//   node docs/bench/browser-formats.mjs [ROUNDS] [THREADS]
//
// THREADS 1 (default) serves the page without cross-origin isolation, so the single-threaded
// module runs (what a page without COOP/COEP headers gets); THREADS 2 (or more) serves it
// isolated and runs the threaded module on that many threads. FORMATS (env) picks formats,
// comma-separated. The model: the mamba2-130m shape, random weights (`tm-run make-model
// --preset mamba2-130m`, f32 and f16) and `tm-run quantize` of the f32 file, written once under
// out/web/test (about 1 GB in all). Run web/build.sh first; uses web/test's harness (run `npm
// ci` in web/test).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { OUT, launch, prepare, serve, tmRun } from '../../web/test/harness.mjs';

prepare();
const rounds = Number(process.argv[2] || 3);
const threads = Number(process.argv[3] || 1);
const formats = (process.env.FORMATS || 'f32,f16,q8_0,q4_0').split(',');
const file = (f) => join(OUT, `mamba2-130m-${f}.safetensors`);
for (const f of formats) {
  if (existsSync(file(f))) continue;
  if (f === 'f32' || f === 'f16') {
    tmRun(['make-model', '--preset', 'mamba2-130m', '--transpoints', '0', '--dtype', f, '--out', file(f)]);
  } else {
    if (!existsSync(file('f32'))) {
      tmRun(['make-model', '--preset', 'mamba2-130m', '--transpoints', '0', '--out', file('f32')]);
    }
    tmRun(['quantize', '--model', file('f32'), '--to', f, '--out', file(f)]);
  }
}
const server = await serve(undefined, { isolated: threads > 1 });
const browser = await launch({ webgpu: false });
const page = await browser.context.newPage();
await page.goto(`${server.url}/index.html?autoload=0`);
const prompt = Array.from({ length: 64 }, (_, i) => 1 + ((i * 37) % 1000));
try {
  for (let r = 0; r < rounds; r++) {
    const line = [];
    for (const f of formats) {
      const s = await page.evaluate(
        async ({ url, prompt, threads }) => {
          const { loadModel } = await import('transmamba-web');
          const m = await loadModel(url, { device: 'cpu', threads });
          const it = m.generate(prompt, { maxTokens: 48 });
          let last;
          for (;;) {
            const n = await it.next();
            if (n.done) { last = n.value; break; }
          }
          m.dispose();
          return { decode: last.decodeTokensPerS };
        },
        { url: `/__test/mamba2-130m-${f}.safetensors`, prompt, threads },
      );
      line.push(`${f} ${s.decode.toFixed(1)}`);
    }
    console.log(`round ${r + 1}, ${threads} thread(s), decode tokens/s: ${line.join('  ')}`);
  }
} finally {
  await browser.close();
  await server.close();
}
