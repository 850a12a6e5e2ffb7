//! Records many dispatches and submits them in one command buffer.
//!
//! Each dispatch's parameters (a few u32 words, f32 as bits) go into a CPU-side arena, one
//! 256-byte slot per dispatch; at [`Recorder::submit`] the arena is written with a single
//! `queue.write_buffer` and bound as a uniform with a dynamic offset. Bind groups depend only on
//! the buffers, so the context caches them and steady-state decode creates none. Dispatches run
//! in order with wgpu's automatic barriers between them.

use std::sync::Arc;

#[cfg(not(target_arch = "wasm32"))]
use super::context::ProfileClock;
use super::context::{GpuBuffer, GpuContext, Kernel, Pipeline, PARAM_SLOT};
use super::error::{GpuError, GpuResult};
use super::weights::WeightFormat;

const MAX_QUERIES: usize = 4096;

enum Cmd {
    Dispatch {
        pipe: Arc<Pipeline>,
        buffers: Vec<GpuBuffer>,
        offset: u32,
        groups: [u32; 3],
    },
    Copy {
        src: GpuBuffer,
        src_off: u64,
        dst: GpuBuffer,
        dst_off: u64,
        size: u64,
    },
    Clear {
        buf: GpuBuffer,
    },
    CopyToTexture {
        src: GpuBuffer,
        src_off: u64,
        tex: wgpu::Texture,
        row: u32,
        texels: u32,
    },
}

