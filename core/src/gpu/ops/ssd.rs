//! The SSM scans: chunked SSD (prefill), one-token step (decode), sequential baseline.

use crate::gpu::context::{GpuBuffer, GpuContext, Kernel};
use crate::gpu::error::{ensure, GpuError};
use crate::gpu::recorder::{grid64, grid_groups, Recorder};
use crate::gpu::GpuResult;

use super::dt::finite_limits;
use super::rows_to_texture::rows_to_texture;
use super::{kernel_params, need_len, words, SsmDims, SsmState, View};

pub(crate) const CUMSUM: Kernel = Kernel {
    shader: "ssd_cumsum",
    entry: "main",
    access: "rrw",
    spec: "",
};
pub(crate) const CHUNK_STATE: Kernel = Kernel {
    shader: "ssd_chunk_state",
    entry: "main",
    access: "rrrrw",
    spec: "",
};
/// The `gpu` plan's chunk states: 32 x 32 (p, n) tiles of one (chunk, head) through workgroup
/// memory.
const CHUNK_STATE_TILES: Kernel = Kernel {
    shader: "ssd_chunk_state_tiles",
    ..CHUNK_STATE
};
/// Subgroup versions (8-wide subgroups only: the `cpu-adapter` plan): the same results
/// with 16 MACs per storage load instead of 1/4 .. 1/2 (on lavapipe a storage load costs a
/// per-lane loop, a subgroupBroadcast a register move).
pub(crate) const CHUNK_STATE_SG: Kernel = Kernel {
    shader: "ssd_chunk_state_sg",
    entry: "main",
    access: "rrrrw",
    spec: "",
};
/// `CHUNK_STATE_SG` reading x and B from the segment's packed x|B|C texture.
const CHUNK_STATE_XTEX_SG: Kernel = Kernel {
    shader: "ssd_chunk_state_xtex_sg",
    entry: "main",
    access: "xrrw",
    spec: "",
};
/// `SCAN_SG` reading x and C from the segment's packed x|B|C texture.
const SCAN_XTEX_SG: Kernel = Kernel {
    shader: "ssd_chunk_scan_xtex_sg",
    entry: "main",
    access: "xrrrrw",
    spec: "",
};
const STATE_PASSING_SG: Kernel = Kernel {
    shader: "ssd_state_passing_sg",
    entry: "main",
    access: "rww",
    spec: "",
};
const CB_SG: Kernel = Kernel {
    shader: "ssd_chunk_scan_sg",
    entry: "cb",
    access: SCAN_ACCESS,
    spec: "",
};
const SCAN_SG: Kernel = Kernel {
    shader: "ssd_chunk_scan_sg",
    entry: "scan",
    access: SCAN_ACCESS,
    spec: "",
};
/// Tile edge of the `_sg` SSD kernels.
const SG_TILE: u32 = 32;
pub(crate) const STATE_PASSING: Kernel = Kernel {
    shader: "ssd_state_passing",
    entry: "main",
    access: "rww",
    spec: "",
};
const SCAN_ACCESS: &str = "rrrrrrww";
const CB: Kernel = Kernel {
    shader: "ssd_chunk_scan",
    entry: "cb",
    access: SCAN_ACCESS,
    spec: "",
};
const LMAT: Kernel = Kernel {
    shader: "ssd_chunk_scan",
    entry: "lmat",
    access: SCAN_ACCESS,
    spec: "",
};
/// The `gpu` plan's output step: 32 x 32 (t, p) tiles through workgroup memory.
const SCAN_TILES: Kernel = Kernel {
    shader: "ssd_chunk_scan_tiles",
    entry: "scan",
    access: SCAN_ACCESS,
    spec: "",
};
const SCAN: Kernel = Kernel {
    shader: "ssd_chunk_scan",
    entry: "scan",
    access: SCAN_ACCESS,
    spec: "",
};
const STEP: Kernel = Kernel {
    shader: "ssm_step",
    entry: "main",
    access: "rrrrrww",
    spec: "",
};
/// `STEP` with the state in a texture pair and B, C in the uniform staging buffer.
const STEP_TEX: Kernel = Kernel {
    shader: "ssm_step_tex",
    entry: "main",
    access: "rurrxowrrr",
    spec: "",
};
/// `STEP_TEX` applying dt = clamp(softplus(raw + dt_bias), lo, hi) itself.
const STEP_TEX_RAW_DT: Kernel = Kernel {
    spec: "RAW_DT=1",
    ..STEP_TEX
};
/// `STEP_TEX` writing (y + D x) * silu(z) (see [`StepGate`]).
const STEP_TEX_GATE: Kernel = Kernel {
    spec: "GATE=1",
    ..STEP_TEX
};
const STEP_TEX_RAW_DT_GATE: Kernel = Kernel {
    spec: "RAW_DT=1;GATE=1",
    ..STEP_TEX
};
/// The `gpu` plan's decode step (ssm_step_wide.wgsl: 8 lanes a state row, in place on the
/// buffer), indexed `[raw dt][gate]`.
const STEP_WIDE: [[Kernel; 2]; 2] = {
    const fn k(spec: &'static str) -> Kernel {
        Kernel {
            shader: "ssm_step_wide",
            entry: "main",
            access: "rurrwwrrr",
            spec,
        }
    }
    [[k(""), k("GATE=1")], [k("RAW_DT=1"), k("RAW_DT=1;GATE=1")]]
};
const SEQ: Kernel = Kernel {
    shader: "ssm_sequential_scan",
    entry: "main",
    access: "rrrrrww",
    spec: "",
};

