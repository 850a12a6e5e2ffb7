//! One function per kernel: check shapes, pick the pipeline, bind, record the dispatch.
//!
//! Activations are f32 row-major; a [`View`] addresses rows of a buffer with a row stride and
//! an element offset (row offsets are folded into `offset`), so kernels read and write column
//! windows such as the x / B / C parts of an xBC' row without copies.
#![allow(clippy::too_many_arguments)]

mod attention;
mod attention_products;
mod conv1d;
mod copy_rows;
mod dt;
mod embedding;
mod gated_rms_norm;
mod matmul;
mod memory_converter;
mod rms_norm;
mod rows_to_texture;
pub use rows_to_texture::GateInputs;
mod ssd;
mod ssm_state;
mod swiglu;

pub use attention::{attention, attention_tiles_supported};
pub use attention_products::{attention_products, AttentionTextures};
pub use conv1d::conv1d;
pub use copy_rows::copy_rows;
pub use dt::dt_softplus;
pub use embedding::{embedding, embedding_of};
pub use gated_rms_norm::gated_rms_norm;
pub use matmul::{
    matmul, matmul_gated_normed, matmul_gated_normed_supported, matmul_normed,
    matmul_normed_supported, matmul_using, matvec_normed, matvec_normed_supported,
    matvec_quant_normed, matvec_quant_normed_supported, ConvStep, MatmulKernel, MATVEC_MAX_ROWS,
};
pub use memory_converter::memory_converter;
pub use rms_norm::rms_norm;
pub use ssd::{
    ssd_scan, ssm_sequential_scan, ssm_step, ssm_step_fuses_gate, RawDt, SsmInputs, StepGate,
};
pub use ssm_state::SsmState;
pub use swiglu::swiglu;

use super::context::GpuBuffer;

/// Declares a kernel family's params struct: `#[repr(C)]`, `Pod`, field for field its WGSL
/// `Params` (checked against naga's reading of each shader by `tests::params_mirror_the_wgsl`
/// through `FIELDS`).
macro_rules! kernel_params {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $(pub(crate) $field: $ty),*
        }

        impl $name {
            /// The field names, in order (the mirror test compares them with the WGSL's).
            #[cfg(test)]
            pub(crate) const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}
pub(crate) use kernel_params;

/// A kernel's params struct (`#[repr(C)]`, `Pod`, mirrored field for field by its WGSL
/// `Params`: `tests::params_structs_mirror_the_wgsl`) as the words [`Recorder::dispatch`]
/// uploads.
pub(crate) fn words<P: bytemuck::Pod>(p: &P) -> &[u32] {
    bytemuck::cast_slice(std::slice::from_ref(p))
}
use super::error::{GpuError, GpuResult};

/// Rows of `buf`: element (r, c) is `buf[offset + r * stride + c]`.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub buf: &'a GpuBuffer,
    pub stride: u32,
    pub offset: u32,
}

impl<'a> View<'a> {
    pub fn new(buf: &'a GpuBuffer, stride: u32, offset: u32) -> Self {
        Self {
            buf,
            stride,
            offset,
        }
    }
    /// A dense [rows, width] buffer.
    pub fn dense(buf: &'a GpuBuffer, width: u32) -> Self {
        Self {
            buf,
            stride: width,
            offset: 0,
        }
    }
    /// The same view starting `rows` rows further down. Saturates instead of wrapping: an
    /// offset past u32 (kernels index in u32) then fails [`View::check`], never aliases.
    pub fn rows_from(self, rows: u32) -> Self {
        Self {
            offset: self.offset.saturating_add(rows.saturating_mul(self.stride)),
            ..self
        }
    }
    /// The same view starting `cols` columns to the right (saturating, as [`View::rows_from`]).
    pub fn cols_from(self, cols: u32) -> Self {
        Self {
            offset: self.offset.saturating_add(cols),
            ..self
        }
    }

    /// Stride and offset multiples of 4: rows start on vec4 boundaries (the `_vec4` kernels).
    pub(crate) fn vec4_aligned(&self) -> bool {
        self.stride.is_multiple_of(4) && self.offset.is_multiple_of(4)
    }

