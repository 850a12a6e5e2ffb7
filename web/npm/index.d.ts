// Types of transmamba-web's public API (index.js).

/** A TransPoint schedule: 'config' (the model's own), 'paper', a number for every layer,
 * Infinity / 'inf' (attention only), or one entry per layer as an array or a comma list. */
export type Transpoints = 'config' | 'paper' | number | string | Array<number | string | null>;

/** Where a model (or tokenizer.json) comes from. Strings are resolved against the page URL. */
export type ModelSource = string | URL | Blob | File | ArrayBuffer | ArrayBufferView;

export interface LoadProgress {
  /** 'model' or 'tokenizer'. */
  file: string;
  /** 'download' (fetching), 'cache' (served from the browser's storage), 'read' (File/bytes), 'upload' (to the GPU). */
  phase: 'download' | 'cache' | 'read' | 'upload';
  loaded: number;
  /** Total bytes; 0 when unknown. */
  total: number;
}

export interface LoadOptions {
  /** Called while the files download / load. */
  onProgress?: (p: LoadProgress) => void;
  /** Keep downloads in the browser's storage (the Origin Private File System where available,
   * else the Cache API) so a reload does not fetch them again; `listCached()` lists them,
   * `deleteCached(url)` deletes one. A string is accepted as `true`. Default false. If keeping
   * the model fails (quota), the load still succeeds and `info().cacheError` says why. */
  cache?: boolean | string;
  /** A tokenizer.json for text prompts; without it text is encoded as UTF-8 bytes. */
  tokenizer?: ModelSource;
  /** Use shader-f16 when the adapter offers it (default false). */
  preferF16?: boolean;
  /** Weight matrix storage (either engine): 'auto' (default: as the file stores them — q4_0 /
   * q8_0 for a quantized file, f16 for an f16 one, else f32), 'f32', 'f16' (half the memory),
   * or 'q8_0' / 'q4_0' (GGUF's block formats, quantized at load unless stored so; packed in
   * u32 words, no shader-f16 or int8 feature needed). Compute is f32 in every format. */
  weights?: 'auto' | 'f32' | 'f16' | 'q8_0' | 'q4_0';
  /** Pretend the device's storage-binding limit is at most this many bytes (testing). */
  maxBindingSize?: number;
  /** SSD scan chunk size (default 64). */
  chunkSize?: number;
  /** Most tokens one GPU submission processes (default 1024). */
  maxRows?: number;
  /** Aborting disposes the half-loaded model and rejects with an AbortError. */
  signal?: AbortSignal;
  /** Where worker.js lives, if a bundler moved it. */
  workerUrl?: string | URL;
  /** Which engine runs the model: 'auto' (default: WebGPU on a real GPU; the CPU engine when
   * WebGPU is missing or its adapter is a software one — `isFallbackAdapter`, SwiftShader),
   * 'webgpu' (fails with a clear Error where WebGPU is missing) or 'cpu'. `info().engine` says
   * which runs and why. */
  device?: 'auto' | 'webgpu' | 'cpu';
  /** WebGPU kernel plan: 'auto' (default: 'portable' on a software adapter such as SwiftShader,
   * 'gpu' on a real GPU), 'gpu' (lanes along K with subgroup or workgroup-memory reductions,
   * workgroup-memory tiles), 'portable' (no subgroups, no shader-f16) or 'cpu-adapter' (an Error
   * on an adapter without 8-wide subgroups). `info().kernels` names the plan that runs. */
  kernels?: 'auto' | 'gpu' | 'portable' | 'cpu-adapter';
  /** The CPU engine's threads: 'auto' (default: `navigator.hardwareConcurrency`, at most 16) or
   * a count. More than one needs a cross-origin-isolated page (served with
   * `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp`):
   * elsewhere it runs one thread and `info().threadsNote` says why. Each thread is a Web Worker
   * (thread.js) running the package's threaded module. */
  threads?: 'auto' | number;
}