/// Rows per SSD segment at most (bounds the scratch memory; segments chain through the state).
const MAX_SEGMENT: u32 = 2048;

/// The per-token SSM inputs: x `[T, H*P]`, B `[T, G*N]`, C `[T, G*N]`, dt `[T, H]`, and
/// A_log `[H]`.
#[derive(Clone, Copy, Debug)]
pub struct SsmInputs<'a> {
    pub x: View<'a>,
    pub b: View<'a>,
    pub c: View<'a>,
    pub dt: View<'a>,
    pub a_log: &'a GpuBuffer,
}

impl SsmInputs<'_> {
    fn check(&self, op: &'static str, d: &SsmDims, rows: u32) -> GpuResult<()> {
        self.x.check(op, "x", rows, d.inner())?;
        self.b.check(op, "B", rows, d.bc_width())?;
        self.c.check(op, "C", rows, d.bc_width())?;
        self.dt.check(op, "dt", rows, d.heads)?;
        need_len(op, "A_log", self.a_log, d.heads as u64)
    }
}

kernel_params! {
/// The params every ssd_* / ssm_sequential_scan / ssm_step shader declares, field for field.
pub(crate) struct SsdParams {
    t: u32,
    h: u32,
    p: u32,
    n: u32,
    g: u32,
    q: u32,
    nc: u32,
    x_stride: u32,
    x_off: u32,
    b_stride: u32,
    b_off: u32,
    c_stride: u32,
    c_off: u32,
    dt_stride: u32,
    dt_off: u32,
    y_stride: u32,
    y_off: u32,
    l_off: u32,
}
}

/// [`SsdParams`] for `rows` rows in chunks of `q` (`nc` of them), the views' strides and
/// offsets, and the CL scratch's offset `l_off`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn params(
    d: &SsmDims,
    rows: u32,
    q: u32,
    nc: u32,
    x: View,
    b: View,
    c: View,
    dt: View,
    y: View,
    l_off: u32,
) -> SsdParams {
    SsdParams {
        t: rows,
        h: d.heads,
        p: d.head_dim,
        n: d.state,
        g: d.groups,
        q,
        nc,
        x_stride: x.stride,
        x_off: x.offset,
        b_stride: b.stride,
        b_off: b.offset,
        c_stride: c.stride,
        c_off: c.offset,
        dt_stride: dt.stride,
        dt_off: dt.offset,
        y_stride: y.stride,
        y_off: y.offset,
        l_off,
    }
}

kernel_params! {
/// ssm_step_tex.wgsl's params.
pub(crate) struct StepTexParams {
    h: u32,
    p: u32,
    n: u32,
    g: u32,
    x_off: u32,
    dt_off: u32,
    y_off: u32,
    c4: u32,
    lo: f32,
    hi: f32,
    z_off: u32,
    bc_in_x: u32,
    b_off: u32,
    c_off: u32,
}
}

