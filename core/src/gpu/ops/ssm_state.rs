//! The SSM state of one layer, `[H, P, N]`, and where its newest value lives.
//!
//! The chunked scan and the memory converter read and write it as a storage buffer. Decode
//! keeps it in a pair of rgba32float textures instead (texel `(j, h*P + p)` holds
//! `S[h, p, 4j..4j+4]`): the step reads one and writes the other, because on CPU Vulkan an
//! image load is a vector gather and an image store a tight per-lane loop, ~2x faster together
//! than storage-buffer accesses (docs/performance-log.md, sessions 4 and 7). The value moves
//! between the two homes only when the kind of work changes: the first decode token after a
//! prefill, or a prefill after decode.

use crate::gpu::context::{GpuBuffer, GpuContext, Kernel, UNIFORM_STAGING_BYTES};
use crate::gpu::recorder::{grid64, Recorder};
use crate::gpu::weights::WeightFormat;
use crate::gpu::GpuResult;

use super::rows_to_texture::rows_to_texture;
use super::{kernel_params, words};
use super::{SsmDims, View};

kernel_params! {
    /// The params of texture_to_rows.wgsl.
    pub(crate) struct TextureToRowsParams {
        t: u32,
        k: u32,
        ldk4: u32,
        x_stride: u32,
        x_off: u32,
    }
}

const TEXTURE_TO_ROWS: Kernel = Kernel {
    shader: "texture_to_rows",
    entry: "main",
    access: "xw",
    spec: "",
};

/// Which copy of the state is the newest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Newest {
    Buffer,
    Texture(usize),
}

/// One layer's SSM state on the GPU. Clones share the buffers (a step's rollback keeps one).
#[derive(Clone)]
pub struct SsmState {
    dims: SsmDims,
    buffer: GpuBuffer,
    /// Created at the first decode step, when the shape fits (see [`SsmState::fits_textures`]).
    textures: Option<[GpuBuffer; 2]>,
    newest: Newest,
}

impl SsmState {
    /// A zero state (the state before any token).
    pub fn zeros(ctx: &GpuContext, dims: SsmDims) -> GpuResult<Self> {
        dims.check("ssm_state")?;
        Ok(Self {
            dims,
            buffer: ctx.zeros("ssm_state", dims.state_len() as usize)?,
            textures: None,
            newest: Newest::Buffer,
        })
    }

    /// Elements of the state (H * P * N), the size the cache accounting counts.
    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    pub fn dims(&self) -> SsmDims {
        self.dims
    }

    /// The state as a storage buffer, brought up to date first (recorded into `rec`) if decode
    /// left the newest value in a texture. Work recorded after this may read or write it.
    pub fn buffer(&mut self, rec: &mut Recorder) -> GpuResult<&GpuBuffer> {
        if let (Newest::Texture(k), Some(tex)) = (self.newest, &self.textures) {
            let d = self.dims;
            let (rows, n4) = (d.inner(), d.state / 4);
            let params = TextureToRowsParams {
                t: rows,
                k: d.state,
                ldk4: n4,
                x_stride: d.state,
                x_off: 0,
            };
            let groups = grid64(rows as u64 * n4 as u64);
            let bufs = [&tex[k], &self.buffer];
            rec.dispatch(&TEXTURE_TO_ROWS, words(&params), &bufs, groups)?;
            self.newest = Newest::Buffer;
        }
        Ok(&self.buffer)
    }

    /// Whether decode can keep this state in textures: N in whole texels, rows and texels
    /// within the adapter's texture size, and B and C together within the uniform staging
    /// buffer the step reads them from.
    pub(crate) fn fits_textures(&self, ctx: &GpuContext) -> bool {
        let d = self.dims;
        let maxd = ctx.limits.max_texture_dimension_2d;
        let bc_bytes = 2 * d.bc_width().next_multiple_of(4) as u64 * 4;
        d.state.is_multiple_of(4)
            && d.state / 4 <= maxd
            && d.inner() <= maxd
            && bc_bytes <= UNIFORM_STAGING_BYTES
    }

    /// For a decode step: `(texture holding the state, texture to write the next state to)`,
    /// the state moved into the first if it was newest in the buffer. The step recorded next
    /// must write the second: it is the newest from here on.
    pub(crate) fn step_textures(&mut self, rec: &mut Recorder) -> GpuResult<[GpuBuffer; 2]> {
        let d = self.dims;
        let (rows, n4) = (d.inner(), d.state / 4);
        let tex = match self.textures.take() {
            Some(t) => t,
            None => {
                let usage = wgpu::TextureUsages::STORAGE_BINDING;
                let make = || -> GpuResult<GpuBuffer> {
                    let f32 = WeightFormat::F32;
                    Ok(rec.ctx().new_texture("ssm_state", n4, rows, f32, usage)?.1)
                };
                [make()?, make()?]
            }
        };
        let tex = &*self.textures.insert(tex);
        let k = match self.newest {
            Newest::Texture(k) => k,
            Newest::Buffer => {
                let dense = View::dense(&self.buffer, d.state);
                rows_to_texture(rec, rows, d.state, dense, &tex[0], 0, 0)?;
                0
            }
        };
        self.newest = Newest::Texture(1 - k);
        Ok([tex[k].clone(), tex[1 - k].clone()])
    }
}
