//! The device: options, creation (caps and kernel plan), errors and loss. By job, in
//! submodules: `resources` (buffers, textures, uploads, read-back), `pipelines` (pipeline
//! cache with a typed key, layouts, bind groups, params arena), `profiler`.

mod pipelines;
mod profiler;
mod resources;

pub(crate) use pipelines::{Arena, Kernel, Pipeline, UNIFORM_STAGING_BYTES};
use pipelines::{BindKey, PipelineKey};
use profiler::PendingProfile;
pub use profiler::ProfileClock;
pub use resources::{GpuBuffer, GpuMemory};

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

#[derive(Default)]
struct State {
    modules: HashMap<(&'static str, WeightFormat), wgpu::ShaderModule>,
    layouts: HashMap<(&'static str, WeightFormat), (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    pipelines: HashMap<PipelineKey, Arc<Pipeline>>,
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
        let freed = Arc::new(Mutex::new(Vec::new()));
        let dummy = GpuBuffer::placeholder(&device, &freed);
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