    /// `next`'s columns start `cols` columns after this view's, in the same rows of the same
    /// buffer (e.g. x, B and C within one xBC' row), so the two can be read as one.
    pub(crate) fn continues_into(&self, next: View, cols: u32) -> bool {
        self.buf.id() == next.buf.id()
            && self.stride == next.stride
            && next.offset == self.offset + cols
    }

    /// Checks that `rows` rows of `width` elements lie inside the buffer.
    pub(crate) fn check(
        &self,
        op: &'static str,
        name: &str,
        rows: u32,
        width: u32,
    ) -> GpuResult<()> {
        if rows == 0 || width == 0 {
            return Ok(());
        }
        let end = self.offset as u64 + (rows as u64 - 1) * self.stride as u64 + width as u64;
        // Kernels index in u32: the last element must be addressable (and inside the buffer).
        if end > self.buf.len() as u64 || end > u32::MAX as u64 || (rows > 1 && self.stride < width)
        {
            return Err(GpuError::Shape {
                op,
                detail: format!(
                    "{name}: [{rows}, {width}] at offset {} stride {} does not fit a buffer of {} elements",
                    self.offset,
                    self.stride,
                    self.buf.len()
                ),
            });
        }
        Ok(())
    }
}

/// SSM / attention sizes: H heads of P channels, state size N, G groups of B / C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SsmDims {
    pub heads: u32,
    pub head_dim: u32,
    pub state: u32,
    pub groups: u32,
}

impl SsmDims {
    pub(crate) fn check(&self, op: &'static str) -> GpuResult<()> {
        let ok = self.heads > 0
            && self.head_dim > 0
            && self.state > 0
            && self.groups > 0
            && self.heads.is_multiple_of(self.groups);
        super::error::ensure(op, ok, || {
            format!("invalid dims {self:?} (need H % G == 0, all > 0)")
        })?;
        // H·P·N (the state) and G·N, which kernels compute in u32, must not wrap.
        let state = self.heads as u64 * self.head_dim as u64 * self.state as u64;
        let bc = self.groups as u64 * self.state as u64;
        super::error::ensure(
            op,
            state <= u32::MAX as u64 && bc <= u32::MAX as u64,
            || format!("dims {self:?}: H·P·N = {state} exceeds the kernels' u32 indices"),
        )
    }
    /// H * P.
    pub fn inner(&self) -> u32 {
        self.heads * self.head_dim
    }
    /// G * N.
    pub fn bc_width(&self) -> u32 {
        self.groups * self.state
    }
    /// H * P * N, the state size.
    pub fn state_len(&self) -> u32 {
        self.heads * self.head_dim * self.state
    }
}

pub(crate) fn need_len(op: &'static str, name: &str, buf: &GpuBuffer, len: u64) -> GpuResult<()> {
    super::error::ensure(op, buf.len() as u64 >= len, || {
        format!("{name}: needs {len} elements, buffer has {}", buf.len())
    })
}