/// Rows per segment so that every scratch buffer fits one binding.
pub(crate) fn segment_rows(
    ctx: &GpuContext,
    op: &'static str,
    d: &SsmDims,
    rows: u32,
    q: u32,
    with_cl: bool,
) -> GpuResult<u32> {
    let maxe = ctx.max_binding_size() / 4;
    let hpn = d.state_len() as u64;
    let mut s = (maxe / hpn) * q as u64;
    s = s.min(maxe / d.heads as u64);
    if with_cl {
        s = s.min(maxe / (q as u64 * (d.groups + d.heads) as u64));
    }
    s = s.min(MAX_SEGMENT.max(q) as u64);
    s -= s % q as u64;
    if s < q as u64 {
        return Err(GpuError::TooLarge {
            what: format!("{op}: scratch for chunk size {q}"),
            bytes: 4 * (hpn.max(q as u64 * (d.groups + d.heads) as u64)),
            limit: ctx.max_binding_size(),
        });
    }
    Ok((s as u32).min(rows))
}

/// Chunk-local cumulative decay, per-chunk states and state passing for one segment:
/// `state` goes from the state before the segment to the state after it, and `states` ends up
/// holding each chunk's initial state. Shared by [`ssd_scan`] and the memory converter.
/// `xtex`: the segment's x|B|C rows packed by [`pack_xbc`] (subgroup kernels only).
pub(crate) fn segment_states(
    rec: &mut Recorder,
    d: &SsmDims,
    p: &SsdParams,
    nc: u32,
    inp: (View, View, View, &GpuBuffer),
    xtex: Option<&GpuBuffer>,
    state: &GpuBuffer,
    acs: &GpuBuffer,
    states: &GpuBuffer,
) -> GpuResult<()> {
    let (x, b, dt, a_log) = inp;
    let hpn = d.state_len() as u64;
    rec.dispatch(
        &CUMSUM,
        words(p),
        &[dt.buf, a_log, acs],
        grid64(nc as u64 * d.heads as u64),
    )?;
    let bufs = [x.buf, b.buf, dt.buf, acs, states];
    if rec.ctx().plan().subgroup8_kernels() {
        let grid = [
            d.head_dim.div_ceil(SG_TILE) * d.state.div_ceil(SG_TILE),
            d.heads,
            nc,
        ];
        match xtex {
            Some(xt) => rec.dispatch(
                &CHUNK_STATE_XTEX_SG,
                words(p),
                &[xt, dt.buf, acs, states],
                grid,
            )?,
            None => rec.dispatch(&CHUNK_STATE_SG, words(p), &bufs, grid)?,
        }
    } else if rec.ctx().plan().gpu_products() {
        // MAX_SEGMENT bounds the chunks of a segment (2048) below any workgroup-count limit.
        let grid = [d.head_dim.div_ceil(32) * d.state.div_ceil(32), d.heads, nc];
        rec.dispatch(&CHUNK_STATE_TILES, words(p), &bufs, grid)?;
    } else {
        rec.dispatch(&CHUNK_STATE, words(p), &bufs, grid64(nc as u64 * hpn))?;
    }
    // The subgroup kernel runs its 8 chunks per step unmasked-cost (CPU Vulkan executes masked
    // blocks too), so it only pays from 8 chunks on.
    if rec.ctx().plan().subgroup8_kernels() && (d.head_dim * d.state).is_multiple_of(8) && nc >= 8 {
        rec.dispatch(
            &STATE_PASSING_SG,
            words(p),
            &[acs, states, state],
            grid64(hpn),
        )
    } else {
        rec.dispatch(&STATE_PASSING, words(p), &[acs, states, state], grid64(hpn))
    }
}

