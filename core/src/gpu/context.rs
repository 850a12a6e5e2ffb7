//! Device setup, buffers, pipeline and bind-group caches, readback and the timestamp profiler.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};

use super::error::{GpuError, GpuResult};
use super::plan::{DeviceCaps, KernelChoice, KernelPlan};
use super::shaders::{for_target, shader_variant};
use super::weights::{texture_format, values_per_texel, WeightFormat};

/// Bytes reserved per dispatch in the uniform arena (>= any `min_uniform_buffer_offset_alignment`).
pub(crate) const PARAM_SLOT: u64 = 256;
/// Bind groups kept before the cache is flushed (it only grows when buffers are re-created).
const BIND_GROUP_CACHE_MAX: usize = 4096;

/// How to pick and configure the device.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    /// Test hook: pretend the storage binding limit (and max buffer size) is at most this many
    /// bytes. Weight matrices are split and SSD scratch is segmented according to it.
    pub max_binding_size: Option<u64>,
    pub power_preference: wgpu::PowerPreference,
    /// Request `SHADER_F16` when the adapter offers it.
    pub prefer_f16: bool,
    /// Start with the per-dispatch profiler on (see [`ProfileClock`] for how it times).
    pub profiling: bool,
    /// The profiler's clock; `None` picks: the host clock for CPU adapters and adapters
    /// without `TIMESTAMP_QUERY`, else timestamps (natively, `TM_PROFILE_CLOCK=timestamps|host`
    /// overrides that pick). The web has only timestamps.
    pub profile_clock: Option<ProfileClock>,
    /// Compile shaders without wgpu's injected bounds checks (faster; relies on the ops'
    /// host-side shape checks). Also enabled by the environment variable `TM_GPU_UNCHECKED=1`.
    pub unchecked_shaders: bool,
    /// Test hook: pretend the device's largest buffer is this many bytes, so that every
    /// allocation ([`GpuContext::zeros`]) beyond it fails as an out-of-memory would
    /// (`TooLarge`): the way the tests force an allocation failure in the middle of a step.
    pub max_buffer_size: Option<u64>,
    /// Which kernels run (`--kernels`, JS `kernels`): see [`KernelChoice`].
    pub kernels: KernelChoice,
    /// Test hook: create the device without subgroups even where the adapter offers them, so
    /// the `gpu` plan's workgroup-memory reductions (what adapters without subgroups run)
    /// are tested on lavapipe.
    pub without_subgroups: bool,
    /// The caller knows the adapter is a software one (the browser module: `isFallbackAdapter`
    /// or SwiftShader), which `auto` kernels take into account; natively the adapter's device
    /// type and name tell.
    pub software_adapter: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            max_binding_size: None,
            power_preference: wgpu::PowerPreference::HighPerformance,
            prefer_f16: false,
            profiling: false,
            profile_clock: None,
            unchecked_shaders: false,
            max_buffer_size: None,
            kernels: KernelChoice::Auto,
            without_subgroups: false,
            software_adapter: false,
        }
    }
}

/// How the profiler times each dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileClock {
    /// Timestamp queries around each dispatch: a GPU's own clock.
    Timestamps,
    /// The host's clock around each command submitted alone and waited for, less the cost of
    /// an empty submission. For CPU adapters (lavapipe, SwiftShader), whose timestamp queries
    /// do not bracket the dispatches (lavapipe resolves them when its draw pipeline flushes:
    /// decode kernels summed to ~10% of the wall time), and for native adapters without
    /// `TIMESTAMP_QUERY`. Slower: every command waits for the one before.
    Host,
}

impl ProfileClock {
    /// Its name in `TM_PROFILE_CLOCK` and in `tm-run bench --json` (`profile_clock`).
    pub fn name(self) -> &'static str {
        match self {
            ProfileClock::Timestamps => "timestamps",
            ProfileClock::Host => "host",
        }
    }
}

/// Device memory in use (see [`GpuContext::memory`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuMemory {
    pub buffer_bytes: u64,
    pub texture_bytes: u64,
    pub bind_groups: u64,
}

/// A storage buffer of 4-byte elements (f32 or u32). Cloning shares the buffer (same id).
/// Weight matrices are instead texture-backed (see [`GpuContext::upload_texture`]): `texture`
/// is set (with its format), `buffer` is a 16-byte placeholder, and only kernels whose access
/// string binds a texture ('t') may take them.
#[derive(Clone, Debug)]
pub struct GpuBuffer {
    pub(crate) buffer: wgpu::Buffer,
    id: Arc<BufferId>,
    len: usize,
    pub(crate) texture: Option<(wgpu::TextureView, WeightFormat)>,
}

/// A buffer's identity, shared by its clones. When the last clone goes, the id is queued so
/// that the cached bind groups holding the buffer leave the cache at the next bind, and its
/// memory is freed then, not whenever the cache next fills (a grown attention cache's old
/// buffers were kept alive that way).
#[derive(Debug)]
pub(crate) struct BufferId {
    id: u64,
    freed: Arc<Mutex<Vec<u64>>>,
}

impl Drop for BufferId {
    fn drop(&mut self) {
        lock(&self.freed).push(self.id);
    }
}