/// A batch of GPU work: call ops with it, then [`Recorder::submit`] once.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    cmds: Vec<Cmd>,
    params: Vec<u8>,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Self {
            ctx,
            cmds: Vec::new(),
            params: Vec::new(),
        }
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// Number of recorded commands.
    pub fn len(&self) -> usize {
        self.cmds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cmds.is_empty()
    }

    /// Records a dispatch of `k` with `params` (binding 0) and `buffers` (bindings 1..).
    pub(crate) fn dispatch(
        &mut self,
        k: &Kernel,
        params: &[u32],
        buffers: &[&GpuBuffer],
        groups: [u32; 3],
    ) -> GpuResult<()> {
        if buffers.len() != k.access.len() || params.len() * 4 > PARAM_SLOT as usize {
            return Err(GpuError::Unsupported(format!(
                "bad binding list for {}:{}",
                k.shader, k.entry
            )));
        }
        if buffers
            .iter()
            .zip(k.access.chars())
            .any(|(b, c)| b.texture.is_some() != matches!(c, 't' | 'x' | 'o'))
        {
            return Err(GpuError::Unsupported(format!(
                "{}:{}: a texture-backed matrix bound as a buffer or the reverse",
                k.shader, k.entry
            )));
        }
        for (i, (a, ca)) in buffers.iter().zip(k.access.chars()).enumerate() {
            for (b, cb) in buffers.iter().zip(k.access.chars()).skip(i + 1) {
                if a.id() == b.id() && a.id() != 0 && (ca == 'w' || cb == 'w') {
                    return Err(GpuError::Shape {
                        op: k.shader,
                        detail: "the same buffer is bound twice and one binding writes it".into(),
                    });
                }
            }
        }
        // Kernels compute invocation and element indices in u32 (a flat workgroup index times
        // at most 64 lanes): a grid past 2^32 invocations would wrap, so it is refused.
        let invocations = groups.iter().map(|&g| g as u64).product::<u64>() * 64;
        if invocations > u32::MAX as u64 + 1 {
            return Err(GpuError::Shape {
                op: k.shader,
                detail: format!(
                    "a grid of {groups:?} workgroups is {invocations} invocations: the kernel's u32 index arithmetic would wrap"
                ),
            });
        }
        let maxg = self.ctx.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > maxg) {
            return Err(GpuError::TooLarge {
                what: format!("{} dispatch {groups:?} workgroups", k.shader),
                bytes: groups.iter().copied().max().unwrap_or(0) as u64,
                limit: maxg as u64,
            });
        }
        if groups.contains(&0) {
            return Ok(());
        }
        // A kernel bound to f16 or quantized weights runs its variant for them (one format per
        // dispatch; activation textures are f32).
        let weights = buffers
            .iter()
            .find_map(|b| match b.texture {
                Some((_, f)) if f != WeightFormat::F32 => Some(f),
                _ => None,
            })
            .unwrap_or(WeightFormat::F32);
        let pipe = self.ctx.pipeline(k, weights)?;
        let offset = self.params.len() as u32;
        self.params.extend_from_slice(bytemuck::cast_slice(params));
        self.params.resize(offset as usize + PARAM_SLOT as usize, 0);
        self.cmds.push(Cmd::Dispatch {
            pipe,
            buffers: buffers.iter().map(|&b| b.clone()).collect(),
            offset,
            groups,
        });
        Ok(())
    }

    /// Copies `len` elements from `src[src_off..]` to `dst[dst_off..]`.
    pub fn copy(
        &mut self,
        src: &GpuBuffer,
        src_off: usize,
        dst: &GpuBuffer,
        dst_off: usize,
        len: usize,
    ) -> GpuResult<()> {
        if src_off + len > src.len() || dst_off + len > dst.len() || src.id() == dst.id() {
            return Err(GpuError::Shape {
                op: "copy",
                detail: format!(
                    "{len} elements from {src_off} of {} to {dst_off} of {} (distinct buffers)",
                    src.len(),
                    dst.len()
                ),
            });
        }
        if len > 0 {
            self.cmds.push(Cmd::Copy {
                src: src.clone(),
                src_off: src_off as u64 * 4,
                dst: dst.clone(),
                dst_off: dst_off as u64 * 4,
                size: len as u64 * 4,
            });
        }
        Ok(())
    }

    /// Copies `4 * texels` values of `src` from element `src_off` (a multiple of 4) into row
    /// `row` of the rgba32float texture `tex` (made with COPY_DST), texels 0..texels.
    pub(crate) fn copy_to_texture_row(
        &mut self,
        src: &GpuBuffer,
        src_off: usize,
        tex: &GpuBuffer,
        row: u32,
        texels: u32,
    ) -> GpuResult<()> {
        let t = match &tex.texture {
            Some((view, WeightFormat::F32)) => view.texture().clone(),
            _ => {
                return Err(GpuError::Unsupported(
                    "copy_to_texture_row: the target is not an rgba32float texture".into(),
                ))
            }
        };
        let size = t.size();
        let n = 4 * texels as usize;
        if !src_off.is_multiple_of(4)
            || src_off + n > src.len()
            || row >= size.height
            || texels > size.width
        {
            return Err(GpuError::Shape {
                op: "copy_to_texture_row",
                detail: format!(
                    "{n} values from {src_off} (a multiple of 4) of {} into row {row} of a \
                     {}x{} texture",
                    src.len(),
                    size.width,
                    size.height
                ),
            });
        }
        if texels > 0 {
            self.cmds.push(Cmd::CopyToTexture {
                src: src.clone(),
                src_off: src_off as u64 * 4,
                tex: t,
                row,
                texels,
            });
        }
        Ok(())
    }

    /// Zero-fills `buf`.
    pub fn clear(&mut self, buf: &GpuBuffer) {
        self.cmds.push(Cmd::Clear { buf: buf.clone() });
    }

    /// Encodes everything into one command buffer and submits it. With the profiler on, each
    /// dispatch gets its own timed pass (`ProfileClock::Timestamps`), or every command is
    /// submitted alone and timed on the host (`ProfileClock::Host`, native only).
    pub fn submit(self) -> GpuResult<()> {
        let ctx = self.ctx;
        ctx.check()?;
        if self.cmds.is_empty() {
            return Ok(());
        }
        let _guard = ctx.submit_guard();
        let (arena, generation) = ctx.arena(self.params.len() as u64);
        if !self.params.is_empty() {
            ctx.queue.write_buffer(&arena, 0, &self.params);
        }
        let bind_groups: Vec<Option<wgpu::BindGroup>> = self
            .cmds
            .iter()
            .map(|c| match c {
                Cmd::Dispatch { pipe, buffers, .. } => {
                    Some(ctx.bind_group(pipe, &arena, generation, buffers))
                }
                _ => None,
            })
            .collect();
        #[cfg(not(target_arch = "wasm32"))]
        if ctx.profiling() && ctx.profile_clock() == ProfileClock::Host {
            return self.submit_host_timed(&bind_groups);
        }
        let n_disp = bind_groups.iter().filter(|b| b.is_some()).count();
        let profiling = ctx.profiling() && n_disp > 0;
        let query_set = profiling.then(|| {
            ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: (2 * n_disp).min(MAX_QUERIES) as u32,
            })
        });
        let mut labels: Vec<&'static str> = Vec::new();
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("recorder"),
            });
        let mut i = 0;
        while i < self.cmds.len() {
            if !matches!(self.cmds[i], Cmd::Dispatch { .. }) {
                encode_transfer(&mut enc, &self.cmds[i]);
                i += 1;
                continue;
            }
            let timestamp_writes = match &query_set {
                Some(qs) if 2 * labels.len() + 2 <= MAX_QUERIES => {
                    Some(wgpu::ComputePassTimestampWrites {
                        query_set: qs,
                        beginning_of_pass_write_index: Some(2 * labels.len() as u32),
                        end_of_pass_write_index: Some(2 * labels.len() as u32 + 1),
                    })
                }
                _ => None,
            };
            let timed = timestamp_writes.is_some();
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes,
            });
            // One pass per run of dispatches; one per dispatch when timing.
            while let Some(cmd @ Cmd::Dispatch { pipe, .. }) = self.cmds.get(i) {
                if timed {
                    labels.push(pipe.name);
                }
                encode_dispatch(&mut pass, cmd, bind_groups[i].as_ref());
                i += 1;
                if profiling {
                    break;
                }
            }
        }
        let mut staging = None;
        if let (Some(qs), false) = (&query_set, labels.is_empty()) {
            let n = 2 * labels.len() as u32;
            let size = n as u64 * 8;
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp resolve"),
                size,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let st = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp staging"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            enc.resolve_query_set(qs, 0..n, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &st, 0, size);
            staging = Some(st);
        }
        ctx.queue.submit([enc.finish()]);
        ctx.after_submit();
        ctx.check()?;
        if let Some(st) = staging {
            ctx.push_profile(st, labels);
        }
        Ok(())
    }

    /// `ProfileClock::Host`: each command in a submission of its own, waited for, its wall
    /// time less an empty submission's added to its kernel's total (transfers under "copy",
    /// "copy_to_texture" and "clear").
    #[cfg(not(target_arch = "wasm32"))]
    fn submit_host_timed(&self, bind_groups: &[Option<wgpu::BindGroup>]) -> GpuResult<()> {
        let ctx = self.ctx;
        let base = ctx.host_submit_ms()?;
        for (cmd, bg) in self.cmds.iter().zip(bind_groups) {
            let t = std::time::Instant::now();
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            let label = match cmd {
                Cmd::Dispatch { pipe, .. } => {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    encode_dispatch(&mut pass, cmd, bg.as_ref());
                    pipe.name
                }
                transfer => encode_transfer(&mut enc, transfer),
            };
            ctx.queue.submit([enc.finish()]);
            ctx.wait_idle()?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            ctx.add_profile(label, (ms - base).max(0.0));
        }
        ctx.check()
    }
}