/// Packs `rows` rows of x | B (| C) into the activation texture for the `_xtex_sg` kernels
/// (texel columns: x from 0, B from H*P/4, C from (H*P + G*N)/4), where they apply: 8-wide
/// subgroups, P and N multiples of 4, the rows within a texture. One dispatch when the parts
/// are adjacent columns of one buffer (an xBC' row), one per part otherwise. `None` where the
/// kernels do not apply.
pub(crate) fn pack_xbc(
    rec: &mut Recorder,
    d: &SsmDims,
    rows: u32,
    x: View,
    b: View,
    c: Option<View>,
) -> GpuResult<Option<GpuBuffer>> {
    let (hp, gn) = (d.inner(), d.bc_width());
    let width = hp + gn + c.map_or(0, |_| gn);
    let maxd = rec.ctx().limits.max_texture_dimension_2d;
    let fits = d.head_dim.is_multiple_of(4) && d.state.is_multiple_of(4) && width / 4 <= maxd;
    if !(rec.ctx().plan().subgroup8_kernels() && fits && rows <= maxd && rows > 0) {
        return Ok(None);
    }
    let xt = rec.ctx().x_texture(width / 4, rows)?;
    let parts: Vec<(View, u32, u32)> = match c {
        Some(c) if x.continues_into(b, hp) && b.continues_into(c, gn) => vec![(x, width, 0)],
        Some(c) => vec![(x, hp, 0), (b, gn, hp / 4), (c, gn, (hp + gn) / 4)],
        None if x.continues_into(b, hp) => vec![(x, width, 0)],
        None => vec![(x, hp, 0), (b, gn, hp / 4)],
    };
    for (v, k, col0) in parts {
        rows_to_texture(rec, rows, k, v, &xt, 0, col0)?;
    }
    Ok(Some(xt))
}

/// Chunked SSD scan (Mamba2) over `rows` tokens with chunk size `chunk` (any >= 1):
/// `S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t`, `y_t = S_t C_t` (no D skip), A = -exp(A_log).
/// `state` [H, P, N] holds S_{-1} on entry (any value) and the final state on exit.
/// `y`: [rows, H*P], must not share a buffer with the inputs.
pub fn ssd_scan(
    rec: &mut Recorder,
    d: SsmDims,
    rows: u32,
    inp: &SsmInputs,
    state: &GpuBuffer,
    y: View,
    chunk: u32,
) -> GpuResult<()> {
    const OP: &str = "ssd_scan";
    d.check(OP)?;
    ensure(OP, chunk >= 1, || "chunk size 0".into())?;
    inp.check(OP, &d, rows)?;
    y.check(OP, "y", rows, d.inner())?;
    need_len(OP, "state", state, d.state_len() as u64)?;
    if rows == 0 {
        return Ok(());
    }
    let q = chunk.min(rows);
    let seg = segment_rows(rec.ctx(), OP, &d, rows, q, true)?;
    let ctx = rec.ctx();
    let acs = ctx.scratch("ssd_acs", seg as usize * d.heads as usize)?;
    let states = ctx.scratch(
        "ssd_states",
        seg.div_ceil(q) as usize * d.state_len() as usize,
    )?;
    let cl = ctx.scratch(
        "ssd_cl",
        seg as usize * q as usize * (d.groups + d.heads) as usize,
    )?;
    let mut r0 = 0;
    while r0 < rows {
        let len = seg.min(rows - r0);
        let nc = len.div_ceil(q);
        let (x, b, c, dt, ys) = (
            inp.x.rows_from(r0),
            inp.b.rows_from(r0),
            inp.c.rows_from(r0),
            inp.dt.rows_from(r0),
            y.rows_from(r0),
        );
        let p = params(&d, len, q, nc, x, b, c, dt, ys, len * q * d.groups);
        let xt = pack_xbc(rec, &d, len, x, b, Some(c))?;
        let inputs = (x, b, dt, inp.a_log);
        segment_states(rec, &d, &p, nc, inputs, xt.as_ref(), state, &acs, &states)?;
        let bufs = [x.buf, b.buf, c.buf, dt.buf, &acs, &states, &cl, ys.buf];
        if rec.ctx().plan().subgroup8_kernels() {
            let qt = q.div_ceil(SG_TILE);
            rec.dispatch(&CB_SG, words(&p), &bufs, [qt * qt, d.groups, nc])?;
            // L is formed inside the scan kernel (no lmat pass).
            let tiles = q.div_ceil(SG_TILE) * d.head_dim.div_ceil(SG_TILE);
            match &xt {
                Some(xt) => {
                    let bufs = [xt, dt.buf, &acs, &states, &cl, ys.buf];
                    rec.dispatch(&SCAN_XTEX_SG, words(&p), &bufs, [tiles, d.heads, nc])?
                }
                None => rec.dispatch(&SCAN_SG, words(&p), &bufs, [tiles, d.heads, nc])?,
            }
        } else {
            rec.dispatch(
                &CB,
                words(&p),
                &bufs,
                grid64(len as u64 * q as u64 * d.groups as u64),
            )?;
            rec.dispatch(
                &LMAT,
                words(&p),
                &bufs,
                grid64(len as u64 * q as u64 * d.heads as u64),
            )?;
            if rec.ctx().plan().gpu_products() {
                let grid = [nc * q.div_ceil(32), d.heads, d.head_dim.div_ceil(32)];
                rec.dispatch(&SCAN_TILES, words(&p), &bufs, grid)?;
            } else {
                let grid = grid64(len as u64 * d.inner() as u64);
                rec.dispatch(&SCAN, words(&p), &bufs, grid)?;
            }
        }
        r0 += len;
    }
    Ok(())
}