/// Byte size and member names of shader `name`'s `Params` struct, as naga reads it.
#[cfg(test)]
pub(crate) fn wgsl_params(name: &str) -> (usize, Vec<String>) {
    let src = crate::gpu::shaders::shader_variant(
        name,
        crate::gpu::WeightFormat::F32,
        crate::gpu::weights::QuantRows::Plain,
    )
    .expect("registered shader");
    let module = naga::front::wgsl::parse_str(&src).expect("parses");
    let (_, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Params"))
        .expect("a Params struct");
    match &ty.inner {
        naga::TypeInner::Struct { members, span } => (
            *span as usize,
            members.iter().filter_map(|m| m.name.clone()).collect(),
        ),
        other => panic!("{name}: Params is {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks P against each shader that declares it: byte size and field names in order;
    /// records the shaders in `checked`.
    fn check<P>(checked: &mut Vec<&'static str>, shaders: &[&'static str], fields: &[&str]) {
        for name in shaders {
            let (span, members) = wgsl_params(name);
            assert_eq!(span, size_of::<P>(), "{name}: WGSL Params size vs Rust");
            assert_eq!(members, fields, "{name}: field names and order");
            checked.push(name);
        }
    }

    /// Every flat params struct against its shaders (the products' nested ones are checked
    /// in `matmul::tests`), and no shader with a `Params` struct left out.
    #[test]
    fn params_mirror_the_wgsl() {
        use attention::AttentionParams as Att;
        use attention_products::{ColumnsParams as Cols, SoftmaxParams as Soft};
        use conv1d::ConvParams as Conv;
        use copy_rows::CopyParams as Copy;
        use dt::DtParams as Dt;
        use embedding::EmbeddingParams as Emb;
        use gated_rms_norm::GatedNormParams as Gated;
        use rms_norm::RmsNormParams as Rms;
        use rows_to_texture::{GatedRowsParams as GatedRows, RowsToTextureParams as Rows};
        use ssd::{SsdParams as Ssd, StepTexParams as Step};
        use ssm_state::TextureToRowsParams as T2r;
        use swiglu::SwigluParams as Swiglu;
        let c = &mut Vec::new();
        let attention = [
            "attention",
            "attention_sg",
            "attention_vec4_sg",
            "attention_tiles",
        ];
        check::<Att>(c, &attention, Att::FIELDS);
        check::<Cols>(c, &["columns_to_texture"], Cols::FIELDS);
        check::<Soft>(c, &["attention_softmax"], Soft::FIELDS);
        check::<Conv>(c, &["conv1d", "conv1d_vec4"], Conv::FIELDS);
        check::<Copy>(c, &["copy_rows"], Copy::FIELDS);
        check::<Dt>(c, &["dt"], Dt::FIELDS);
        check::<Emb>(c, &["embedding"], Emb::FIELDS);
        check::<Gated>(c, &["gated_rms_norm", "gated_rms_norm_vec4"], Gated::FIELDS);
        check::<Rms>(c, &["rms_norm", "rms_norm_vec4"], Rms::FIELDS);
        check::<Rows>(
            c,
            &["rows_to_texture", "rows_to_texture_vec4"],
            Rows::FIELDS,
        );
        check::<GatedRows>(c, &["gated_rows_to_texture"], GatedRows::FIELDS);
        check::<T2r>(c, &["texture_to_rows"], T2r::FIELDS);
        check::<Swiglu>(c, &["swiglu"], Swiglu::FIELDS);
        let ssd = [
            "ssd_cumsum",
            "ssd_chunk_state",
            "ssd_chunk_state_sg",
            "ssd_chunk_state_xtex_sg",
            "ssd_chunk_state_tiles",
            "ssd_state_passing",
            "ssd_state_passing_sg",
            "ssd_chunk_scan",
            "ssd_chunk_scan_sg",
            "ssd_chunk_scan_xtex_sg",
            "ssd_chunk_scan_tiles",
            "ssm_sequential_scan",
            "ssm_step",
        ];
        check::<Ssd>(c, &ssd, Ssd::FIELDS);
        check::<Step>(c, &["ssm_step_tex", "ssm_step_wide"], Step::FIELDS);
        // The products (matmul::tests): their Params come from the file or its include.
        c.extend([
            "matmul",
            "matmul_sg",
            "matmul_tiles",
            "matvec_f16",
            "matmul_xtex_sg",
            "matvec",
            "matvec_quant",
            "matvec_split_k",
        ]);
        let unchecked: Vec<&str> = crate::gpu::shaders::SHADERS
            .iter()
            .filter(|s| !c.contains(&s.name))
            .filter(|s| {
                let src = crate::gpu::shaders::shader_variant(
                    s.name,
                    crate::gpu::WeightFormat::F32,
                    crate::gpu::weights::QuantRows::Plain,
                );
                src.is_some_and(|src| src.contains("struct Params"))
            })
            .map(|s| s.name)
            .collect();
        assert!(unchecked.is_empty(), "params not mirrored: {unchecked:?}");
    }
}