impl GpuBuffer {
    /// Number of 4-byte elements.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Unique id of the underlying buffer (keys the bind-group cache).
    pub fn id(&self) -> u64 {
        self.id.id
    }
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// A compute entry point and the access mode of its bindings 1.. ('r' read-only storage,
/// 'w' read-write storage, 'u' a uniform buffer ([`GpuContext::uniform_staging`]), 'x' / 'o'
/// an rgba32float storage texture read-only / write-only ([`GpuContext::x_texture`]), 't' a
/// read-only storage texture of weights: rgba32float, or packed f16 (rgba32uint) in the
/// shader's f16 variant, see [`crate::gpu::shaders::shader_variant`]); binding 0 is always the
/// params uniform with a dynamic offset.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernel {
    pub shader: &'static str,
    pub entry: &'static str,
    pub access: &'static str,
    /// Pipeline-overridable constants, "NAME=value;NAME=value" ("" for none).
    pub spec: &'static str,
}

impl Kernel {
    /// `self` specialised for state sizes N = 32, 64, 128 through the overridable constant
    /// `N4` = N / 4 (constant trip counts let the compiler unroll and keep arrays in registers);
    /// pick one with [`Kernel::for_key`].
    pub(crate) const fn by_state_size(self) -> [(u32, Kernel); 3] {
        [
            (
                32,
                Kernel {
                    spec: "N4=8",
                    ..self
                },
            ),
            (
                64,
                Kernel {
                    spec: "N4=16",
                    ..self
                },
            ),
            (
                128,
                Kernel {
                    spec: "N4=32",
                    ..self
                },
            ),
        ]
    }

    /// The entry of `table` for `key`, else `self` (the unspecialised kernel).
    pub(crate) fn for_key<'a>(&'a self, table: &'a [(u32, Kernel)], key: u32) -> &'a Kernel {
        table
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(self, |(_, k)| k)
    }
}

/// Size of [`GpuContext::uniform_staging`] (the shaders declare `array<vec4<f32>, 4096>`).
pub(crate) const UNIFORM_STAGING_BYTES: u64 = 65536;

pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub access: &'static str,
    pub name: &'static str,
    /// The weight format its 't' bindings hold (f32: rgba32float; f16, q8_0, q4_0: rgba32uint
    /// words, see [`crate::gpu::shaders::shader_variant`]).
    pub weights: WeightFormat,
}

#[derive(Hash, PartialEq, Eq)]
struct BindKey {
    access: &'static str,
    weights: WeightFormat,
    arena: u64,
    buffers: Vec<u64>,
}

pub(crate) struct Arena {
    pub buffer: wgpu::Buffer,
    pub capacity: u64,
    pub generation: u64,
}

struct PendingProfile {
    staging: wgpu::Buffer,
    labels: Vec<&'static str>,
}

