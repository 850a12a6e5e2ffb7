// One thread of the CPU engine's pool, in the threaded module (loaded only on a cross-origin-
// isolated page): instantiates the module on the engine worker's shared memory, then runs one of
// rayon's threads until the engine worker ends (web/src/threads.rs).

import { initSync, runPoolThread, takePanic } from './wasm-threads/transmamba_web.js';

self.onmessage = (ev) => {
  const { module, memory, port } = ev.data;
  try {
    initSync({ module, memory });
  } catch (e) {
    self.postMessage({ error: `cannot instantiate the threaded module: ${(e && e.message) || e}` });
    return;
  }
  self.postMessage({ ready: true });
  try {
    runPoolThread();
  } catch (e) {
    // A panic (a bug) ends this thread's instance; the engine worker now waits on its job forever
    // and cannot answer, so this tells the page directly (index.js fails the calls).
    const why = (e instanceof WebAssembly.RuntimeError && takePanic()) || (e && e.message) || String(e);
    port.postMessage({ message: `internal error in the wasm module, on a thread of the CPU engine: ${why} (load the model again)` });
  }
};