export interface LayerCache {
  /** This layer's TransPoint ('inf' for attention only). */
  transpoint: string;
  /** Positions that ran through attention (0 .. attentionPositions-1). */
  attentionPositions: number;
  /** Positions that ran through the SSM (attentionPositions .. position-1). */
  ssmPositions: number;
  /** Entries held in the attention cache now (0 once converted to the SSM state). */
  attentionEntries: number;
  /** Whether the SSM state exists (the TransPoint was crossed). */
  ssmState: boolean;
  attentionBytes: number;
  ssmBytes: number;
  convBytes: number;
}

export interface CacheState {
  /** Tokens fed to the sequence so far. */
  position: number;
  /** The resolved schedule, one entry per layer. */
  transpoints: string;
  /** All cache memory in use: attention caches + SSM states + conv states. */
  cacheBytes: number;
  attentionBytes: number;
  ssmBytes: number;
  convBytes: number;
  layers: LayerCache[];
}

export interface ModelInfo {
  model: {
    name: string;
    dialect: string;
    layers: number;
    hiddenSize: number;
    heads: number;
    headDim: number;
    stateSize: number;
    groups: number;
    convKernel: number;
    mlpSize: number;
    vocab: number;
    parameters: number;
    dtype: string;
    /** The model's own schedule. */
    transpoints: string;
    ropeTheta: number | null;
    attentionGate: boolean;
  };
  /** The engine running the model and why ('cpu': the wasm CPU engine, SIMD128, `threads`). */
  engine: { kind: 'gpu' | 'cpu'; reason: string };
  /** What the browser's WebGPU offered (null when it was not asked: device 'cpu', or missing). */
  webgpu: { vendor: string; architecture: string; device: string; description: string; isFallbackAdapter: boolean; features: string[] } | null;
  /** The GPU adapter the engine runs on; null on the CPU engine. */
  adapter: {
    name: string;
    vendor: number;
    device: number;
    driver: string;
    driverInfo: string;
    backend: string;
    deviceType: string;
    /** What the browser's GPUAdapter.info says. */
    web: { vendor: string; architecture: string; device: string; description: string; isFallbackAdapter: boolean; features: string[] } | null;
  } | null;
  /** Whether the shaders use f16 (only with preferF16 and an adapter that has shader-f16). */
  shaderF16: boolean;
  /** How the weight matrices are stored (either engine; 'auto' keeps a model as stored). */
  weights: 'f32' | 'f16' | 'q8_0' | 'q4_0';
  limits: { maxStorageBufferBindingSize: number; maxBufferSize: number; bindingSizeUsed: number } | null;
  /** The CPU engine's threads (option `threads`); absent on the GPU engine. */
  threads?: number;
  /** Bytes of the CPU engine's output screen (a q8_0 copy of an f32/f16 output matrix through
   * which greedy and top-k decoding compute only the rows that can be chosen; same tokens), 0
   * without one; absent on the GPU engine. */
  outputScreenBytes?: number;
  /** Why the CPU engine runs fewer threads than asked (no cross-origin isolation, workers that
   * failed to start), or null; absent on the GPU engine. */
  threadsNote?: string | null;
  /** 'tokenizer.json' or 'bytes'. */
  tokenizer: string;
  /** Cache state of the latest sequence (generate or forward), null before the first. */
  cache: CacheState | null;
  /** Whether the model came from the browser's storage (`cache` option). */
  loadedFromCache?: boolean;
  /** Why keeping the model in storage failed (e.g. the quota), or null. */
  cacheError?: string | null;
}

export interface GenerateOptions {
  /** Tokens to generate (default 64). */
  maxTokens?: number;
  /** 0 (default) is greedy argmax. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 (default) keeps all. */
  topK?: number;
  /** Nucleus sampling; 1 (default) keeps all. */
  topP?: number;
  /** Seed of the sampler (default 0). */
  seed?: number;
  transpoints?: Transpoints;
  /** Aborting ends the iteration (no error is thrown). */
  signal?: AbortSignal;
}

export interface GenerateStep {
  index: number;
  token: number;
  /** Newly completed text (may be '' while a multi-byte character is incomplete). */
  text: string;
  /** Milliseconds since the first generated token. */
  elapsedMs: number;
  /** Decode speed so far. */
  tokensPerS: number;
  /** Cache state when this token was sampled. */
  cache: CacheState;
}