#[derive(Default)]
struct State {
    modules: HashMap<(&'static str, WeightFormat), wgpu::ShaderModule>,
    layouts: HashMap<(&'static str, WeightFormat), (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    pipelines: HashMap<String, Arc<Pipeline>>,
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
    arena: Option<Arena>,
    scratch: HashMap<&'static str, GpuBuffer>,
    uniform_staging: Option<GpuBuffer>,
    x_texture: Option<(GpuBuffer, u32, u32)>,
    pending_profiles: Vec<PendingProfile>,
    profile_totals: BTreeMap<&'static str, (f64, u64)>,
    /// What an empty submission and its wait cost (ms), measured at the first host-clock use.
    #[cfg(not(target_arch = "wasm32"))]
    host_submit_ms: Option<f64>,
    /// Idle readback buffers, reused so steady-state decode allocates none.
    staging: Vec<wgpu::Buffer>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The device, its queue and every cache the ops use. Create one per process and share it.
pub struct GpuContext {
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// Limits the device was created with (the adapter's own).
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    max_binding: u64,
    state: Mutex<State>,
    error: Arc<Mutex<Option<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    /// Woken when the device is lost ([`GpuContext::lost`]).
    lost_waker: Arc<Mutex<Option<Waker>>>,
    /// [`GpuOptions::max_buffer_size`].
    max_alloc: Option<u64>,
    /// Test hook: the next submission is followed by a failing one ([`GpuContext::fail_next_submission`]).
    fail_next: AtomicBool,
    next_id: AtomicU64,
    /// Ids of buffers whose last handle was dropped, not yet evicted from the bind-group cache.
    freed: Arc<Mutex<Vec<u64>>>,
    profiling: AtomicBool,
    profile_clock: ProfileClock,
    unchecked_shaders: bool,
    dummy: GpuBuffer,
    /// Serialises arena write + submit: the params arena is shared by all recorders.
    submit_lock: Mutex<()>,
    /// What the kernels see of the device, read once.
    caps: DeviceCaps,
    /// The kernels every op runs on this device.
    plan: KernelPlan,
}

/// The adapter `GpuContext::new` would pick, without creating a device: what engine choices
/// (see [`crate::engine_choice`]) look at.
pub async fn probe_adapter(
    power_preference: wgpu::PowerPreference,
) -> GpuResult<wgpu::AdapterInfo> {
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let backends = format!("{:?}", desc.backends);
    let instance = wgpu::Instance::new(desc);
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference,
            ..Default::default()
        })
        .await
        .map(|a| a.get_info())
        .map_err(|e| GpuError::NoAdapter {
            backends,
            reason: e.to_string(),
        })
}

impl GpuContext {
    /// Finds an adapter and creates a device with the adapter's own limits.
    pub async fn new(opts: GpuOptions) -> GpuResult<Self> {
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let backends = format!("{:?}", desc.backends);
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: opts.power_preference,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter {
                backends,
                reason: e.to_string(),
            })?;
        let offered = adapter.features();
        let mut features = wgpu::Features::empty();
        if offered.contains(wgpu::Features::TIMESTAMP_QUERY) {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // Subgroup broadcasts let one lane's load feed the others (much cheaper than a load on
        // CPU Vulkan); kernels that use them have a fallback when the adapter lacks them.
        let portable = opts.kernels == KernelChoice::Portable;
        if offered.contains(wgpu::Features::SUBGROUP) && !portable && !opts.without_subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        if opts.prefer_f16 && !portable && offered.contains(wgpu::Features::SHADER_F16) {
            features |= wgpu::Features::SHADER_F16;
        }
        // The adapter's limits, not the WebGPU defaults: bigger bindings and workgroup storage.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("transmamba"),
                required_features: features,
                required_limits: limits.clone(),
                memory_hints: wgpu::MemoryHints::Performance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;

        let error = Arc::new(Mutex::new(None::<String>));
        let err2 = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut g = lock(&err2);
            if g.is_none() {
                *g = Some(e.to_string());
            }
        }));
        let lost = Arc::new(Mutex::new(None::<String>));
        let lost2 = lost.clone();
        let lost_waker = Arc::new(Mutex::new(None::<Waker>));
        let waker2 = lost_waker.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let why = if msg.is_empty() {
                format!("{reason:?}")
            } else {
                format!("{reason:?}: {msg}")
            };
            *lock(&lost2) = Some(why);
            if let Some(w) = lock(&waker2).take() {
                w.wake();
            }
        });

        let mut max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if let Some(m) = opts.max_binding_size {
            max_binding = max_binding.min(m.max(16));
        }
        let dummy_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let freed = Arc::new(Mutex::new(Vec::new()));
        // Id 0: the placeholder every texture-backed GpuBuffer shares (never evicted).
        let dummy = GpuBuffer {
            buffer: dummy_buf,
            id: Arc::new(BufferId {
                id: 0,
                freed: Arc::clone(&freed),
            }),
            len: 4,
            texture: None,
        };
        let info = adapter.get_info();
        #[cfg(not(target_arch = "wasm32"))]
        let unchecked_shaders =
            opts.unchecked_shaders || std::env::var("TM_GPU_UNCHECKED").is_ok_and(|v| v == "1");
        #[cfg(target_arch = "wasm32")]
        let unchecked_shaders = opts.unchecked_shaders;
        // The host clock needs a blocking wait, which the browser has not.
        #[cfg(not(target_arch = "wasm32"))]
        let profile_clock = {
            let env = std::env::var("TM_PROFILE_CLOCK").ok();
            let named = [ProfileClock::Timestamps, ProfileClock::Host]
                .into_iter()
                .find(|c| env.as_deref() == Some(c.name()));
            match opts.profile_clock.or(named) {
                Some(c) => c,
                None if info.device_type == wgpu::DeviceType::Cpu
                    || !features.contains(wgpu::Features::TIMESTAMP_QUERY) =>
                {
                    ProfileClock::Host
                }
                None => ProfileClock::Timestamps,
            }
        };
        #[cfg(target_arch = "wasm32")]
        let profile_clock = ProfileClock::Timestamps;
        let caps = DeviceCaps::new(&info, features, &limits, opts.software_adapter);
        let plan = KernelPlan::resolve(opts.kernels, &caps)?;
        let ctx = Self {
            caps,
            plan,
            instance,
            adapter,
            device,
            queue,
            info,
            limits,
            features,
            max_binding,
            state: Mutex::new(State::default()),
            error,
            lost,
            lost_waker,
            max_alloc: opts.max_buffer_size,
            fail_next: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            freed,
            profiling: AtomicBool::new(false),
            profile_clock,
            unchecked_shaders,
            dummy,
            submit_lock: Mutex::new(()),
        };
        ctx.set_profiling(opts.profiling);
        Ok(ctx)
    }

    /// Blocking [`GpuContext::new`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: GpuOptions) -> GpuResult<Self> {
        pollster::block_on(Self::new(opts))
    }

    /// Largest buffer (in bytes) a single binding may cover, after the test hook.
    pub fn max_binding_size(&self) -> u64 {
        self.max_binding
    }

    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// Whether subgroup operations are available.
    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    /// The kernels this device runs.
    pub fn plan(&self) -> KernelPlan {
        self.plan
    }

    /// The plan's name (status lines, `bench --json`, the JS `info()`).
    pub fn kernels(&self) -> &'static str {
        self.plan.name()
    }

    /// What the kernels see of the device.
    pub fn caps(&self) -> &DeviceCaps {
        &self.caps
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Returns (and clears) the first validation error and reports a lost device.
    pub fn check(&self) -> GpuResult<()> {
        if let Some(m) = lock(&self.lost).clone() {
            return Err(GpuError::DeviceLost(m));
        }
        if let Some(m) = lock(&self.error).take() {
            return Err(GpuError::Validation(m));
        }
        Ok(())
    }

    /// Why the device was lost, once it is.
    pub fn lost_reason(&self) -> Option<String> {
        lock(&self.lost).clone()
    }

    /// Resolves with the reason when the device is lost (never, while it lives): the browser
    /// module turns it into the JS model's `lost` promise.
    pub fn lost(&self) -> DeviceLostFuture {
        DeviceLostFuture {
            lost: self.lost.clone(),
            waker: self.lost_waker.clone(),
        }
    }

    /// Destroys the device, as a driver reset or the browser would lose it: every later call
    /// fails with `DeviceLost`. For tests of that path (natively and in the browser).
    pub fn destroy_device(&self) {
        self.device.destroy();
        // Natively the lost callback runs at the next poll.
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::Poll);
    }

    /// Test hook: after the next command submission, a second one that the device rejects
    /// (a copy from a destroyed buffer) is submitted — a real validation error arriving after
    /// the step's work was submitted, as an out-of-memory or an invalid buffer would on the
    /// web. Tests use it to check that such a step is an error and what the session does.
    pub fn fail_next_submission(&self) {
        self.fail_next.store(true, Ordering::Relaxed);
    }

    pub(crate) fn after_submit(&self) {
        if self.fail_next.swap(false, Ordering::Relaxed) {
            let src = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("destroyed"),
                size: 16,
                usage: wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let dst = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("fault"),
                size: 16,
                usage: wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            src.destroy();
            let mut enc = self.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, 16);
            self.queue.submit([enc.finish()]);
        }
    }

    /// Opens an error scope around a step (out-of-memory and validation errors): errors of
    /// the step's allocations, recording and submission arrive in it — on the web
    /// asynchronously — and [`ErrorScope::close`] returns them, so a read-back after a failed
    /// submission is an error, never stale or zero data.
    pub fn error_scope(&self) -> ErrorScope {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        ErrorScope { oom, validation }
    }

    pub(crate) fn submit_guard(&self) -> MutexGuard<'_, ()> {
        lock(&self.submit_lock)
    }

    pub(crate) fn dummy(&self) -> &GpuBuffer {
        &self.dummy
    }

    // ---------------------------------------------------------------- buffers

    /// A zero-filled storage buffer of `len` 4-byte elements.
    pub fn zeros(&self, label: &str, len: usize) -> GpuResult<GpuBuffer> {
        let bytes = (len as u64).saturating_mul(4).max(16);
        let limit = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
            .min(self.max_alloc.unwrap_or(u64::MAX));
        if bytes > limit {
            return Err(GpuError::TooLarge {
                what: label.to_string(),
                bytes,
                limit,
            });
        }
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.div_ceil(4) * 4,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuBuffer {
            buffer,
            id: self.new_buffer_id(),
            len,
            texture: None,
        })
    }

    /// Uploads `data` (`height` rows of `v * width` f32, v = `format.values_per_texel()`) into a
    /// new storage texture [height, width]: rgba32float (texel (x, y) holds
    /// `data[y * 4 * width + 4 * x ..][..4]`), or for f16 rgba32uint holding 8 values rounded to
    /// nearest f16, packed two per u32 low half first (`unpack2x16float` order). On CPU Vulkan
    /// (lavapipe) a texel fetch is a vector gather, several times cheaper than a storage-buffer
    /// load, so weight matrices live in textures. Errors if a side exceeds
    /// `max_texture_dimension_2d`.
    pub fn upload_texture(
        &self,
        label: &str,
        data: &[f32],
        width: u32,
        height: u32,
        format: WeightFormat,
    ) -> GpuResult<GpuBuffer> {
        let n = width as usize * height as usize * values_per_texel(format);
        if data.len() != n {
            return Err(GpuError::Shape {
                op: "upload_texture",
                detail: format!(
                    "{label}: {} values for {width}x{height} {} texels",
                    data.len(),
                    format.name()
                ),
            });
        }
        let usage = wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST;
        let (tex, buffer) = self.new_texture(label, width, height, format, usage)?;
        let halves: Vec<half::f16>;
        let bytes: &[u8] = match format {
            WeightFormat::F32 => bytemuck::cast_slice(data),
            WeightFormat::Q8_0 | WeightFormat::Q4_0 => {
                return Err(GpuError::Unsupported(format!(
                    "{label}: quantized textures are uploaded as words (upload_texture_words)"
                )))
            }
            WeightFormat::F16 => {
                // Rounding to f16 must not turn a large finite weight into ±Inf.
                if let Some(index) = crate::model::first_beyond_f16(data) {
                    return Err(GpuError::F16Overflow {
                        label: label.to_string(),
                        index,
                        value: data[index],
                    });
                }
                halves = data.iter().map(|&v| half::f16::from_f32(v)).collect();
                bytemuck::cast_slice(&halves)
            }
        };
        self.queue.write_texture(
            tex.as_image_copy(),
            bytes,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * 16),
                rows_per_image: None,
            },
            tex.size(),
        );
        self.check()?;
        Ok(buffer)
    }

    /// Uploads `words` (`height` rows of `4 * width` u32) into a new rgba32uint storage texture
    /// [height, width] tagged `format` (a quantized layout, see `GpuMatrix::from_quant`).
    pub fn upload_texture_words(
        &self,
        label: &str,
        words: &[u32],
        width: u32,
        height: u32,
        format: WeightFormat,
    ) -> GpuResult<GpuBuffer> {
        if words.len() != width as usize * height as usize * 4 || format == WeightFormat::F32 {
            return Err(GpuError::Shape {
                op: "upload_texture_words",
                detail: format!(
                    "{label}: {} words for {width}x{height} {} texels",
                    words.len(),
                    format.name()
                ),
            });
        }
        let usage = wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST;
        let (tex, buffer) = self.new_texture(label, width, height, format, usage)?;
        self.queue.write_texture(
            tex.as_image_copy(),
            bytemuck::cast_slice(words),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(width * 16),
                rows_per_image: None,
            },
            tex.size(),
        );
        self.check()?;
        Ok(buffer)
    }

    /// A new [height, width] storage texture of `format`'s texel format, wrapped as a
    /// [`GpuBuffer`] (placeholder buffer, `len` = the values it holds) so ops bind it like one.
    /// Errors if a side is 0 or exceeds `max_texture_dimension_2d`.
    pub(crate) fn new_texture(
        &self,
        label: &str,
        width: u32,
        height: u32,
        format: WeightFormat,
        usage: wgpu::TextureUsages,
    ) -> GpuResult<(wgpu::Texture, GpuBuffer)> {
        let maxd = self.limits.max_texture_dimension_2d;
        if width == 0 || height == 0 || width > maxd || height > maxd {
            return Err(GpuError::TooLarge {
                what: format!("{label}: texture {width}x{height}"),
                bytes: width.max(height) as u64,
                limit: maxd as u64,
            });
        }
        let tex = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width,
                height,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: texture_format(format),
            usage,
            view_formats: &[],
        });
        let buffer = GpuBuffer {
            buffer: self.dummy.buffer.clone(),
            id: self.new_buffer_id(),
            len: width as usize * height as usize * values_per_texel(format),
            texture: Some((tex.create_view(&Default::default()), format)),
        };
        Ok((tex, buffer))
    }

    /// Uploads `data` into a new storage buffer.
    pub fn upload_f32(&self, label: &str, data: &[f32]) -> GpuResult<GpuBuffer> {
        let b = self.zeros(label, data.len())?;
        self.write_f32(&b, 0, data)?;
        Ok(b)
    }

    /// Uploads u32 data (token ids) into a new storage buffer.
    pub fn upload_u32(&self, label: &str, data: &[u32]) -> GpuResult<GpuBuffer> {
        let b = self.zeros(label, data.len())?;
        self.write_u32(&b, 0, data)?;
        Ok(b)
    }

    /// Writes `data` at element `offset` (ordered before the next submit).
    pub fn write_f32(&self, buf: &GpuBuffer, offset: usize, data: &[f32]) -> GpuResult<()> {
        self.write_bytes(buf, offset, data.len(), bytemuck::cast_slice(data))
    }

    pub fn write_u32(&self, buf: &GpuBuffer, offset: usize, data: &[u32]) -> GpuResult<()> {
        self.write_bytes(buf, offset, data.len(), bytemuck::cast_slice(data))
    }

    fn write_bytes(&self, buf: &GpuBuffer, offset: usize, n: usize, bytes: &[u8]) -> GpuResult<()> {
        if offset + n > buf.len {
            return Err(GpuError::Shape {
                op: "write",
                detail: format!(
                    "writing {n} elements at {offset} into a buffer of {}",
                    buf.len
                ),
            });
        }
        if n > 0 {
            self.queue
                .write_buffer(&buf.buffer, offset as u64 * 4, bytes);
        }
        Ok(())
    }

    /// Reads `len` f32 elements starting at element `offset`.
    pub async fn read_f32(
        &self,
        buf: &GpuBuffer,
        offset: usize,
        len: usize,
    ) -> GpuResult<Vec<f32>> {
        let bytes = self.read_bytes(buf, offset, len).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Blocking whole-buffer read (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32_blocking(&self, buf: &GpuBuffer) -> GpuResult<Vec<f32>> {
        pollster::block_on(self.read_f32(buf, 0, buf.len()))
    }

    async fn read_bytes(&self, buf: &GpuBuffer, offset: usize, len: usize) -> GpuResult<Vec<u8>> {
        if offset + len > buf.len {
            return Err(GpuError::Shape {
                op: "read",
                detail: format!(
                    "reading {len} elements at {offset} from a buffer of {}",
                    buf.len
                ),
            });
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let size = len as u64 * 4;
        let pooled = {
            let mut st = lock(&self.state);
            let i = st.staging.iter().position(|b| b.size() >= size);
            i.map(|i| st.staging.swap_remove(i))
        };
        let staging = pooled.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: size.next_power_of_two().max(4096),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&buf.buffer, offset as u64 * 4, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        self.check()?;
        map_read(self, &staging).await?;
        let out = staging
            .slice(..size)
            .get_mapped_range()
            .map_err(|e| GpuError::Map(e.to_string()))?
            .to_vec();
        staging.unmap();
        // Errors of the work this read waited for (on the web they arrive asynchronously).
        self.check()?;
        lock(&self.state).staging.push(staging);
        Ok(out)
    }

    /// Waits for all submitted work (native; a no-op on the web).
    pub fn wait_idle(&self) -> GpuResult<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: None,
            })
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        self.check()
    }

    // ---------------------------------------------------------------- caches

    /// The (cached) pipeline for `k`, in its variant for `weights` textures.
    pub(crate) fn pipeline(&self, k: &Kernel, weights: WeightFormat) -> GpuResult<Arc<Pipeline>> {
        let key = format!("{}:{}:{}:{}", k.shader, k.entry, k.spec, weights.name());
        let mut st = lock(&self.state);
        if let Some(p) = st.pipelines.get(&key) {
            return Ok(p.clone());
        }
        if let std::collections::hash_map::Entry::Vacant(e) = st.modules.entry((k.shader, weights))
        {
            let src = shader_variant(k.shader, weights)
                .ok_or_else(|| GpuError::Unsupported(format!("no shader named {}", k.shader)))?;
            let src = for_target(src);
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(k.shader),
                source: wgpu::ShaderSource::Wgsl(src),
            };
            let m = if self.unchecked_shaders {
                // SAFETY: opted in via GpuOptions::unchecked_shaders; every op checks its
                // views against the buffer lengths before dispatching, and the kernels only
                // index inside those views (see the shader headers).
                unsafe {
                    self.device
                        .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                }
            } else {
                self.device.create_shader_module(desc)
            };
            e.insert(m);
        }
        st.layouts
            .entry((k.access, weights))
            .or_insert_with(|| self.make_layout(k.access, weights));
        let constants: Vec<(&str, f64)> = k
            .spec
            .split(';')
            .filter_map(|kv| {
                let (a, b) = kv.split_once('=')?;
                Some((a.trim(), b.trim().parse::<f64>().ok()?))
            })
            .collect();
        let (module, layout) = match (
            st.modules.get(&(k.shader, weights)),
            st.layouts.get(&(k.access, weights)),
        ) {
            (Some(m), Some((_, l))) => (m, l),
            _ => return Err(GpuError::Unsupported(format!("pipeline {key}"))),
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.shader),
                layout: Some(layout),
                module,
                entry_point: Some(k.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(m) = lock(&self.error).take() {
            return Err(GpuError::Validation(format!("pipeline {key}: {m}")));
        }
        let p = Arc::new(Pipeline {
            pipeline,
            access: k.access,
            name: k.shader,
            weights,
        });
        st.pipelines.insert(key, p.clone());
        Ok(p)
    }

    fn make_layout(
        &self,
        access: &str,
        weights: WeightFormat,
    ) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: NonZeroU64::new(PARAM_SLOT),
            },
            count: None,
        }];
        for (i, c) in access.chars().enumerate() {
            let image = |access, format: WeightFormat| wgpu::BindingType::StorageTexture {
                access,
                format: texture_format(format),
                view_dimension: wgpu::TextureViewDimension::D2,
            };
            let buffer = |ty| wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            };
            let ty = match c {
                't' => image(wgpu::StorageTextureAccess::ReadOnly, weights),
                'x' => image(wgpu::StorageTextureAccess::ReadOnly, WeightFormat::F32),
                'o' => image(wgpu::StorageTextureAccess::WriteOnly, WeightFormat::F32),
                'u' => buffer(wgpu::BufferBindingType::Uniform),
                _ => buffer(wgpu::BufferBindingType::Storage {
                    read_only: c == 'r',
                }),
            };
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty,
                count: None,
            });
        }
        let bgl = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(access),
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(access),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
        (bgl, pl)
    }

    /// Makes sure the uniform arena holds `bytes`; returns its buffer and generation.
    pub(crate) fn arena(&self, bytes: u64) -> (wgpu::Buffer, u64) {
        let mut st = lock(&self.state);
        let need = bytes.max(PARAM_SLOT);
        let grow = st.arena.as_ref().is_none_or(|a| a.capacity < need);
        if grow {
            let capacity = need.next_power_of_two().max(64 * PARAM_SLOT);
            let generation = st.arena.as_ref().map_or(0, |a| a.generation + 1);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params arena"),
                size: capacity,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            st.bind_groups.clear();
            st.arena = Some(Arena {
                buffer,
                capacity,
                generation,
            });
        }
        match &st.arena {
            Some(a) => (a.buffer.clone(), a.generation),
            None => unreachable!("arena was just created"),
        }
    }

    /// The cached bind group for `pipe` with `buffers` at bindings 1.. (whole buffers).
    pub(crate) fn bind_group(
        &self,
        pipe: &Pipeline,
        arena: &wgpu::Buffer,
        generation: u64,
        buffers: &[GpuBuffer],
    ) -> wgpu::BindGroup {
        let key = BindKey {
            access: pipe.access,
            weights: pipe.weights,
            arena: generation,
            buffers: buffers.iter().map(GpuBuffer::id).collect(),
        };
        let mut st = lock(&self.state);
        self.evict_freed(&mut st);
        if let Some(bg) = st.bind_groups.get(&key) {
            return bg.clone();
        }
        if st.bind_groups.len() >= BIND_GROUP_CACHE_MAX {
            st.bind_groups.clear();
        }
        st.layouts
            .entry((pipe.access, pipe.weights))
            .or_insert_with(|| self.make_layout(pipe.access, pipe.weights));
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: arena,
                offset: 0,
                size: NonZeroU64::new(PARAM_SLOT),
            }),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: match &b.texture {
                    Some((v, _)) => wgpu::BindingResource::TextureView(v),
                    None => b.buffer.as_entire_binding(),
                },
            });
        }
        let layout = match st.layouts.get(&(pipe.access, pipe.weights)) {
            Some((l, _)) => l,
            None => unreachable!("layout was just inserted"),
        };
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(pipe.name),
            layout,
            entries: &entries,
        });
        st.bind_groups.insert(key, bg.clone());
        bg
    }

    /// Number of cached bind groups (tests check that steady-state decode creates none).
    pub fn bind_group_cache_len(&self) -> usize {
        let mut st = lock(&self.state);
        self.evict_freed(&mut st);
        st.bind_groups.len()
    }

    fn new_buffer_id(&self) -> Arc<BufferId> {
        Arc::new(BufferId {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            freed: self.freed.clone(),
        })
    }

    /// Drops the cached bind groups that bind a buffer whose last handle is gone.
    fn evict_freed(&self, st: &mut State) {
        let freed: Vec<u64> = std::mem::take(&mut *lock(&self.freed));
        if !freed.is_empty() {
            st.bind_groups
                .retain(|k, _| !k.buffers.iter().any(|id| freed.contains(id)));
        }
    }

    /// A scratch buffer named `name` of at least `len` elements, reused across calls.
    /// Dispatches run in submission order, so reuse between ops is safe.
    pub(crate) fn scratch(&self, name: &'static str, len: usize) -> GpuResult<GpuBuffer> {
        if let Some(b) = lock(&self.state).scratch.get(name) {
            if b.len >= len {
                return Ok(b.clone());
            }
        }
        let b = self.zeros(name, len.next_power_of_two())?;
        lock(&self.state).scratch.insert(name, b.clone());
        Ok(b)
    }

    /// The 64 KiB uniform buffer kernels read small operands from (the decode step's B and C,
    /// matvec_f16's X), filled by a copy recorded before each use. Uniform loads at constant
    /// addresses are the cheapest loads on CPU Vulkan (at other addresses, gathers); 64 KiB is
    /// WebGPU's guaranteed uniform binding size.
    pub(crate) fn uniform_staging(&self) -> GpuBuffer {
        let mut st = lock(&self.state);
        st.uniform_staging
            .get_or_insert_with(|| GpuBuffer {
                buffer: self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("uniform staging"),
                    size: UNIFORM_STAGING_BYTES,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                id: self.new_buffer_id(),
                len: (UNIFORM_STAGING_BYTES / 4) as usize,
                texture: None,
            })
            .clone()
    }

    /// A scratch rgba32float storage texture of at least `width` x `height` texels, reused across
    /// calls (activations packed for texel fetches: see ops::matmul). Errors past
    /// `max_texture_dimension_2d`.
    pub(crate) fn x_texture(&self, width: u32, height: u32) -> GpuResult<GpuBuffer> {
        let mut st = lock(&self.state);
        if let Some((b, w, h)) = &st.x_texture {
            if *w >= width && *h >= height {
                return Ok(b.clone());
            }
        }
        let (w, h) = match &st.x_texture {
            Some((_, w, h)) => (width.max(*w), height.max(*h)),
            None => (width, height),
        };
        // COPY_DST: decode's matvec copies aligned X rows in (Recorder::copy_to_texture_row).
        let usage = wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST;
        let (_, b) = self.new_texture("activation texture", w, h, WeightFormat::F32, usage)?;
        st.x_texture = Some((b.clone(), w, h));
        Ok(b)
    }

    /// Drops cached bind groups and scratch buffers (pipelines are kept).
    pub fn clear_caches(&self) {
        let mut st = lock(&self.state);
        st.bind_groups.clear();
        st.scratch.clear();
        st.x_texture = None;
    }

    // ---------------------------------------------------------------- profiler

    /// Turns per-dispatch timing on or off; returns whether it is on (the host clock always
    /// can be, natively; timestamps need `TIMESTAMP_QUERY`).
    pub fn set_profiling(&self, on: bool) -> bool {
        let on = on && (self.profile_clock == ProfileClock::Host || self.has_timestamps());
        self.profiling.store(on, Ordering::Relaxed);
        on
    }

    pub fn profiling(&self) -> bool {
        self.profiling.load(Ordering::Relaxed)
    }

    /// What the device holds now: bytes in buffers and textures, and live bind groups, from
    /// wgpu's internal counters (native only; `None` in the browser, where the WebGPU
    /// implementation keeps them).
    pub fn memory(&self) -> Option<GpuMemory> {
        self.evict_freed(&mut lock(&self.state));
        #[cfg(not(target_arch = "wasm32"))]
        {
            let hal = self.device.get_internal_counters().hal;
            Some(GpuMemory {
                buffer_bytes: hal.buffer_memory.read().max(0) as u64,
                texture_bytes: hal.texture_memory.read().max(0) as u64,
                bind_groups: hal.bind_groups.read().max(0) as u64,
            })
        }
        #[cfg(target_arch = "wasm32")]
        {
            None
        }
    }

    /// How the profiler times dispatches on this adapter (`TM_PROFILE_CLOCK=timestamps|host`
    /// overrides the choice natively).
    pub fn profile_clock(&self) -> ProfileClock {
        self.profile_clock
    }

    /// Adds `ms` to `label`'s running total (host-clock profiling).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn add_profile(&self, label: &'static str, ms: f64) {
        let mut st = lock(&self.state);
        let e = st.profile_totals.entry(label).or_insert((0.0, 0));
        e.0 += ms;
        e.1 += 1;
    }

    /// What submitting an empty command buffer and waiting for it costs (ms): the least of 15,
    /// measured once, after pending work (uploads) has drained. The host clock subtracts it
    /// from every command it times; the least, because a busy moment must not be taken off
    /// every later command (~22 us on lavapipe).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn host_submit_ms(&self) -> GpuResult<f64> {
        if let Some(ms) = lock(&self.state).host_submit_ms {
            return Ok(ms);
        }
        self.wait_idle()?;
        let mut least = f64::MAX;
        for _ in 0..15 {
            let t = std::time::Instant::now();
            let enc = self.device.create_command_encoder(&Default::default());
            self.queue.submit([enc.finish()]);
            self.wait_idle()?;
            least = least.min(t.elapsed().as_secs_f64() * 1e3);
        }
        lock(&self.state).host_submit_ms = Some(least);
        Ok(least)
    }

    pub(crate) fn push_profile(&self, staging: wgpu::Buffer, labels: Vec<&'static str>) {
        lock(&self.state)
            .pending_profiles
            .push(PendingProfile { staging, labels });
    }

    /// Reads the timestamps of all submissions made since the last call, adds them to the running
    /// totals and returns the totals as (shader name, milliseconds, dispatches), slowest first.
    pub async fn profile_collect(&self) -> GpuResult<Vec<(String, f64, u64)>> {
        let pending = std::mem::take(&mut lock(&self.state).pending_profiles);
        let period_ns = self.queue.get_timestamp_period() as f64;
        for p in pending {
            map_read(self, &p.staging).await?;
            let ticks: Vec<u64> = {
                let view = p
                    .staging
                    .slice(..)
                    .get_mapped_range()
                    .map_err(|e| GpuError::Map(e.to_string()))?;
                bytemuck::pod_collect_to_vec(&view)
            };
            p.staging.unmap();
            let mut st = lock(&self.state);
            for (i, label) in p.labels.iter().enumerate() {
                let (a, b) = (ticks[2 * i], ticks[2 * i + 1]);
                let ms = b.saturating_sub(a) as f64 * period_ns / 1e6;
                let e = st.profile_totals.entry(label).or_insert((0.0, 0));
                e.0 += ms;
                e.1 += 1;
            }
        }
        let st = lock(&self.state);
        let mut v: Vec<(String, f64, u64)> = st
            .profile_totals
            .iter()
            .map(|(k, (ms, n))| (k.to_string(), *ms, *n))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(v)
    }

    pub fn profile_reset(&self) {
        let mut st = lock(&self.state);
        st.profile_totals.clear();
        st.pending_profiles.clear();
    }
}

