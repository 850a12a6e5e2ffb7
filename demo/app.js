// The demo page: plain ES module over the transmamba-web package (no build step).
import { deleteCached, hasWebGPU, listCached, loadModel } from 'transmamba-web';

const $ = (id) => document.getElementById(id);
// `session`: the conversation (a transmamba session that each send continues), made on the
// first send with the schedule in the TransPoints field; `sessionSchedule` is that schedule.
const state = { model: null, info: null, controller: null, history: [], summary: null, session: null, sessionSchedule: null };
window.transmambaDemo = state; // for the browser tests and the curious

function setState(s) {
  document.body.dataset.state = s;
}

function showError(msg) {
  const box = $('error');
  if (msg) {
    box.textContent = msg;
    box.hidden = false;
  } else {
    box.textContent = '';
    box.hidden = true;
  }
}

function fmtBytes(b) {
  if (b >= 1 << 30) return `${(b / (1 << 30)).toFixed(2)} GiB`;
  if (b >= 1 << 20) return `${(b / (1 << 20)).toFixed(2)} MiB`;
  if (b >= 1 << 10) return `${(b / (1 << 10)).toFixed(1)} KiB`;
  return `${b} B`;
}

function fmtCount(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}

function setBusy(busy) {
  $('generate').disabled = busy || !state.model;
  $('stop').disabled = !busy;
  $('load-url').disabled = busy;
  $('model-file').disabled = busy;
  $('device').disabled = busy;
  const noSession = busy || !state.session;
  $('new-conversation').disabled = noSession;
  $('save-state').disabled = noSession;
  $('store-state').disabled = noSession;
  $('restore-file').disabled = busy || !state.model;
  $('restore-stored').disabled = busy || !state.model || !$('stored').value;
  $('delete-stored').disabled = busy || !$('stored').value;
}

function describeModel(info) {
  const m = info.model;
  const a = info.adapter;
  if (a) {
    const web = a.web || {};
    const adapter = [web.vendor, web.architecture, web.description || a.name].filter(Boolean).join(' / ') || a.name || 'unknown';
    $('gpu-status').textContent = `WebGPU: ${adapter} · shader-f16 ${info.shaderF16 ? 'used' : 'not used'}`;
    $('gpu-status').title = '';
  } else {
    const threads = `${info.threads} thread${info.threads === 1 ? '' : 's'}`;
    $('gpu-status').textContent = `CPU engine (wasm SIMD, ${threads}) · ${info.engine.reason}`;
    // Why one thread (a page without cross-origin isolation), on hover.
    $('gpu-status').title = info.threadsNote || '';
  }
  document.body.dataset.engine = info.engine.kind;
  $('model-info').textContent =
    `${m.name.split('/').pop()} — ${fmtCount(m.parameters)} parameters (${m.dtype}), ${m.layers} layers, ` +
    `d ${m.hiddenSize}, ${m.heads} heads × ${m.headDim}, state ${m.stateSize}, groups ${m.groups}` +
    `${m.mlpSize ? `, MLP ${m.mlpSize}` : ''}, vocab ${m.vocab}; own TransPoints ${m.transpoints}; ` +
    `text as ${info.tokenizer}${info.loadedFromCache ? '; loaded from the browser cache' : ''}`;
}

async function load(source, label) {
  showError(null);
  setState('loading');
  setBusy(true);
  const bar = $('load-progress');
  bar.hidden = false;
  bar.removeAttribute('value');
  const tokUrl = $('tokenizer-url').value.trim();
  try {
    const device = $('device').value;
    if (device === 'webgpu' && !hasWebGPU()) {
      $('no-webgpu').hidden = false;
      throw new Error('this browser has no WebGPU');
    }
    $('no-webgpu').hidden = true;
    const model = await loadModel(source, {
      device,
      cache: $('use-cache').checked,
      tokenizer: tokUrl || undefined,
      onProgress: (p) => {
        if (p.total > 0) {
          bar.max = p.total;
          bar.value = p.loaded;
        } else {
          bar.removeAttribute('value');
        }
        $('model-info').textContent = `${p.phase === 'upload' ? 'loading into the engine' : p.phase} ${p.file}` +
          (p.total ? `: ${fmtBytes(p.loaded)} of ${fmtBytes(p.total)}` : '');
      },
    });
    if (state.model) state.model.dispose();
    state.model = model;
    state.source = { source, label };
    $('lost').hidden = true;
    // A lost device (driver reset, GPU process gone): say so and offer to load again.
    model.lost.then(({ message }) => {
      if (state.model !== model) return;
      state.session = null;
      $('lost-reason').textContent = message;
      $('lost').hidden = false;
      setState('lost');
      $('generate').disabled = true;
    });
    state.session = null;
    $('conversation').textContent = '';
    showSessionSize(null);
    state.info = await model.info();
    describeModel(state.info);
    renderLayers(null);
  } catch (e) {
    showError(`Could not load ${label}: ${e.message}`);
    if (state.info) describeModel(state.info);
    else $('model-info').textContent = 'No model loaded.';
  } finally {
    bar.hidden = true;
    setBusy(false);
    setState(state.model ? 'ready' : 'empty');
  }
}