/// Records one dispatch command into `pass`.
fn encode_dispatch(pass: &mut wgpu::ComputePass, cmd: &Cmd, bind_group: Option<&wgpu::BindGroup>) {
    if let Cmd::Dispatch {
        pipe,
        offset,
        groups,
        ..
    } = cmd
    {
        pass.set_pipeline(&pipe.pipeline);
        pass.set_bind_group(0, bind_group, &[*offset]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
    }
}

/// Records one copy or clear into `enc` (dispatches go through [`encode_dispatch`] and record
/// nothing here); returns the name the host-clock profiler files it under.
fn encode_transfer(enc: &mut wgpu::CommandEncoder, cmd: &Cmd) -> &'static str {
    match cmd {
        Cmd::Dispatch { .. } => "dispatch",
        Cmd::Copy {
            src,
            src_off,
            dst,
            dst_off,
            size,
        } => {
            enc.copy_buffer_to_buffer(&src.buffer, *src_off, &dst.buffer, *dst_off, *size);
            "copy"
        }
        Cmd::Clear { buf } => {
            enc.clear_buffer(&buf.buffer, 0, None);
            "clear"
        }
        Cmd::CopyToTexture {
            src,
            src_off,
            tex,
            row,
            texels,
        } => {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &src.buffer,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: *src_off,
                        bytes_per_row: None,
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: tex,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: *row,
                        z: 0,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d {
                    width: *texels,
                    height: 1,
                    depth_or_array_layers: 1,
                },
            );
            "copy_to_texture"
        }
    }
}

/// Workgroup grid for `n` invocations of a 64-wide 1-D kernel, split over x and y so that no
/// dimension exceeds 65535 (shaders use id = gid.x + gid.y * nwg.x * 64).
pub(crate) fn grid64(n: u64) -> [u32; 3] {
    grid_groups(n.div_ceil(64))
}

/// Grid of `groups` workgroups split over x and y (shaders use wid.x + wid.y * nwg.x).
pub(crate) fn grid_groups(groups: u64) -> [u32; 3] {
    if groups == 0 {
        return [0, 1, 1];
    }
    let x = groups.min(65535);
    let y = groups.div_ceil(x);
    [x as u32, y.min(u32::MAX as u64) as u32, 1]
}