/// Baseline: the same contract as [`ssd_scan`], one token at a time (one invocation per (h, p)
/// lane with its state row in registers). For benchmarks and tests; N <= 256.
pub fn ssm_sequential_scan(
    rec: &mut Recorder,
    d: SsmDims,
    rows: u32,
    inp: &SsmInputs,
    state: &GpuBuffer,
    y: View,
) -> GpuResult<()> {
    const OP: &str = "ssm_sequential_scan";
    d.check(OP)?;
    ensure(OP, d.state <= 256, || {
        format!("state size {} > 256", d.state)
    })?;
    inp.check(OP, &d, rows)?;
    y.check(OP, "y", rows, d.inner())?;
    need_len(OP, "state", state, d.state_len() as u64)?;
    if rows == 0 {
        return Ok(());
    }
    let p = params(&d, rows, 1, 0, inp.x, inp.b, inp.c, inp.dt, y, 0);
    let bufs = [
        inp.x.buf, inp.b.buf, inp.c.buf, inp.dt.buf, inp.a_log, state, y.buf,
    ];
    rec.dispatch(&SEQ, words(&p), &bufs, grid64(d.inner() as u64))
}

/// dt not yet through MODEL.md step 3: [`ssm_step`] applies
/// `clamp(softplus(raw + bias), lo, hi)` itself (decode fuses the dt dispatch into the step).
pub struct RawDt<'a> {
    pub bias: &'a GpuBuffer,
    pub lo: f32,
    pub hi: f32,
}

/// MODEL.md steps 5-6 short of the norm, applied by [`ssm_step`] to its output:
/// `y = (y + D[h] x) * silu(z)`, D `[H]`, z row 0 of a `[T, H*P]` view.
pub struct StepGate<'a> {
    pub d: &'a GpuBuffer,
    pub z: View<'a>,
}

/// Whether [`ssm_step`] keeps `state` in textures on this device (only then does it take a
/// [`StepGate`]).
pub fn ssm_step_fuses_gate(ctx: &crate::gpu::GpuContext, state: &SsmState) -> bool {
    state.fits_textures(ctx)
}

