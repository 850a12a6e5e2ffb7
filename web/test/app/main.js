// A new user's page: import the package by name, load a model, generate. The bundler tests
// build this unconfigured (vite build, webpack 5) from the packed tarball and run the result.
import { loadModel } from 'transmamba-web';

const out = document.getElementById('out');
const q = new URLSearchParams(location.search);
try {
  const model = await loadModel(q.get('model') || 'model.safetensors');
  const prompt = (q.get('tokens') || '1,2,3').split(',').map(Number);
  const tokens = [];
  const options = { maxTokens: Number(q.get('max') || 8), transpoints: q.get('tp') || 'config' };
  for await (const step of model.generate(prompt, options)) tokens.push(step.token);
  const info = await model.info();
  out.textContent = JSON.stringify({ tokens, engine: info.engine.kind, threads: info.threads ?? null, cores: navigator.hardwareConcurrency });
  document.body.dataset.done = 'ok';
} catch (e) {
  out.textContent = `error: ${e.message}`;
  document.body.dataset.done = 'error';
}