function parseTokens(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (!parts.length) throw new Error('the prompt has no token ids');
  return parts.map((p) => {
    if (!/^\d+$/.test(p)) throw new Error(`"${p}" is not a token id (a non-negative integer)`);
    return Number(p);
  });
}

function num(id, fallback) {
  const v = Number($(id).value);
  return Number.isFinite(v) ? v : fallback;
}

function showSessionSize(cache) {
  $('session-size').textContent = cache
    ? `conversation state after ${cache.position} tokens: ${fmtBytes(cache.cacheBytes)} ` +
      `(attention caches ${fmtBytes(cache.attentionBytes)}, SSM states ${fmtBytes(cache.ssmBytes)}, ` +
      `conv states ${fmtBytes(cache.convBytes)}) · schedule ${cache.transpoints}`
    : 'No conversation yet.';
}

function newTurn(promptLabel) {
  const turn = document.createElement('div');
  turn.className = 'turn';
  const you = document.createElement('span');
  you.className = 'you';
  you.textContent = promptLabel;
  const answer = document.createElement('span');
  answer.className = 'answer';
  answer.appendChild(document.createTextNode(''));
  turn.append(you, answer);
  $('conversation').appendChild(turn);
  return answer;
}

function note(text) {
  const div = document.createElement('div');
  div.className = 'turn note';
  div.textContent = text;
  $('conversation').appendChild(div);
}

function endConversation() {
  if (state.session) state.session.dispose();
  state.session = null;
  state.sessionSchedule = null;
  state.history = [];
  showSessionSize(null);
}

// The conversation to continue: the current one, or a new one under the TransPoints field's
// schedule (a changed schedule starts a new conversation: a sequence keeps its schedule).
async function conversation() {
  const schedule = await state.model.resolveTranspoints($('transpoints').value.trim() || 'config');
  if (state.session && state.sessionSchedule !== schedule) {
    note(`(schedule changed to ${schedule}: a new conversation)`);
    endConversation();
  }
  if (!state.session) {
    state.session = await state.model.session({ transpoints: schedule });
    state.sessionSchedule = schedule;
    state.history = [];
  }
  return state.session;
}

async function generate() {
  if (!state.model) return;
  showError(null);
  const promptText = $('prompt').value;
  let prompt;
  try {
    prompt = $('prompt-tokens').checked ? parseTokens(promptText) : promptText;
  } catch (e) {
    showError(e.message);
    return;
  }
  const continuing = $('continue').checked;
  const controller = new AbortController();
  state.controller = controller;
  state.summary = null;
  setBusy(true);
  setState('generating');
  $('tokens').textContent = '';
  $('stats').textContent = 'prefill…';
  const tokens = [];
  const options = {
    maxTokens: Math.max(1, Math.floor(num('max-tokens', 64))),
    temperature: num('temperature', 0),
    topK: Math.floor(num('top-k', 0)),
    topP: num('top-p', 1),
    seed: Math.floor(num('seed', 0)),
    signal: controller.signal,
  };
  try {
    let it;
    if (continuing) {
      const session = await conversation();
      it = session.generate(prompt, options);
    } else {
      endConversation();
      state.history = [];
      it = state.model.generate(prompt, { ...options, transpoints: $('transpoints').value.trim() || 'config' });
    }
    const answer = newTurn($('prompt-tokens').checked ? `[${prompt.join(',')}] ` : promptText);
    for (;;) {
      const { value, done } = await it.next();
      if (done) {
        state.summary = value;
        break;
      }
      tokens.push(value.token);
      answer.firstChild.appendData(value.text);
      appendText('tokens', tokens.length > 1 ? `,${value.token}` : `${value.token}`);
      $('stats').textContent = `${tokens.length} tokens · ${value.tokensPerS.toFixed(1)} tokens/s · position ${value.cache.position}`;
      pushHistory(value.cache);
      renderLayers(value.cache);
      if (continuing) showSessionSize(value.cache);
    }
    const s = state.summary;
    if (s) {
      $('stats').textContent =
        `${s.tokens.length} tokens · ${s.decodeTokensPerS.toFixed(1)} tokens/s decode · ` +
        `prefill ${s.promptTokens.length} tokens in ${s.prefillMs.toFixed(0)} ms · schedule ${s.transpoints}` +
        (s.stopped ? ' · stopped' : '');
      pushHistory(s.cache);
      renderLayers(s.cache);
      if (continuing) showSessionSize(s.cache);
    }
    $('conversation').scrollTop = $('conversation').scrollHeight;
  } catch (e) {
    showError(`Generation failed: ${e.message}`);
    $('stats').textContent = '';
  } finally {
    state.controller = null;
    setBusy(false);
    setState('ready');
    document.body.dataset.generations = String(Number(document.body.dataset.generations || 0) + 1);
  }
}