export interface GenerateSummary {
  transpoints: string;
  /** The sequence's length before this call (0 for a fresh one). */
  resumedAt: number;
  /** The sequence's length after it (the last generated token included). */
  position: number;
  promptTokens: number[];
  tokens: number[];
  text: string;
  /** Whether the run was stopped early (signal or break). */
  stopped: boolean;
  prefillMs: number;
  prefillTokensPerS: number;
  decodeMs: number;
  decodeTokensPerS: number;
  cache: CacheState;
}

export declare class TransMambaModel {
  private constructor();
  info(): Promise<ModelInfo>;
  encode(text: string): Promise<number[]>;
  decode(tokens: ArrayLike<number>): Promise<string>;
  resolveTranspoints(transpoints: Transpoints): Promise<string>;
  /** Logits of a fresh sequence: the last row [vocab], or every row with `all`. */
  forward(tokens: ArrayLike<number>, options?: { transpoints?: Transpoints; all?: boolean }): Promise<Float32Array>;
  /** Streams generated tokens of a fresh sequence; the generator's return value is the summary (null if aborted before starting). */
  generate(prompt: string | ArrayLike<number>, options?: GenerateOptions): AsyncGenerator<GenerateStep, GenerateSummary | null, undefined>;
  /** A sequence that lasts across calls (a conversation). */
  session(options?: { transpoints?: Transpoints }): Promise<TransMambaSession>;
  /** A session continuing from saved state bytes (`session.save()`, `tm-run generate --save-state`);
   * rejects with an Error naming what does not fit (another model, truncated, altered). */
  restore(state: Uint8Array | ArrayBuffer | Blob): Promise<TransMambaSession>;
  /** A session continuing from a state kept by `session.store(name)`. */
  restoreCached(name: string): Promise<TransMambaSession>;
  /** Resolves if the GPU device is lost, or a thread of the CPU engine died (a bug); every call
   * then rejects with its message. */
  readonly lost: Promise<{ message: string }>;
  /** Terminates the worker and frees the GPU device. */
  dispose(): void;
}

/** One sequence that lasts: each `generate` continues it. */
export declare class TransMambaSession {
  private constructor();
  /** Position, schedule and cache bytes per layer, as of the last call. */
  readonly stats: CacheState;
  /** Appends `prompt` ('' or [] continues from the last token) and streams the answer. The
   * options are GenerateOptions without `transpoints` (the session keeps its schedule). */
  generate(prompt: string | ArrayLike<number>, options?: Omit<GenerateOptions, 'transpoints'>): AsyncGenerator<GenerateStep, GenerateSummary | null, undefined>;
  /** The state file's bytes (safetensors; the same format tm-run writes and reads). */
  save(): Promise<Uint8Array>;
  /** Keeps the state in the browser under `name` (OPFS, else the Cache API); resolves to its
   * size. Rejects with an Error named QuotaExceededError when the site's quota is exceeded. */
  store(name: string): Promise<number>;
  /** An independent copy (a branch of the conversation). */
  fork(): Promise<TransMambaSession>;
  /** Frees the session in the worker. */
  dispose(): void;
}

export interface CachedItem {
  /** A model's URL, or a session's name. */
  name: string;
  kind: 'model' | 'session';
  bytes: number;
  /** Where it is kept. */
  storage: 'opfs' | 'cache' | null;
}

/** Models and sessions this browser keeps for this site. */
export declare function listCached(): Promise<CachedItem[]>;
/** Deletes a cached model (by URL) or a stored session (by name); resolves to whether one was deleted. */
export declare function deleteCached(name: string): Promise<boolean>;

/** Whether navigator.gpu exists. */
export declare function hasWebGPU(): boolean;
/** Loads a model into a new Web Worker; errors are `Error`s with a human message. */
export declare function loadModel(source: ModelSource, options?: LoadOptions): Promise<TransMambaModel>;
export declare function transpointsToString(tp: Transpoints | null | undefined): string;
export default loadModel;