/// Maps `staging` for reading: awaits the callback (web) after polling the device (native).
async fn map_read(ctx: &GpuContext, staging: &wgpu::Buffer) -> GpuResult<()> {
    let slot = Arc::new(Mutex::new(MapSlot::default()));
    let s2 = slot.clone();
    staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let mut g = lock(&s2);
        g.result = Some(r.map_err(|e| e.to_string()));
        if let Some(w) = g.waker.take() {
            w.wake();
        }
    });
    #[cfg(not(target_arch = "wasm32"))]
    ctx.device
        .poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: None,
        })
        .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
    #[cfg(target_arch = "wasm32")]
    let _ = ctx;
    MapFuture(slot).await.map_err(GpuError::Map)
}

#[derive(Default)]
struct MapSlot {
    result: Option<Result<(), String>>,
    waker: Option<Waker>,
}

struct MapFuture(Arc<Mutex<MapSlot>>);

impl Future for MapFuture {
    type Output = Result<(), String>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut g = lock(&self.0);
        match g.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                g.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The error scopes of one step ([`GpuContext::error_scope`]).
pub struct ErrorScope {
    oom: wgpu::ErrorScopeGuard,
    validation: wgpu::ErrorScopeGuard,
}

impl ErrorScope {
    /// Pops the scopes and returns the first error they caught (then a lost device, if any).
    pub async fn close(self, ctx: &GpuContext) -> GpuResult<()> {
        // Scopes pop in the reverse order of their pushes.
        let validation = self.validation.pop();
        let oom = self.oom.pop();
        if let Some(e) = validation.await {
            ctx.check()?;
            return Err(GpuError::Validation(e.to_string()));
        }
        if let Some(e) = oom.await {
            ctx.check()?;
            return Err(GpuError::OutOfMemory(e.to_string()));
        }
        ctx.check()
    }
}

/// See [`GpuContext::lost`].
pub struct DeviceLostFuture {
    lost: Arc<Mutex<Option<String>>>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl Future for DeviceLostFuture {
    type Output = String;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<String> {
        *lock(&self.waker) = Some(cx.waker().clone());
        match lock(&self.lost).clone() {
            Some(m) => Poll::Ready(m),
            None => Poll::Pending,
        }
    }
}
