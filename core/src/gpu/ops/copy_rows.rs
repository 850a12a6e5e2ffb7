use super::{kernel_params, words};
use crate::gpu::context::Kernel;
use crate::gpu::recorder::{grid64, Recorder};
use crate::gpu::GpuResult;

use super::View;

kernel_params! {
    /// The params of copy_rows.wgsl.
    pub(crate) struct CopyParams {
        t: u32,
        width: u32,
        src_stride: u32,
        src_off: u32,
        dst_stride: u32,
        dst_off: u32,
    }
}

const K: Kernel = Kernel {
    shader: "copy_rows",
    entry: "main",
    access: "rw",
    spec: "",
};

/// `dst[t, c] = src[t, c]` for `rows` rows of `width` (strided views; put the destination row
/// offset into `dst`, e.g. `View::dense(cache, w).rows_from(pos)` to append to a cache).
pub fn copy_rows(rec: &mut Recorder, rows: u32, width: u32, src: View, dst: View) -> GpuResult<()> {
    const OP: &str = "copy_rows";
    src.check(OP, "src", rows, width)?;
    dst.check(OP, "dst", rows, width)?;
    let params = CopyParams {
        t: rows,
        width,
        src_stride: src.stride,
        src_off: src.offset,
        dst_stride: dst.stride,
        dst_off: dst.offset,
    };
    rec.dispatch(
        &K,
        words(&params),
        &[src.buf, dst.buf],
        grid64(rows as u64 * width as u64),
    )
}