/// One decode token (row 0 of each view): `S = exp(dt A) S + dt x B`, `y = S C` into row 0
/// of `y` (with `raw_dt`, `inp.dt` is in_proj's raw dt: see [`RawDt`]). Where the shape fits
/// (B and C copied into the uniform staging buffer), the `gpu` plan steps in place on the
/// state buffer with 8 lanes a row (ssm_step_wide) and the other plans keep the state in its
/// texture pair from token to token (ssm_step_tex); else the buffer kernel (ssm_step).
pub fn ssm_step(
    rec: &mut Recorder,
    d: SsmDims,
    inp: &SsmInputs,
    state: &mut SsmState,
    y: View,
    raw_dt: Option<RawDt>,
    gate: Option<StepGate>,
) -> GpuResult<()> {
    const OP: &str = "ssm_step";
    d.check(OP)?;
    ensure(OP, state.dims() == d, || {
        format!("state of {:?} for dims {d:?}", state.dims())
    })?;
    inp.check(OP, &d, 1)?;
    y.check(OP, "y", 1, d.inner())?;
    if let Some(r) = &raw_dt {
        need_len(OP, "dt_bias", r.bias, d.heads as u64)?;
    }
    if let Some(g) = &gate {
        need_len(OP, "D", g.d, d.heads as u64)?;
        g.z.check(OP, "z", 1, d.inner())?;
    }
    if !state.fits_textures(rec.ctx()) {
        // The storage kernel has no binding left for the gate (8 storage buffers at most).
        ensure(OP, gate.is_none(), || {
            "a gate needs the texture state (see ssm_step_fuses_gate)".to_string()
        })?;
        // Storage fallback: dt into a scratch row first.
        let dt_buf;
        let mut dt = inp.dt;
        if let Some(r) = &raw_dt {
            dt_buf = rec.ctx().scratch("ssm_step.dt", d.heads as usize)?;
            dt = View::dense(&dt_buf, d.heads);
            super::dt_softplus(rec, 1, d.heads, inp.dt, r.bias, dt, r.lo, r.hi)?;
        }
        let p = params(&d, 1, 1, 0, inp.x, inp.b, inp.c, dt, y, 0);
        let sb = state.buffer(rec)?.clone();
        let bufs = [
            inp.x.buf, inp.b.buf, inp.c.buf, dt.buf, inp.a_log, &sb, y.buf,
        ];
        return rec.dispatch(&STEP, words(&p), &bufs, grid64(d.inner() as u64));
    }
    // B at vec4 0 of the staging buffer, C at vec4 c4; on the gpu plan, where B and C share
    // x's buffer (decode's xBC' row), ssm_step_wide reads them there and no copy is made (a
    // transfer between compute passes, one a layer and token).
    let gn = d.bc_width();
    let c4 = gn.div_ceil(4);
    let st = rec.ctx().uniform_staging();
    let (b, c) = (inp.b, inp.c);
    let wide = rec.ctx().plan().gpu_products();
    let bc_in_x = wide && b.buf.id() == inp.x.buf.id() && c.buf.id() == inp.x.buf.id();
    if !bc_in_x {
        if b.continues_into(c, gn) && gn.is_multiple_of(4) {
            // B and C adjacent (an xBC' row): one copy.
            rec.copy(b.buf, b.offset as usize, &st, 0, 2 * gn as usize)?;
        } else {
            rec.copy(b.buf, b.offset as usize, &st, 0, gn as usize)?;
            rec.copy(c.buf, c.offset as usize, &st, 4 * c4 as usize, gn as usize)?;
        }
    }
    let textures = if wide {
        None
    } else {
        Some(state.step_textures(rec)?)
    };
    let (lo, hi) = raw_dt
        .as_ref()
        .map_or((0.0, 0.0), |r| finite_limits(r.lo, r.hi));
    let p = StepTexParams {
        h: d.heads,
        p: d.head_dim,
        n: d.state,
        g: d.groups,
        x_off: inp.x.offset,
        dt_off: inp.dt.offset,
        y_off: y.offset,
        c4,
        lo,
        hi,
        z_off: gate.as_ref().map_or(0, |g| g.z.offset),
        bc_in_x: bc_in_x as u32,
        b_off: b.offset,
        c_off: c.offset,
    };
    let dummy = rec.ctx().dummy().clone();
    let bias = raw_dt.as_ref().map_or(&dummy, |r| r.bias);
    let (dskip, z) = gate.as_ref().map_or((&dummy, &dummy), |g| (g.d, g.z.buf));
    let Some([s_in, s_out]) = textures else {
        // The gpu plan: in place on the state buffer, 8 lanes a row.
        let k = &STEP_WIDE[raw_dt.is_some() as usize][gate.is_some() as usize];
        let sb = state.buffer(rec)?.clone();
        let bufs = [
            inp.x.buf, &st, inp.dt.buf, inp.a_log, &sb, y.buf, bias, dskip, z,
        ];
        let groups = grid_groups((d.inner() as u64).div_ceil(8));
        return rec.dispatch(k, words(&p), &bufs, groups);
    };
    let k = match (&raw_dt, &gate) {
        (Some(_), Some(_)) => &STEP_TEX_RAW_DT_GATE,
        (Some(_), None) => &STEP_TEX_RAW_DT,
        (None, Some(_)) => &STEP_TEX_GATE,
        (None, None) => &STEP_TEX,
    };
    let bufs = [
        inp.x.buf, &st, inp.dt.buf, inp.a_log, &s_in, &s_out, y.buf, bias, dskip, z,
    ];
    rec.dispatch(k, words(&p), &bufs, grid64(d.inner() as u64))
}