// Save / restore of the conversation's state: a file download and upload, or the browser's
// storage (listCached / deleteCached).
async function withBusy(what, fn) {
  showError(null);
  setBusy(true);
  try {
    await fn();
  } catch (e) {
    showError(`${what} failed: ${e.message}`);
  } finally {
    setBusy(false);
    document.body.dataset.stateOps = String(Number(document.body.dataset.stateOps || 0) + 1);
  }
}

async function adopt(session, label) {
  endConversation();
  state.session = session;
  state.sessionSchedule = session.stats.transpoints;
  $('transpoints').value = session.stats.transpoints;
  note(`(restored ${label}: ${session.stats.position} tokens; the next send continues it)`);
  showSessionSize(session.stats);
  renderLayers(session.stats);
}

async function refreshStored() {
  const sel = $('stored');
  const keep = sel.value;
  const items = (await listCached()).filter((c) => c.kind === 'session');
  sel.textContent = '';
  if (!items.length) sel.appendChild(new Option('(nothing kept)', ''));
  for (const c of items) sel.appendChild(new Option(`${c.name} (${fmtBytes(c.bytes)})`, c.name));
  if (items.some((c) => c.name === keep)) sel.value = keep;
  setBusy(false);
}

// A long generation (20,000 tokens) must cost the page the same per token at the end as at the
// start: text is appended to one text node (not re-set), and the memory chart keeps at most
// HISTORY_MAX points, thinned to every other one when full, so it still spans the whole run.
const HISTORY_MAX = 1024;

function appendText(id, text) {
  const el = $(id);
  if (!el.firstChild) el.appendChild(document.createTextNode(''));
  el.firstChild.appendData(text);
}

function pushHistory(cache) {
  const h = state.history;
  h.push(cache);
  if (h.length > HISTORY_MAX) state.history = h.filter((_, i) => i % 2 === 0 || i === h.length - 1);
}

function renderLayers(cache) {
  const body = $('layers').querySelector('tbody');
  body.textContent = '';
  if (!cache) {
    $('mem-chart').innerHTML = '';
    $('mem-now').textContent = '';
    return;
  }
  const pos = cache.position;
  cache.layers.forEach((l, i) => {
    const tr = document.createElement('tr');
    const att = l.attentionPositions;
    const ssm = l.ssmPositions;
    const range = (a, b) => (b > a ? (b - a === 1 ? `${a}` : `${a}–${b - 1}`) : 'none');
    tr.innerHTML = `<td>${i}</td><td>${l.transpoint}</td>
      <td class="bar"><div class="bar-track"><div class="att" style="flex:${att}"></div><div class="ssm" style="flex:${ssm}"></div></div>
      <div class="bar-label">attention ${range(0, att)} · SSM ${range(att, pos)}</div></td>
      <td>${l.attentionEntries} entries, ${fmtBytes(l.attentionBytes)}</td>
      <td>${l.ssmState ? fmtBytes(l.ssmBytes) : '—'}</td>`;
    body.appendChild(tr);
  });
  $('mem-now').textContent =
    `position ${pos}: attention caches ${fmtBytes(cache.attentionBytes)}, SSM states ${fmtBytes(cache.ssmBytes)}, ` +
    `conv states ${fmtBytes(cache.convBytes)}; total ${fmtBytes(cache.cacheBytes)}`;
  drawChart();
}

function drawChart() {
  const svg = $('mem-chart');
  const h = state.history;
  if (!h.length) {
    svg.innerHTML = '';
    return;
  }
  const W = 600;
  const H = 180;
  const pad = 4;
  const maxPos = Math.max(1, ...h.map((c) => c.position));
  const maxBytes = Math.max(1, ...h.map((c) => c.cacheBytes));
  const x = (p) => pad + ((W - 2 * pad) * p) / maxPos;
  const y = (b) => H - pad - ((H - 2 * pad) * b) / maxBytes;
  const line = (key, color) =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" vector-effect="non-scaling-stroke" points="${h
      .map((c) => `${x(c.position).toFixed(1)},${y(c[key]).toFixed(1)}`)
      .join(' ')}"/>`;
  svg.innerHTML =
    line('attentionBytes', 'var(--att)') + line('ssmBytes', 'var(--ssm)') + line('cacheBytes', 'var(--tot)');
  $('mem-axes').textContent = `x: position 0 – ${maxPos} · y: 0 – ${fmtBytes(maxBytes)}`;
}

/** Shows each preset's download size (from a HEAD request) beside its name. */
async function sizePresets() {
  for (const opt of $('model-preset').options) {
    if (!opt.value) continue;
    try {
      const r = await fetch(opt.value, { method: 'HEAD' });
      const n = Number(r.headers.get('content-length'));
      if (r.ok && n > 0) opt.textContent = `${opt.textContent} (${fmtBytes(n)})`;
    } catch {
      // The size is a nicety: a server without HEAD leaves the name alone.
    }
  }
}

function wire() {
  $('model-preset').addEventListener('change', () => {
    const url = $('model-preset').value;
    if (!url) return $('model-url').focus();
    $('model-url').value = url;
    load(url, url);
  });
  $('load-url').addEventListener('click', () => {
    const url = $('model-url').value.trim();
    if (!url) return showError('Enter a model URL or pick a file.');
    load(url, url);
  });
  $('model-file').addEventListener('change', (e) => {
    const f = e.target.files && e.target.files[0];
    if (f) load(f, f.name);
  });
  $('generate').addEventListener('click', generate);
  $('reload-model').addEventListener('click', () => {
    if (state.source) load(state.source.source, state.source.label);
  });
  $('new-conversation').addEventListener('click', () => {
    endConversation();
    $('conversation').textContent = '';
    renderLayers(null);
    setBusy(false);
  });
  $('save-state').addEventListener('click', () =>
    withBusy('Saving the state', async () => {
      const bytes = await state.session.save();
      const a = document.createElement('a');
      a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
      a.download = 'transmamba-session.safetensors';
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
    }),
  );
  $('restore-file').addEventListener('change', (e) => {
    const f = e.target.files && e.target.files[0];
    if (!f) return;
    withBusy(`Restoring ${f.name}`, async () => adopt(await state.model.restore(f), f.name));
    e.target.value = '';
  });
  $('store-state').addEventListener('click', () =>
    withBusy('Keeping the state', async () => {
      const name = $('store-name').value.trim() || 'conversation';
      const bytes = await state.session.store(name);
      await refreshStored();
      $('stored').value = name;
      note(`(kept as "${name}" in this browser: ${fmtBytes(bytes)})`);
    }),
  );
  $('restore-stored').addEventListener('click', () =>
    withBusy('Restoring', async () => {
      const name = $('stored').value;
      adopt(await state.model.restoreCached(name), `"${name}"`);
    }),
  );
  $('delete-stored').addEventListener('click', () =>
    withBusy('Deleting', async () => {
      await deleteCached($('stored').value);
      await refreshStored();
    }),
  );
  $('stored').addEventListener('change', () => setBusy(false));
  $('stop').addEventListener('click', () => state.controller && state.controller.abort());
  $('tp-preset').addEventListener('change', (e) => {
    if (e.target.value !== 'custom') $('transpoints').value = e.target.value;
    else $('transpoints').focus();
  });
  $('transpoints').addEventListener('input', (e) => {
    const v = e.target.value.trim();
    const known = ['config', '0', 'inf', 'paper'];
    $('tp-preset').value = known.includes(v) ? v : 'custom';
  });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && !$('generate').disabled) generate();
  });
}

async function main() {
  wire();
  refreshStored().catch(() => {});
  const params = new URLSearchParams(location.search);
  if (['auto', 'webgpu', 'cpu'].includes(params.get('device'))) $('device').value = params.get('device');
  $('gpu-status').textContent = hasWebGPU() ? 'WebGPU: available' : 'WebGPU: not available (the CPU engine runs)';
  if (!hasWebGPU() && $('device').value === 'webgpu') {
    $('no-webgpu').hidden = false;
    setState('no-webgpu');
    return;
  }
  const url = params.get('model') || $('model-url').value;
  $('model-url').value = url;
  const preset = [...$('model-preset').options].find((o) => o.value === url);
  $('model-preset').value = preset ? url : '';
  sizePresets();
  if (params.get('autoload') !== '0') await load(url, url);
  else setState('empty');
}

main();
