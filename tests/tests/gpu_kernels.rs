//! Every GPU op against a naive f64 CPU computation, on every kernel plan (the contexts the
//! end-to-end tests share, `transmamba_tests::plan_contexts`). Needs a WebGPU adapter
//! (lavapipe works): without one these tests fail, they never skip.

use std::sync::{Arc, OnceLock};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use transmamba::gpu::*;
use transmamba_tests::plan_contexts;
use transmamba_tests::reference64::rope;

fn new_ctx(opts: GpuOptions) -> GpuContext {
    GpuContext::new_blocking(opts).unwrap_or_else(|e| {
        panic!("GPU kernel tests need a WebGPU adapter (e.g. `apt-get install mesa-vulkan-drivers` for lavapipe): {e}")
    })
}

/// Context `i` of the shared [`plan_contexts`] (which checks each runs its plan): 0 the
/// adapter's default (cpu-adapter on lavapipe), 1 gpu, 2 gpu without subgroups, 3 portable.
fn plan_ctx(i: usize) -> &'static GpuContext {
    static CTXS: OnceLock<Vec<Arc<GpuContext>>> = OnceLock::new();
    CTXS.get_or_init(|| plan_contexts().into_iter().map(|(_, c)| c).collect())[i].as_ref()
}

fn ctx() -> &'static GpuContext {
    plan_ctx(0)
}

/// The `gpu` plan forced on the adapter: on lavapipe its subgroup reductions run with
/// subgroups of 8.
fn gpu_ctx() -> &'static GpuContext {
    plan_ctx(1)
}

/// The `gpu` plan on a device created without subgroups: its workgroup-memory reductions.
fn gpu_wg_ctx() -> &'static GpuContext {
    plan_ctx(2)
}

/// The portable plan: no subgroups, no shader-f16.
fn portable_ctx() -> &'static GpuContext {
    plan_ctx(3)
}

/// One context per kernel plan (the adapter's default, gpu, gpu without subgroups, portable).
fn plan_ctxs() -> [&'static GpuContext; 4] {
    [ctx(), gpu_ctx(), gpu_wg_ctx(), portable_ctx()]
}

/// A context that pretends storage bindings are at most 4 KiB.
fn small_ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        new_ctx(GpuOptions {
            max_binding_size: Some(4096),
            ..Default::default()
        })
    })
}

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn randv(r: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| r.random_range(-scale..scale)).collect()
}

/// `rows` rows of `width` values placed at `offset + t * stride` in a buffer of junk.
fn pack(
    r: &mut StdRng,
    data: &[f32],
    rows: usize,
    width: usize,
    stride: usize,
    offset: usize,
) -> Vec<f32> {
    let len = if rows == 0 {
        offset
    } else {
        offset + (rows - 1) * stride + width
    };
    let mut v = randv(r, len + 3, 9.0);
    for t in 0..rows {
        v[offset + t * stride..offset + t * stride + width]
            .copy_from_slice(&data[t * width..(t + 1) * width]);
    }
    v
}

fn unpack(v: &[f32], rows: usize, width: usize, stride: usize, offset: usize) -> Vec<f32> {
    (0..rows)
        .flat_map(|t| v[offset + t * stride..offset + t * stride + width].to_vec())
        .collect()
}

fn up(c: &GpuContext, v: &[f32]) -> GpuBuffer {
    c.upload_f32("test", v).expect("upload")
}

fn read(c: &GpuContext, b: &GpuBuffer) -> Vec<f32> {
    c.read_f32_blocking(b).expect("readback")
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0.0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs() / (1.0 + w.abs());
        if err.is_nan() || err > worst.0 {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: element {} is {} but should be {} (rel err {:.3e} > {tol:.0e})",
        worst.1,
        got[worst.1],
        want[worst.1],
        worst.0
    );
}

fn silu(v: f64) -> f64 {
    v / (1.0 + (-v).exp())
}

fn submit(rec: Recorder) {
    rec.submit().expect("submit");
}

// ------------------------------------------------------------------------------------------

#[test]
fn embedding_gathers_rows_also_from_split_tables() {
    let mut r = rng(1);
    let (v, d, t) = (53usize, 24usize, 9usize);
    let table = randv(&mut r, v * d, 1.0);
    let mut tokens: Vec<u32> = (0..t).map(|_| r.random_range(0..v as u32)).collect();
    tokens[0] = 0;
    tokens[1] = v as u32 - 1;
    for c in [ctx(), small_ctx()] {
        let m = GpuMatrix::from_f32(c, "emb", &table, v, d).unwrap();
        if std::ptr::eq(c, small_ctx()) {
            assert!(m.blocks.len() > 1, "4 KiB limit must split the table");
        }
        let tok = c.upload_u32("tok", &tokens).unwrap();
        let (stride, off) = (d + 5, 3);
        let out = up(c, &pack(&mut r, &vec![0.0; t * d], t, d, stride, off));
        let mut rec = Recorder::new(c);
        embedding(
            &mut rec,
            &tok,
            t as u32,
            &m,
            View::new(&out, stride as u32, off as u32),
        )
        .unwrap();
        submit(rec);
        let got = unpack(&read(c, &out), t, d, stride, off);
        let want: Vec<f64> = tokens
            .iter()
            .flat_map(|&k| {
                table[k as usize * d..(k as usize + 1) * d]
                    .iter()
                    .map(|&x| x as f64)
            })
            .collect();
        assert_close("embedding", &got, &want, 0.0);
        // The same through embedding_of, which skips the blocks holding none of the ids.
        let out = up(c, &pack(&mut r, &vec![0.0; t * d], t, d, stride, off));
        let mut rec = Recorder::new(c);
        let ov = View::new(&out, stride as u32, off as u32);
        embedding_of(&mut rec, &tok, &tokens, &m, ov).unwrap();
        submit(rec);
        let got = unpack(&read(c, &out), t, d, stride, off);
        assert_close("embedding_of", &got, &want, 0.0);
        // One id: one block dispatched.
        let one = c.upload_u32("one", &[v as u32 - 1]).unwrap();
        let out = c.zeros("out", d).unwrap();
        let mut rec = Recorder::new(c);
        embedding_of(
            &mut rec,
            &one,
            &[v as u32 - 1],
            &m,
            View::dense(&out, d as u32),
        )
        .unwrap();
        assert_eq!(rec.len(), 1, "one block for one id");
        submit(rec);
        let last = table[(v - 1) * d..]
            .iter()
            .map(|&x| x as f64)
            .collect::<Vec<_>>();
        assert_close("embedding_of one id", &read(c, &out), &last, 0.0);
    }
}

#[test]
fn rms_norm_matches() {
    let mut r = rng(2);
    let c = ctx();
    // Unaligned rows (rms_norm.wgsl), then aligned to 4 (rms_norm_vec4.wgsl).
    for (rows, width, pad, off) in [
        (1usize, 7usize, 2usize, 1usize),
        (5, 70, 2, 1),
        (3, 256, 2, 1),
        (4, 256, 4, 4),
        (2, 1024, 0, 0),
    ] {
        let x = randv(&mut r, rows * width, 2.0);
        let w = randv(&mut r, width, 1.5);
        let xb = up(c, &pack(&mut r, &x, rows, width, width + pad, off));
        let ob = c.zeros("o", rows * width).unwrap();
        let wb = up(c, &w);
        let mut rec = Recorder::new(c);
        let xv = View::new(&xb, (width + pad) as u32, off as u32);
        rms_norm(
            &mut rec,
            rows as u32,
            width as u32,
            xv,
            &wb,
            View::dense(&ob, width as u32),
            1e-5,
        )
        .unwrap();
        submit(rec);
        let mut want = Vec::new();
        for t in 0..rows {
            let row = &x[t * width..(t + 1) * width];
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / width as f64;
            let k = 1.0 / (ms + 1e-5).sqrt();
            want.extend(row.iter().zip(&w).map(|(&v, &w)| v as f64 * k * w as f64));
        }
        assert_close("rms_norm", &read(c, &ob), &want, 1e-5);
    }
}

#[allow(clippy::too_many_arguments)]
fn matmul_case(
    c: &GpuContext,
    r: &mut StdRng,
    t: usize,
    k: usize,
    o: usize,
    kernel: MatmulKernel,
    bias: bool,
    acc: bool,
) {
    matmul_case_as(c, r, t, k, o, kernel, bias, acc, WeightFormat::F32);
}

/// [`matmul_case`] with W stored as `format` (the reference uses W rounded the same way).
#[allow(clippy::too_many_arguments)]
fn matmul_case_as(
    c: &GpuContext,
    r: &mut StdRng,
    t: usize,
    k: usize,
    o: usize,
    kernel: MatmulKernel,
    bias: bool,
    acc: bool,
    format: WeightFormat,
) {
    let x = randv(r, t * k, 1.0);
    let mut w = randv(r, o * k, 1.0);
    if format == WeightFormat::F16 {
        w.iter_mut()
            .for_each(|v| *v = half::f16::from_f32(*v).to_f32());
    }
    // Quantized: the reference multiplies by the dequantized blocks (exact in f32).
    let blocks = format
        .quant()
        .map(|q| transmamba::quant::QuantMatrix::quantize("w", q, &w, o, k).unwrap());
    if let Some(q) = &blocks {
        w = q.dequantize();
    }
    let b = randv(r, o, 1.0);
    let y0 = randv(r, t * o, 1.0);
    // Odd row counts with K % 4 == 0 get rows at vec4-aligned offsets (the matvec copies them
    // into its texture), the others not (packed by rows_to_texture).
    let aligned = t % 2 == 1 && k.is_multiple_of(4);
    let (xs, xo) = if aligned { (k + 4, 4) } else { (k + 3, 2) };
    let (ys, yo) = (o + 5, 4);
    let xb = up(c, &pack(r, &x, t, k, xs, xo));
    let ypacked = pack(r, &y0, t, o, ys, yo);
    let yb = up(c, &ypacked);
    let bb = up(c, &b);
    let m = match &blocks {
        Some(q) => GpuMatrix::from_quant(c, "w", q).unwrap(),
        None => GpuMatrix::from_f32_as(c, "w", &w, o, k, format).unwrap(),
    };
    assert_eq!(m.format(), format);
    let mut rec = Recorder::new(c);
    let xv = View::new(&xb, xs as u32, xo as u32);
    let yv = View::new(&yb, ys as u32, yo as u32);
    matmul_using(
        &mut rec,
        t as u32,
        xv,
        &m,
        bias.then_some(&bb),
        yv,
        acc,
        kernel,
    )
    .unwrap();
    submit(rec);
    let mut want = vec![0.0f64; t * o];
    for i in 0..t {
        for j in 0..o {
            let mut s: f64 = (0..k)
                .map(|q| x[i * k + q] as f64 * w[j * k + q] as f64)
                .sum();
            if bias {
                s += b[j] as f64;
            }
            if acc {
                s += y0[i * o + j] as f64;
            }
            want[i * o + j] = s;
        }
    }
    let all = read(c, &yb);
    let got = unpack(&all, t, o, ys, yo);
    assert_close(
        &format!("matmul {kernel:?} {format:?} T={t} in={k} out={o} bias={bias} acc={acc}"),
        &got,
        &want,
        2e-5,
    );
    // Elements outside the window are untouched.
    for (i, (a, b)) in all.iter().zip(&ypacked).enumerate() {
        let inside = i >= yo && (i - yo) / ys < t && (i - yo) % ys < o;
        assert!(inside || a == b, "matmul wrote outside its window at {i}");
    }
}

#[test]
fn matmul_tiled_and_matvec_match() {
    let mut r = rng(3);
    let c = ctx();
    let shapes = [
        (1usize, 13usize, 7usize),
        (3, 64, 40),
        (17, 33, 9),
        (64, 128, 70),
        (5, 4, 1),
        (70, 100, 130),
    ];
    for &(t, k, o) in &shapes {
        for kernel in [
            MatmulKernel::Tiled,
            MatmulKernel::MatVec,
            MatmulKernel::Auto,
            MatmulKernel::TiledPortable,
            MatmulKernel::SplitK,
            MatmulKernel::Tiles,
        ] {
            matmul_case(c, &mut r, t, k, o, kernel, true, false);
            matmul_case(c, &mut r, t, k, o, kernel, false, true);
        }
    }
    // Each plan's own choice (Auto), and the split-K product's workgroup-memory reduction.
    for c in plan_ctxs() {
        for &(t, k, o) in &shapes {
            matmul_case(c, &mut r, t, k, o, MatmulKernel::Auto, true, true);
        }
    }
    for &(t, k, o) in &shapes {
        matmul_case(
            gpu_wg_ctx(),
            &mut r,
            t,
            k,
            o,
            MatmulKernel::SplitK,
            true,
            false,
        );
    }
    // Real widths: mamba2-130m's in_proj (768 -> 3352) and out_proj (1536 -> 768).
    for c in [gpu_ctx(), gpu_wg_ctx()] {
        matmul_case(c, &mut r, 1, 768, 3352, MatmulKernel::Auto, false, false);
        matmul_case(c, &mut r, 2, 1536, 768, MatmulKernel::Auto, true, true);
        matmul_case(c, &mut r, 130, 768, 200, MatmulKernel::Auto, true, true);
    }
}

#[test]
fn matmul_with_packed_f16_weights() {
    // Every kernel's f16 variant (8 halves per rgba32uint texel), K not a multiple of 8 included
    // (the matvec's masked tail texel), against the f16-rounded weights.
    let mut r = rng(31);
    let c = ctx();
    for &(t, k, o) in &[
        (1usize, 13usize, 7usize),
        (1, 768, 300),
        (2, 20, 129),
        (40, 36, 70),
    ] {
        for kernel in [
            MatmulKernel::Tiled,
            MatmulKernel::MatVec,
            MatmulKernel::TiledPortable,
            MatmulKernel::SplitK,
            MatmulKernel::Tiles,
        ] {
            matmul_case_as(c, &mut r, t, k, o, kernel, true, true, WeightFormat::F16);
        }
        let wg = gpu_wg_ctx();
        matmul_case_as(
            wg,
            &mut r,
            t,
            k,
            o,
            MatmulKernel::SplitK,
            true,
            true,
            WeightFormat::F16,
        );
    }
    // The embedding gather reads the same packed texels.
    let (v, d) = (37usize, 13usize);
    let table = randv(&mut r, v * d, 1.0);
    let rounded: Vec<f32> = table
        .iter()
        .map(|&x| half::f16::from_f32(x).to_f32())
        .collect();
    let m = GpuMatrix::from_f32_as(c, "table", &table, v, d, WeightFormat::F16).unwrap();
    embedding_reads_rows("embedding f16", c, &m, &rounded);
}

/// The embedding gather of a few ids from the stored `m` [V, d] returns exactly the rows of
/// `stored` (its values as the storage holds them).
fn embedding_reads_rows(what: &str, c: &GpuContext, m: &GpuMatrix, stored: &[f32]) {
    let d = m.cols;
    let ids = [0u32, 36, 5, 17];
    let tb = c.upload_u32("ids", &ids).unwrap();
    let out = c.zeros("out", ids.len() * d).unwrap();
    let mut rec = Recorder::new(c);
    embedding(
        &mut rec,
        &tb,
        ids.len() as u32,
        m,
        View::dense(&out, d as u32),
    )
    .unwrap();
    submit(rec);
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| stored[i as usize * d..][..d].iter().map(|&x| x as f64))
        .collect();
    assert_close(what, &read(c, &out), &want, 0.0);
}

#[test]
fn matmul_with_quantized_weights() {
    // Every product kernel on q8_0 / q4_0 blocks (the decode kernel matvec_quant, the generic
    // `w4` variants of matvec, the subgroup tiled and the portable tiled products) against the
    // dequantized weights: K of one block, of 3 (a partial superblock), of 5, real widths;
    // outputs not a multiple of the 64 a matvec workgroup covers; split weights.
    let mut r = rng(47);
    for (c, shapes) in [
        (
            ctx(),
            &[
                (1usize, 32usize, 7usize),
                (1, 768, 300),
                (2, 96, 129),
                (3, 160, 65),
                (7, 1536, 40),
                (9, 128, 33),
                (40, 64, 70),
            ][..],
        ),
        // 4 KiB bindings: 768-wide q4_0 rows (6 superblocks of 80 B) split into 8-row blocks.
        (
            small_ctx(),
            &[(1usize, 768usize, 100usize), (12, 768, 70)][..],
        ),
    ] {
        for &(t, k, o) in shapes {
            for format in [WeightFormat::Q8_0, WeightFormat::Q4_0] {
                for kernel in [
                    MatmulKernel::MatVec,
                    MatmulKernel::MatVecGeneric,
                    MatmulKernel::Tiled,
                    MatmulKernel::TiledPortable,
                    MatmulKernel::SplitK,
                    MatmulKernel::Tiles,
                ] {
                    matmul_case_as(c, &mut r, t, k, o, kernel, true, true, format);
                }
                let wg = gpu_wg_ctx();
                matmul_case_as(
                    wg,
                    &mut r,
                    t,
                    k,
                    o,
                    MatmulKernel::SplitK,
                    true,
                    true,
                    format,
                );
            }
        }
    }
    // The embedding gather reads the same texels.
    let c = ctx();
    let (v, d) = (37usize, 96usize);
    let table = randv(&mut r, v * d, 1.0);
    for q in [
        transmamba::quant::QuantFormat::Q8_0,
        transmamba::quant::QuantFormat::Q4_0,
    ] {
        let qm = transmamba::quant::QuantMatrix::quantize("table", q, &table, v, d).unwrap();
        let m = GpuMatrix::from_quant(c, "table", &qm).unwrap();
        embedding_reads_rows(&format!("embedding {q:?}"), c, &m, &qm.dequantize());
    }
}

#[test]
fn matmul_with_split_weights_is_unchanged() {
    let mut r = rng(4);
    let (t, k, o) = (9usize, 30usize, 100usize);
    let x = randv(&mut r, t * k, 1.0);
    let w = randv(&mut r, o * k, 1.0);
    let b = randv(&mut r, o, 1.0);
    let mut outs = Vec::new();
    for c in [ctx(), small_ctx()] {
        for kernel in [
            MatmulKernel::Tiled,
            MatmulKernel::MatVec,
            MatmulKernel::TiledPortable,
        ] {
            let m = GpuMatrix::from_f32(c, "w", &w, o, k).unwrap();
            if std::ptr::eq(c, small_ctx()) {
                assert!(
                    m.blocks.len() >= 4,
                    "expected several blocks, got {}",
                    m.blocks.len()
                );
                assert!(m.blocks.iter().all(|b| b.rows * b.ldk * 4 <= 4096));
            } else {
                assert_eq!(m.blocks.len(), 1);
            }
            let xb = up(c, &x);
            let bb = up(c, &b);
            let yb = c.zeros("y", t * o).unwrap();
            let mut rec = Recorder::new(c);
            matmul_using(
                &mut rec,
                t as u32,
                View::dense(&xb, k as u32),
                &m,
                Some(&bb),
                View::dense(&yb, o as u32),
                false,
                kernel,
            )
            .unwrap();
            submit(rec);
            outs.push(read(c, &yb));
        }
    }
    let want: Vec<f64> = outs[0].iter().map(|&v| v as f64).collect();
    for o in &outs[1..] {
        assert_close("split weights", o, &want, 1e-6);
    }
}

fn conv_ref(xin: &[f32], w: &[f32], bias: &[f32], t: usize, dc: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0; t * dc];
    for i in 0..t {
        for c in 0..dc {
            let mut s = bias[c] as f64;
            for q in 0..k {
                let j = i as isize - k as isize + 1 + q as isize;
                if j >= 0 {
                    s += w[c * k + q] as f64 * xin[j as usize * dc + c] as f64;
                }
            }
            out[i * dc + c] = silu(s);
        }
    }
    out
}

#[test]
fn conv1d_prefill_and_carried_state() {
    let mut r = rng(5);
    let c = ctx();
    // (Dc, K, T, row padding, offset): unaligned (conv1d.wgsl); aligned to 4 (conv1d_vec4.wgsl,
    // with T over several 16-row blocks, and K = 3 and 2 under zero taps); K = 5 aligned
    // (conv1d.wgsl again).
    for (dc, k, t, pad, off) in [
        (10usize, 4usize, 9usize, 7usize, 5usize),
        (12, 4, 19, 8, 4),
        (8, 3, 11, 4, 8),
        (8, 2, 37, 4, 4),
        (8, 5, 21, 0, 0),
    ] {
        let xin = randv(&mut r, t * dc, 1.5);
        let w = randv(&mut r, dc * k, 1.0);
        let b = randv(&mut r, dc, 0.5);
        let want = conv_ref(&xin, &w, &b, t, dc, k);
        let (wb, bb) = (up(c, &w), up(c, &b));
        // The conv input is a column window of a wider in_proj row.
        let stride = dc + pad;
        let packed = pack(&mut r, &xin, t, dc, stride, off);
        let inb = up(c, &packed);
        // Splits: one call; T < K-1 then the rest; one token at a time.
        for splits in [vec![t], vec![2, t - 2], vec![1, 1, 1, t - 3], vec![1; t]] {
            let state = c.zeros("state", (k - 1) * dc).unwrap();
            let out = c.zeros("out", t * dc).unwrap();
            let mut rec = Recorder::new(c);
            let mut t0 = 0u32;
            for &n in &splits {
                let iv = View::new(&inb, stride as u32, off as u32).rows_from(t0);
                let ov = View::dense(&out, dc as u32).rows_from(t0);
                conv1d(
                    &mut rec,
                    n as u32,
                    dc as u32,
                    k as u32,
                    iv,
                    &wb,
                    Some(&bb),
                    &state,
                    ov,
                    true,
                )
                .unwrap();
                t0 += n as u32;
            }
            submit(rec);
            assert_close(
                &format!("conv1d splits {splits:?}"),
                &read(c, &out),
                &want,
                1e-5,
            );
            // The state is the last K-1 pre-conv rows.
            let st = read(c, &state);
            let want_state: Vec<f64> = xin[(t - (k - 1)) * dc..]
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert_close("conv state", &st, &want_state, 0.0);
        }
        // T < K-1 from a fresh state: state = [0, 0, row0] style shift.
        let state = c.zeros("state", (k - 1) * dc).unwrap();
        let out = c.zeros("out", dc).unwrap();
        let mut rec = Recorder::new(c);
        conv1d(
            &mut rec,
            1,
            dc as u32,
            k as u32,
            View::new(&inb, stride as u32, off as u32),
            &wb,
            None,
            &state,
            View::dense(&out, dc as u32),
            true,
        )
        .unwrap();
        submit(rec);
        let st = read(c, &state);
        let mut want_state = vec![0.0f64; (k - 1) * dc];
        for ch in 0..dc {
            want_state[(k - 2) * dc + ch] = xin[ch] as f64;
        }
        assert_close("conv state T<K-1", &st, &want_state, 0.0);
        let want0: Vec<f64> = (0..dc)
            .map(|ch| silu(w[ch * k + k - 1] as f64 * xin[ch] as f64))
            .collect();
        assert_close("conv no bias", &read(c, &out), &want0, 1e-5);
    }
}

#[test]
fn dt_softplus_clamps() {
    let mut r = rng(6);
    let c = ctx();
    let (t, h) = (7usize, 5usize);
    let mut raw = randv(&mut r, t * h, 8.0);
    raw[0] = 30.0;
    raw[1] = -40.0;
    let bias = randv(&mut r, h, 1.0);
    for (lo, hi) in [(0.0f32, f32::INFINITY), (0.001, 2.0)] {
        let (stride, off) = (h + 9, 6);
        let rb = up(c, &pack(&mut r, &raw, t, h, stride, off));
        let bb = up(c, &bias);
        let ob = c.zeros("dt", t * h).unwrap();
        let mut rec = Recorder::new(c);
        dt_softplus(
            &mut rec,
            t as u32,
            h as u32,
            View::new(&rb, stride as u32, off as u32),
            &bb,
            View::dense(&ob, h as u32),
            lo,
            hi,
        )
        .unwrap();
        submit(rec);
        let want: Vec<f64> = (0..t * h)
            .map(|i| {
                let v = raw[i] as f64 + bias[i % h] as f64;
                let sp = if v > 30.0 { v } else { v.exp().ln_1p() };
                sp.clamp(lo as f64, hi as f64)
            })
            .collect();
        assert_close("dt", &read(c, &ob), &want, 1e-6);
    }
}

#[test]
fn copy_rows_and_swiglu() {
    let mut r = rng(7);
    let c = ctx();
    let (t, w) = (6usize, 11usize);
    let src = randv(&mut r, t * w, 1.0);
    let sb = up(c, &pack(&mut r, &src, t, w, w + 4, 2));
    let cache = up(c, &randv(&mut r, 20 * w, 1.0));
    let before = read(c, &cache);
    let mut rec = Recorder::new(c);
    copy_rows(
        &mut rec,
        t as u32,
        w as u32,
        View::new(&sb, w as u32 + 4, 2),
        View::dense(&cache, w as u32).rows_from(5),
    )
    .unwrap();
    submit(rec);
    let after = read(c, &cache);
    let mut want: Vec<f64> = before.iter().map(|&v| v as f64).collect();
    for (i, &v) in src.iter().enumerate() {
        want[5 * w + i] = v as f64;
    }
    assert_close("copy_rows", &after, &want, 0.0);

    let m = 13usize;
    let inp = randv(&mut r, t * 2 * m, 4.0);
    let ib = up(c, &pack(&mut r, &inp, t, 2 * m, 2 * m + 1, 3));
    let ob = c.zeros("o", t * m).unwrap();
    let mut rec = Recorder::new(c);
    swiglu(
        &mut rec,
        t as u32,
        m as u32,
        View::new(&ib, 2 * m as u32 + 1, 3),
        View::dense(&ob, m as u32),
    )
    .unwrap();
    submit(rec);
    let want: Vec<f64> = (0..t * m)
        .map(|i| {
            inp[(i / m) * 2 * m + i % m] as f64 * silu(inp[(i / m) * 2 * m + m + i % m] as f64)
        })
        .collect();
    assert_close("swiglu", &read(c, &ob), &want, 1e-5);
}

/// Prefill's steps 5-7 in two dispatches (gate while packing, norm inside the product) equal
/// gate, norm and product done one after the other; what it does not take is an error.
#[test]
fn matmul_gated_normed_equals_gate_norm_product() {
    let c = ctx();
    if !c.plan().subgroup8_kernels() {
        // Only the cpu-adapter plan has this fusion (other plans run gate, norm and product
        // apart, tested with the engine); lavapipe, where CI runs, has it: no skip there.
        assert!(!c.caps().lavapipe_like());
        return;
    }
    let mut r = rng(41);
    let eps = 1e-5f32;
    // (rows, heads, P, outputs, gate from row, D skip, bias, accumulate)
    for &(t, heads, p, o, gate, with_d, bias, acc) in &[
        (
            8usize,
            2usize,
            8usize,
            20usize,
            Some(3u32),
            true,
            false,
            true,
        ),
        (37, 3, 16, 70, Some(0), false, true, false),
        (40, 4, 64, 33, None, true, true, true),
    ] {
        let k = heads * p;
        let y = randv(&mut r, t * k, 1.0);
        let x = randv(&mut r, t * k, 1.0);
        let z = randv(&mut r, t * k, 2.0);
        let dsk = randv(&mut r, heads, 1.0);
        let w = randv(&mut r, o * k, 1.0);
        let b = randv(&mut r, o, 1.0);
        let out0 = randv(&mut r, t * o, 1.0);
        let yb = up(c, &y);
        let xb = up(c, &pack(&mut r, &x, t, k, k + 8, 4));
        let zb = up(c, &pack(&mut r, &z, t, k, k + 12, 8));
        let (db, bb, ob) = (up(c, &dsk), up(c, &b), up(c, &out0));
        let m = GpuMatrix::from_f32(c, "w", &w, o, k).unwrap();
        let g = GateInputs {
            x: View::new(&xb, k as u32 + 8, 4),
            z: View::new(&zb, k as u32 + 12, 8),
            d_skip: with_d.then_some(&db),
            head_dim: p as u32,
            gate_from_row: gate,
        };
        let yv = View::dense(&yb, k as u32);
        assert!(matmul_gated_normed_supported(c, t as u32, yv, &g, &m, 1));
        let mut rec = Recorder::new(c);
        let ov = View::dense(&ob, o as u32);
        let bias_buf = bias.then_some(&bb);
        matmul_gated_normed(&mut rec, t as u32, yv, &g, eps, &m, bias_buf, ov, acc).unwrap();
        submit(rec);
        let mut want = vec![0.0f64; t * o];
        for i in 0..t {
            let v: Vec<f64> = (0..k)
                .map(|ch| {
                    let mut a = y[i * k + ch] as f64;
                    if with_d {
                        a += dsk[ch / p] as f64 * x[i * k + ch] as f64;
                    }
                    if gate.is_some_and(|g| i as u32 >= g) {
                        a *= silu(z[i * k + ch] as f64);
                    }
                    a
                })
                .collect();
            let s = 1.0 / (v.iter().map(|a| a * a).sum::<f64>() / k as f64 + eps as f64).sqrt();
            for j in 0..o {
                let mut acc_v: f64 = (0..k).map(|q| v[q] * s * w[j * k + q] as f64).sum();
                if bias {
                    acc_v += b[j] as f64;
                }
                if acc {
                    acc_v += out0[i * o + j] as f64;
                }
                want[i * o + j] = acc_v;
            }
        }
        let what = format!("matmul_gated_normed T={t} H={heads} P={p} O={o} gate={gate:?}");
        assert_close(&what, &read(c, &ob), &want, 2e-5);
        // y itself is left as it was (the gated values only go to the texture).
        assert_eq!(read(c, &yb), y, "{what} wrote y");
    }
    // Too few rows, P not a multiple of 4, several norm groups: errors, not wrong products.
    let (k, o) = (24usize, 8usize);
    let m = GpuMatrix::from_f32(c, "w", &randv(&mut r, o * k, 1.0), o, k).unwrap();
    let (yb, xb, zb) = (
        up(c, &randv(&mut r, 16 * k, 1.0)),
        up(c, &randv(&mut r, 16 * k, 1.0)),
        up(c, &randv(&mut r, 16 * k, 1.0)),
    );
    let ob = c.zeros("o", 16 * o).unwrap();
    for (rows, p, groups) in [(4u32, 8u32, 1u32), (16, 6, 1), (16, 8, 2)] {
        let g = GateInputs {
            x: View::dense(&xb, k as u32),
            z: View::dense(&zb, k as u32),
            d_skip: None,
            head_dim: p,
            gate_from_row: None,
        };
        let yv = View::dense(&yb, k as u32);
        assert!(!matmul_gated_normed_supported(c, rows, yv, &g, &m, groups));
        if groups == 1 {
            let mut rec = Recorder::new(c);
            let ov = View::dense(&ob, o as u32);
            let e = matmul_gated_normed(&mut rec, rows, yv, &g, 1e-5, &m, None, ov, false);
            assert!(
                matches!(e, Err(GpuError::Shape { .. })),
                "{rows} {p}: {e:?}"
            );
        }
    }
}

#[test]
fn gated_rms_norm_matches() {
    let mut r = rng(8);
    let c = ctx();
    // (H, P, G, z padding, z offset): unaligned (gated_rms_norm.wgsl); aligned to 4
    // (gated_rms_norm_vec4.wgsl), one and several vec4s per lane, kept in registers and (group
    // wider than 64 * 8 vec4s) stored and re-read.
    for (heads, p, groups, zpad, zoff) in [
        (6usize, 5usize, 2usize, 50usize, 1usize),
        (8, 8, 2, 52, 4),
        (8, 64, 1, 4, 8),
        (36, 64, 1, 4, 8),
    ] {
        let d = SsmDims {
            heads: heads as u32,
            head_dim: p as u32,
            state: 4,
            groups: groups as u32,
        };
        let (t, di) = (5usize, heads * p);
        let gw = di / groups;
        let y = randv(&mut r, t * di, 1.0);
        let x = randv(&mut r, t * di, 1.0);
        let z = randv(&mut r, t * di, 2.0);
        let dsk = randv(&mut r, heads, 1.0);
        let w = randv(&mut r, di, 1.0);
        for (gate, with_d) in [(Some(2u32), true), (None, false), (Some(0), true)] {
            let yb = up(c, &y);
            let xb = up(c, &pack(&mut r, &x, t, di, di + 8, 8));
            let zb = up(c, &pack(&mut r, &z, t, di, di + zpad, zoff));
            let (db, wb) = (up(c, &dsk), up(c, &w));
            let mut rec = Recorder::new(c);
            gated_rms_norm(
                &mut rec,
                d,
                t as u32,
                View::dense(&yb, di as u32),
                View::new(&xb, di as u32 + 8, 8),
                View::new(&zb, (di + zpad) as u32, zoff as u32),
                with_d.then_some(&db),
                &wb,
                gate,
                1e-5,
            )
            .unwrap();
            submit(rec);
            let mut want = vec![0.0f64; t * di];
            for i in 0..t {
                let mut v: Vec<f64> = (0..di)
                    .map(|ch| {
                        let mut a = y[i * di + ch] as f64;
                        if with_d {
                            a += dsk[ch / p] as f64 * x[i * di + ch] as f64;
                        }
                        if gate.is_some_and(|g| i as u32 >= g) {
                            a *= silu(z[i * di + ch] as f64);
                        }
                        a
                    })
                    .collect();
                for g in 0..groups {
                    let s = &mut v[g * gw..(g + 1) * gw];
                    let k = 1.0 / (s.iter().map(|a| a * a).sum::<f64>() / gw as f64 + 1e-5).sqrt();
                    for a in s.iter_mut() {
                        *a *= k;
                    }
                }
                for ch in 0..di {
                    want[i * di + ch] = v[ch] * w[ch] as f64;
                }
            }
            assert_close(
                &format!("gated_rms_norm {d:?} gate={gate:?}"),
                &read(c, &yb),
                &want,
                1e-5,
            );
        }
    }
}

#[test]
fn attention_matches_naive_softmax() {
    let mut r = rng(9);
    for c in plan_ctxs() {
        let dims = [
            SsmDims {
                heads: 4,
                head_dim: 5,
                state: 6,
                groups: 1,
            },
            SsmDims {
                heads: 4,
                head_dim: 40,
                state: 8,
                groups: 2,
            },
            SsmDims {
                heads: 3,
                head_dim: 64,
                state: 16,
                groups: 3,
            },
            // Aligned views, N and P multiples of 32: the vec4 subgroup kernel.
            SsmDims {
                heads: 2,
                head_dim: 64,
                state: 32,
                groups: 1,
            },
            // mamba2-130m's head shape: the gpu plan's tiles at their largest N.
            SsmDims {
                heads: 2,
                head_dim: 64,
                state: 128,
                groups: 1,
            },
        ];
        for d in dims {
            let (h, p, n, g) = (
                d.heads as usize,
                d.head_dim as usize,
                d.state as usize,
                d.groups as usize,
            );
            for (nq, p0) in [(1usize, 9usize), (5, 3), (6, 0), (1, 0), (19, 4), (21, 30)] {
                for theta in [None, Some(10000.0f32), Some(50.0)] {
                    let cap = p0 + nq + 2;
                    let kc = randv(&mut r, cap * g * n, 1.0);
                    let vc = randv(&mut r, cap * h * p, 1.0);
                    let q = randv(&mut r, nq * g * n, 1.0);
                    let scale = 1.0 / (n as f32).sqrt();
                    // Q is the C part of xBC' rows: [x | B | C].
                    let (stride, off) = (h * p + 2 * g * n, h * p + g * n);
                    let qb = up(c, &pack(&mut r, &q, nq, g * n, stride, off));
                    let (kb, vb) = (up(c, &kc), up(c, &vc));
                    let yrow0 = 2usize;
                    let yb = c.zeros("y", (nq + yrow0) * h * p).unwrap();
                    let mut rec = Recorder::new(c);
                    attention(
                        &mut rec,
                        d,
                        nq as u32,
                        p0 as u32,
                        View::new(&qb, stride as u32, off as u32),
                        View::dense(&kb, (g * n) as u32),
                        View::dense(&vb, (h * p) as u32),
                        View::dense(&yb, (h * p) as u32).rows_from(yrow0 as u32),
                        scale,
                        theta,
                    )
                    .unwrap();
                    submit(rec);
                    let mut want = vec![0.0f64; nq * h * p];
                    for t in 0..nq {
                        let pos = p0 + t;
                        for hh in 0..h {
                            let gg = hh / (h / g);
                            let mut qv: Vec<f64> = q[t * g * n + gg * n..][..n]
                                .iter()
                                .map(|&v| v as f64)
                                .collect();
                            if let Some(th) = theta {
                                qv = rope(&qv, pos, th as f64);
                            }
                            let scores: Vec<f64> = (0..=pos)
                                .map(|s| {
                                    let mut kv: Vec<f64> = kc[s * g * n + gg * n..][..n]
                                        .iter()
                                        .map(|&v| v as f64)
                                        .collect();
                                    if let Some(th) = theta {
                                        kv = rope(&kv, s, th as f64);
                                    }
                                    scale as f64
                                        * qv.iter().zip(&kv).map(|(a, b)| a * b).sum::<f64>()
                                })
                                .collect();
                            let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                            let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                            let z: f64 = e.iter().sum();
                            for pp in 0..p {
                                want[t * h * p + hh * p + pp] = (0..=pos)
                                    .map(|s| e[s] / z * vc[s * h * p + hh * p + pp] as f64)
                                    .sum::<f64>();
                            }
                        }
                    }
                    let got = read(c, &yb);
                    assert!(
                        got[..yrow0 * h * p].iter().all(|&v| v == 0.0),
                        "rows before the offset are untouched"
                    );
                    assert_close(
                        &format!(
                            "attention ({}) {d:?} nq={nq} p0={p0} rope={theta:?}",
                            c.kernels()
                        ),
                        &got[yrow0 * h * p..],
                        &want,
                        2e-5,
                    );
                    if theta.is_none() {
                        let q = View::new(&qb, stride as u32, off as u32);
                        let got = attention_products_run(c, d, nq, p0, cap, q, &kb, &vb, scale);
                        assert_close(
                            &format!("attention_products {d:?} nq={nq} p0={p0}"),
                            &got,
                            &want,
                            2e-5,
                        );
                    }
                }
            }
        }
    }
}

/// attention_products with the cache textures filled in two appends (rows 0..p0, then the
/// query rows), as the session does; returns y [nq, H*P].
#[allow(clippy::too_many_arguments)]
fn attention_products_run(
    c: &GpuContext,
    d: SsmDims,
    nq: usize,
    p0: usize,
    cap: usize,
    q: View,
    kb: &GpuBuffer,
    vb: &GpuBuffer,
    scale: f32,
) -> Vec<f32> {
    let (hp, gn) = (d.inner(), d.bc_width());
    let tex = AttentionTextures::new(c, d, cap as u32).unwrap().unwrap();
    let (kc, vc) = (View::dense(kb, gn), View::dense(vb, hp));
    let yb = c.zeros("y", nq * hp as usize).unwrap();
    let mut rec = Recorder::new(c);
    tex.append(&mut rec, kc, vc, 0, p0 as u32).unwrap();
    tex.append(&mut rec, kc, vc, p0 as u32, (p0 + nq) as u32)
        .unwrap();
    let y = View::dense(&yb, hp);
    attention_products(&mut rec, d, nq as u32, p0 as u32, q, &tex, y, scale).unwrap();
    submit(rec);
    read(c, &yb)
}

#[test]
fn attention_products_in_query_chunks() {
    // The 4 KiB binding limit holds the scores of 8 queries at a time: three passes.
    let mut r = rng(19);
    let c = small_ctx();
    let d = SsmDims {
        heads: 2,
        head_dim: 4,
        state: 4,
        groups: 2,
    };
    let (nq, p0) = (19usize, 40usize);
    let (cap, hp, gn) = (nq + p0 + 2, 8usize, 8usize);
    let kc = randv(&mut r, cap * gn, 1.0);
    let vc = randv(&mut r, cap * hp, 1.0);
    let q = randv(&mut r, nq * gn, 1.0);
    let (kb, vb, qb) = (up(c, &kc), up(c, &vc), up(c, &q));
    let scale = 0.5f32;
    let got = attention_products_run(c, d, nq, p0, cap, View::dense(&qb, 8), &kb, &vb, scale);
    let mut want = vec![0.0f64; nq * hp];
    for t in 0..nq {
        for h in 0..2 {
            // one head per group
            let qv = &q[t * gn + h * 4..][..4];
            let sc: Vec<f64> = (0..=p0 + t)
                .map(|s| {
                    let kv = &kc[s * gn + h * 4..][..4];
                    scale as f64 * qv.iter().zip(kv).map(|(a, b)| (a * b) as f64).sum::<f64>()
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = sc.iter().map(|v| (v - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for pp in 0..4 {
                want[t * hp + h * 4 + pp] = (0..=p0 + t)
                    .map(|s| e[s] / z * vc[s * hp + h * 4 + pp] as f64)
                    .sum();
            }
        }
    }
    assert_close("attention_products in chunks", &got, &want, 2e-5);
}

struct ScanCase {
    d: SsmDims,
    t: usize,
    x: Vec<f32>,
    b: Vec<f32>,
    cm: Vec<f32>,
    dt: Vec<f32>,
    a_log: Vec<f32>,
    s0: Vec<f32>,
}

impl ScanCase {
    fn new(r: &mut StdRng, d: SsmDims, t: usize) -> Self {
        let (h, p, n, g) = (
            d.heads as usize,
            d.head_dim as usize,
            d.state as usize,
            d.groups as usize,
        );
        Self {
            d,
            t,
            x: randv(r, t * h * p, 1.0),
            b: randv(r, t * g * n, 1.0),
            cm: randv(r, t * g * n, 1.0),
            dt: (0..t * h).map(|_| r.random_range(0.001f32..0.8)).collect(),
            a_log: randv(r, h, 1.5),
            s0: randv(r, h * p * n, 1.0),
        }
    }

    /// Plain recurrence in f64 from `s0`: (y [T, H*P], final state).
    fn reference(&self, s0: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let (h, p, n, g) = (
            self.d.heads as usize,
            self.d.head_dim as usize,
            self.d.state as usize,
            self.d.groups as usize,
        );
        let mut s: Vec<f64> = s0.iter().map(|&v| v as f64).collect();
        let mut y = vec![0.0; self.t * h * p];
        for t in 0..self.t {
            for hh in 0..h {
                let gg = hh / (h / g);
                let a = -(self.a_log[hh] as f64).exp();
                let dt = self.dt[t * h + hh] as f64;
                let da = (dt * a).exp();
                for pp in 0..p {
                    let xv = self.x[t * h * p + hh * p + pp] as f64;
                    let mut acc = 0.0;
                    for nn in 0..n {
                        let i = (hh * p + pp) * n + nn;
                        s[i] = da * s[i] + dt * xv * self.b[t * g * n + gg * n + nn] as f64;
                        acc += s[i] * self.cm[t * g * n + gg * n + nn] as f64;
                    }
                    y[t * h * p + hh * p + pp] = acc;
                }
            }
        }
        (y, s)
    }

    /// GPU buffers: x | B | C interleaved in one xBC' buffer (like the model), dt dense.
    fn upload(&self, c: &GpuContext, r: &mut StdRng) -> (GpuBuffer, GpuBuffer, GpuBuffer, u32) {
        self.upload_layout(c, r, 3, 1)
    }

    /// `upload` with rows `pad` values longer than xBC and starting at `offset`.
    fn upload_layout(
        &self,
        c: &GpuContext,
        r: &mut StdRng,
        pad: usize,
        offset: usize,
    ) -> (GpuBuffer, GpuBuffer, GpuBuffer, u32) {
        let (hp, gn) = (
            (self.d.heads * self.d.head_dim) as usize,
            (self.d.groups * self.d.state) as usize,
        );
        let dc = hp + 2 * gn;
        let stride = dc + pad;
        let mut row = Vec::with_capacity(self.t * dc);
        for t in 0..self.t {
            row.extend_from_slice(&self.x[t * hp..(t + 1) * hp]);
            row.extend_from_slice(&self.b[t * gn..(t + 1) * gn]);
            row.extend_from_slice(&self.cm[t * gn..(t + 1) * gn]);
        }
        let xbc = up(c, &pack(r, &row, self.t, dc, stride, offset));
        (xbc, up(c, &self.dt), up(c, &self.a_log), stride as u32)
    }
}

fn inputs<'a>(
    d: SsmDims,
    xbc: &'a GpuBuffer,
    stride: u32,
    dt: &'a GpuBuffer,
    a_log: &'a GpuBuffer,
) -> SsmInputs<'a> {
    inputs_at(d, xbc, stride, 1, dt, a_log)
}

fn inputs_at<'a>(
    d: SsmDims,
    xbc: &'a GpuBuffer,
    stride: u32,
    offset: u32,
    dt: &'a GpuBuffer,
    a_log: &'a GpuBuffer,
) -> SsmInputs<'a> {
    let (hp, gn) = (d.heads * d.head_dim, d.groups * d.state);
    let v = View::new(xbc, stride, offset);
    SsmInputs {
        x: v,
        b: v.cols_from(hp),
        c: v.cols_from(hp + gn),
        dt: View::dense(dt, d.heads),
        a_log,
    }
}

/// `ssd_scan` of `case` from its initial state with chunk size `chunk` on `c` gives the
/// reference's outputs and final state (`want`).
fn scan_matches(
    c: &GpuContext,
    case: &ScanCase,
    inp: &SsmInputs,
    chunk: u32,
    want: (&[f64], &[f64]),
) {
    let d = case.d;
    let state = up(c, &case.s0);
    let hp = d.inner() as usize;
    let yb = c.zeros("y", case.t * hp).unwrap();
    let mut rec = Recorder::new(c);
    let y = View::dense(&yb, hp as u32);
    ssd_scan(&mut rec, d, case.t as u32, inp, &state, y, chunk).unwrap();
    submit(rec);
    let what = format!("ssd ({}) {d:?} Q={chunk}", c.kernels());
    assert_close(&format!("{what}: y"), &read(c, &yb), want.0, 1e-4);
    assert_close(&format!("{what}: state"), &read(c, &state), want.1, 1e-4);
}

/// SSM shapes the chunked scan and the memory converter are tested at: one group and two, P
/// and N not multiples of 4, then multiples of 4 (x|B|C, or x and B, packed into a texture: the
/// `_xtex_sg` kernels on lavapipe), one partial tile and two.
const SCAN_DIMS: [SsmDims; 4] = [
    SsmDims {
        heads: 3,
        head_dim: 5,
        state: 7,
        groups: 1,
    },
    SsmDims {
        heads: 4,
        head_dim: 4,
        state: 6,
        groups: 2,
    },
    SsmDims {
        heads: 4,
        head_dim: 8,
        state: 8,
        groups: 2,
    },
    SsmDims {
        heads: 2,
        head_dim: 36,
        state: 36,
        groups: 1,
    },
];

#[test]
fn chunked_scan_equals_recurrence_for_every_chunk_size() {
    let mut r = rng(10);
    let dims = SCAN_DIMS;
    for d in dims {
        let case = ScanCase::new(&mut r, d, 23);
        let (want_y, want_s) = case.reference(&case.s0);
        for c in [ctx(), small_ctx(), gpu_ctx(), gpu_wg_ctx(), portable_ctx()] {
            if std::ptr::eq(c, small_ctx()) && d.state_len() * 4 > 4096 {
                continue; // one state does not fit the 4 KiB test limit
            }
            let (xbc, dtb, ab, stride) = case.upload(c, &mut r);
            let inp = inputs(d, &xbc, stride, &dtb, &ab);
            for chunk in [1u32, 3, 8, 64, 128] {
                if std::ptr::eq(c, small_ctx()) && chunk > 8 {
                    continue; // the 4 KiB test limit cannot hold a 64-row chunk's scratch
                }
                scan_matches(c, &case, &inp, chunk, (&want_y, &want_s));
            }
        }
    }
}

#[test]
fn chunked_scan_long_sequence_in_segments() {
    // 4 KiB limit: the scan runs in several segments chained through the state.
    let mut r = rng(11);
    let d = SsmDims {
        heads: 3,
        head_dim: 5,
        state: 7,
        groups: 1,
    };
    let case = ScanCase::new(&mut r, d, 70);
    let (want_y, want_s) = case.reference(&case.s0);
    for c in [small_ctx(), ctx()] {
        let (xbc, dtb, ab, stride) = case.upload(c, &mut r);
        let inp = inputs(d, &xbc, stride, &dtb, &ab);
        let state = up(c, &case.s0);
        let yb = c.zeros("y", case.t * 15).unwrap();
        let mut rec = Recorder::new(c);
        ssd_scan(
            &mut rec,
            d,
            case.t as u32,
            &inp,
            &state,
            View::dense(&yb, 15),
            8,
        )
        .unwrap();
        submit(rec);
        assert_close("segmented ssd y", &read(c, &yb), &want_y, 1e-4);
        assert_close("segmented ssd state", &read(c, &state), &want_s, 1e-4);
    }
}

#[test]
fn sequential_scan_and_step_equal_recurrence() {
    let mut r = rng(12);
    for c in plan_ctxs() {
        // N = 9: the step on the state buffer (ssm_step); N = 8 and 32: the state in textures
        // (ssm_step_tex; P = 6 too), B and C at offsets that are and are not multiples of 4.
        for d in [
            SsmDims {
                heads: 2,
                head_dim: 6,
                state: 8,
                groups: 1,
            },
            SsmDims {
                heads: 4,
                head_dim: 8,
                state: 32,
                groups: 2,
            },
            SsmDims {
                heads: 4,
                head_dim: 3,
                state: 9,
                groups: 2,
            },
            SsmDims {
                heads: 4,
                head_dim: 4,
                state: 8,
                groups: 2,
            },
        ] {
            let case = ScanCase::new(&mut r, d, 17);
            let (want_y, want_s) = case.reference(&case.s0);
            let (pad, off) = if d.state == 8 { (4, 4) } else { (3, 1) };
            let (xbc, dtb, ab, stride) = case.upload_layout(c, &mut r, pad, off);
            let inp = inputs_at(d, &xbc, stride, off as u32, &dtb, &ab);
            let hp = d.inner() as usize;

            let state = up(c, &case.s0);
            let yb = c.zeros("y", case.t * hp).unwrap();
            let mut rec = Recorder::new(c);
            ssm_sequential_scan(
                &mut rec,
                d,
                case.t as u32,
                &inp,
                &state,
                View::dense(&yb, hp as u32),
            )
            .unwrap();
            submit(rec);
            assert_close("sequential y", &read(c, &yb), &want_y, 1e-4);
            assert_close("sequential state", &read(c, &state), &want_s, 1e-4);

            // Decode: one ssm_step per token (the state in its texture pair where the shape fits),
            // with rows 5..11 through the chunked scan in between (the state moves to its buffer
            // and back), all in one submission. Odd tokens pass dt raw (softplus^-1(dt) - bias)
            // with its bias, for the step to apply step 3 itself. Tokens 2 and 14 take B and C
            // from a copy of the buffer, not x's (the gpu plan's step reads them in place only
            // from x's buffer; otherwise through the staging copy).
            let xbc_copy = up(c, &read(c, &xbc));
            let apart = inputs_at(d, &xbc_copy, stride, off as u32, &dtb, &ab);
            let h = d.heads as usize;
            let dt_bias = randv(&mut r, h, 1.0);
            let raw: Vec<f32> = (0..case.t * h)
                .map(|i| {
                    let dt = case.dt[i] as f64;
                    (dt.exp_m1().ln() - dt_bias[i % h] as f64) as f32
                })
                .collect();
            let (rawb, biasb) = (up(c, &raw), up(c, &dt_bias));
            let raw_view = View::dense(&rawb, h as u32);
            let s0 = up(c, &case.s0);
            let mut state = SsmState::zeros(c, d).unwrap();
            let yb = c.zeros("y", case.t * hp).unwrap();
            let y = View::dense(&yb, hp as u32);
            let mut rec = Recorder::new(c);
            let sb = state.buffer(&mut rec).unwrap().clone();
            rec.copy(&s0, 0, &sb, 0, s0.len()).unwrap();
            let mut t = 0u32;
            while t < case.t as u32 {
                let bc = if t == 2 || t == 14 { &apart } else { &inp };
                let it = SsmInputs {
                    x: inp.x.rows_from(t),
                    b: bc.b.rows_from(t),
                    c: bc.c.rows_from(t),
                    dt: inp.dt.rows_from(t),
                    a_log: &ab,
                };
                if t == 5 {
                    let sb = state.buffer(&mut rec).unwrap().clone();
                    ssd_scan(&mut rec, d, 6, &it, &sb, y.rows_from(t), 4).unwrap();
                    t += 6;
                    continue;
                }
                if t % 2 == 1 {
                    let it = SsmInputs {
                        dt: raw_view.rows_from(t),
                        ..it
                    };
                    let rd = RawDt {
                        bias: &biasb,
                        lo: 0.0,
                        hi: f32::INFINITY,
                    };
                    ssm_step(&mut rec, d, &it, &mut state, y.rows_from(t), Some(rd), None).unwrap();
                } else {
                    ssm_step(&mut rec, d, &it, &mut state, y.rows_from(t), None, None).unwrap();
                }
                t += 1;
            }
            let sb = state.buffer(&mut rec).unwrap().clone();
            submit(rec);
            assert_close("step y", &read(c, &yb), &want_y, 1e-4);
            assert_close("step state", &read(c, &sb), &want_s, 1e-4);
        }
    }
}

#[test]
fn matmul_normed_equals_norm_then_product() {
    let mut r = rng(31);
    for c in plan_ctxs() {
        matmul_normed_case(c, &mut r);
    }
}

fn matmul_normed_case(c: &GpuContext, r: &mut StdRng) {
    let eps = 1e-5f32;
    // (rows, K, outputs, groups): decode rows (matvec NORM: one and several rows and groups, a
    // block of 130 outputs = two workgroups with clamped loads, mamba2-130m's in_proj K) and
    // prefill rows (matmul_xtex_sg NORM: row and output tiles not full, K not a multiple of 4,
    // K = 768).
    let mut cases = vec![
        (1usize, 16usize, 7usize, 1u32),
        (3, 64, 40, 2),
        (7, 48, 130, 3),
        (1, 768, 33, 1),
    ];
    if c.plan().subgroup8_kernels() || c.plan().gpu_products() {
        cases.extend([
            (8, 16, 7, 1),
            (33, 30, 70, 1),
            (64, 768, 40, 1),
            (70, 100, 130, 1),
        ]);
    }
    for &(t, k, o, groups) in &cases {
        for (bias, acc) in [(true, false), (false, true)] {
            let x = randv(r, t * k, 2.0);
            let w = randv(r, o * k, 1.0);
            let b = randv(r, o, 1.0);
            let y0 = randv(r, t * o, 1.0);
            // Rows at vec4-aligned offsets (copied into the matvec's texture), except for 3 rows
            // (packed by rows_to_texture).
            let (xs, xo) = if t == 3 { (k + 3, 1) } else { (k + 4, 4) };
            let (ys, yo) = (o + 5, 3);
            let xb = up(c, &pack(r, &x, t, k, xs, xo));
            let ypacked = pack(r, &y0, t, o, ys, yo);
            let yb = up(c, &ypacked);
            let bb = up(c, &b);
            let m = GpuMatrix::from_f32(c, "w", &w, o, k).unwrap();
            assert!(matmul_normed_supported(c, t as u32, &m, groups));
            let mut rec = Recorder::new(c);
            let (xv, yv) = (
                View::new(&xb, xs as u32, xo as u32),
                View::new(&yb, ys as u32, yo as u32),
            );
            matmul_normed(
                &mut rec,
                t as u32,
                xv,
                groups,
                eps,
                &m,
                bias.then_some(&bb),
                yv,
                acc,
                None,
            )
            .unwrap();
            submit(rec);
            let seg = k / groups as usize;
            let mut want = vec![0.0f64; t * o];
            for i in 0..t {
                let row = &x[i * k..(i + 1) * k];
                let n: Vec<f64> = row
                    .chunks(seg)
                    .flat_map(|g| {
                        let ms = g.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / seg as f64;
                        let s = 1.0 / (ms + eps as f64).sqrt();
                        g.iter().map(move |&v| v as f64 * s)
                    })
                    .collect();
                for j in 0..o {
                    let mut v: f64 = (0..k).map(|q| n[q] * w[j * k + q] as f64).sum();
                    if bias {
                        v += b[j] as f64;
                    }
                    if acc {
                        v += y0[i * o + j] as f64;
                    }
                    want[i * o + j] = v;
                }
            }
            let all = read(c, &yb);
            let what = format!(
                "matmul_normed ({}) T={t} K={k} O={o} G={groups} bias={bias} acc={acc}",
                c.kernels()
            );
            assert_close(&what, &unpack(&all, t, o, ys, yo), &want, 2e-5);
            for (i, (a, b)) in all.iter().zip(&ypacked).enumerate() {
                let inside = i >= yo && (i - yo) / ys < t && (i - yo) % ys < o;
                assert!(inside || a == b, "{what} wrote outside its window at {i}");
            }
        }
    }
    // What the fused kernels do not take is an error, not a wrong product: K / groups not a
    // multiple of 4, packed-f16 weights, too many rows for the matvec, several groups or f16
    // weights in the prefill product.
    let w = randv(r, 8 * 24, 1.0);
    let m = GpuMatrix::from_f32(c, "w", &w, 8, 24).unwrap();
    let m16 = GpuMatrix::from_f32_as(c, "w", &w, 8, 24, WeightFormat::F16).unwrap();
    let xb = up(c, &randv(r, 24 * 8, 1.0));
    let yb = c.zeros("y", 8 * 8).unwrap();
    for (mm, rows, groups) in [(&m, 1, 4), (&m16, 1, 1), (&m, 8, 1), (&m, 1, 0)] {
        let mut rec = Recorder::new(c);
        let e = matvec_normed(
            &mut rec,
            rows,
            View::dense(&xb, 24),
            groups,
            1e-5,
            mm,
            None,
            View::dense(&yb, 8),
            false,
            None,
        );
        assert!(
            matches!(e, Err(GpuError::Shape { .. })),
            "rows {rows} groups {groups}: {e:?}"
        );
    }
    for (mm, groups) in [(&m, 2), (&m16, 1)] {
        let mut rec = Recorder::new(c);
        let (xv, yv) = (View::dense(&xb, 24), View::dense(&yb, 8));
        let e = matmul_normed(&mut rec, 8, xv, groups, 1e-5, mm, None, yv, false, None);
        assert!(
            matches!(e, Err(GpuError::Shape { .. })),
            "8 rows, groups {groups}: {e:?}"
        );
    }
}

#[test]
fn matvec_normed_runs_the_conv_step() {
    let mut r = rng(33);
    for c in plan_ctxs() {
        conv_step_case(c, &mut r);
    }
}

fn conv_step_case(c: &GpuContext, r: &mut StdRng) {
    let eps = 1e-5f32;
    // in_proj-like: 40 outputs of which rows 8..32 are the conv's channels; kernels 4 and 2,
    // with and without bias, two consecutive tokens (the state carries).
    let (k_in, o, first, ch) = (32usize, 40usize, 8usize, 24usize);
    for (kc, with_bias) in [(4usize, true), (2, false)] {
        let w = randv(r, o * k_in, 1.0);
        let m = GpuMatrix::from_f32(c, "w", &w, o, k_in).unwrap();
        let cw = randv(r, ch * kc, 1.0);
        let cbias = randv(r, ch, 1.0);
        let mut s: Vec<f32> = randv(r, (kc - 1) * ch, 1.0);
        let (cwb, cbb, sb) = (up(c, &cw), up(c, &cbias), up(c, &s));
        let yb = c.zeros("y", o).unwrap();
        let outb = c.zeros("out", ch + 3).unwrap();
        for token in 0..2 {
            let x = randv(r, k_in, 2.0);
            let xb = up(c, &x);
            let mut rec = Recorder::new(c);
            let conv = ConvStep {
                weight: &cwb,
                bias: with_bias.then_some(&cbb),
                state: &sb,
                k: kc as u32,
                first_row: first as u32,
                channels: ch as u32,
                out: View::new(&outb, ch as u32, 3),
            };
            let (xv, yv) = (View::dense(&xb, k_in as u32), View::dense(&yb, o as u32));
            matvec_normed(&mut rec, 1, xv, 1, eps, &m, None, yv, false, Some(conv)).unwrap();
            submit(rec);
            let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / k_in as f64;
            let sc = 1.0 / (ms + eps as f64).sqrt();
            let y: Vec<f64> = (0..o)
                .map(|j| {
                    (0..k_in)
                        .map(|q| x[q] as f64 * sc * w[j * k_in + q] as f64)
                        .sum()
                })
                .collect();
            let what = format!(
                "conv-fused ({}) K={kc} bias={with_bias} token {token}",
                c.kernels()
            );
            assert_close(&format!("{what}: y"), &read(c, &yb), &y, 2e-5);
            let out: Vec<f64> = (0..ch)
                .map(|cc| {
                    let mut a = cw[cc * kc + kc - 1] as f64 * y[first + cc];
                    if with_bias {
                        a += cbias[cc] as f64;
                    }
                    for j in 0..kc - 1 {
                        a += cw[cc * kc + j] as f64 * s[j * ch + cc] as f64;
                    }
                    silu(a)
                })
                .collect();
            assert_close(&format!("{what}: conv"), &read(c, &outb)[3..], &out, 2e-5);
            // The state shifts by one row and takes this row's xBC values last.
            let mut next = s.clone();
            for j in 0..kc - 1 {
                for cc in 0..ch {
                    next[j * ch + cc] = if j + 2 < kc {
                        s[(j + 1) * ch + cc]
                    } else {
                        y[first + cc] as f32
                    };
                }
            }
            let want: Vec<f64> = next.iter().map(|&v| v as f64).collect();
            assert_close(&format!("{what}: state"), &read(c, &sb), &want, 2e-5);
            s = read(c, &sb);
        }
    }
}

#[test]
fn ssm_step_applies_the_gate() {
    let mut r = rng(32);
    for c in plan_ctxs() {
        // The state in textures (N % 4 == 0), two groups, x / z at offsets.
        let d = SsmDims {
            heads: 4,
            head_dim: 8,
            state: 16,
            groups: 2,
        };
        let case = ScanCase::new(&mut r, d, 1);
        let (want_y, _) = case.reference(&case.s0);
        let hp = d.inner() as usize;
        let (xbc, dtb, ab, stride) = case.upload_layout(c, &mut r, 3, 1);
        let inp = inputs_at(d, &xbc, stride, 1, &dtb, &ab);
        let dskip = randv(&mut r, d.heads as usize, 1.0);
        let z = randv(&mut r, hp, 2.0);
        let (db, zb) = (up(c, &dskip), up(c, &[vec![9.0; 5], z.clone()].concat()));
        let mut state = SsmState::zeros(c, d).unwrap();
        let yb = c.zeros("y", hp).unwrap();
        let mut rec = Recorder::new(c);
        let sb = state.buffer(&mut rec).unwrap().clone();
        let s0 = up(c, &case.s0);
        rec.copy(&s0, 0, &sb, 0, s0.len()).unwrap();
        assert!(ssm_step_fuses_gate(c, &state));
        let gate = StepGate {
            d: &db,
            z: View::new(&zb, hp as u32, 5),
        };
        ssm_step(
            &mut rec,
            d,
            &inp,
            &mut state,
            View::dense(&yb, hp as u32),
            None,
            Some(gate),
        )
        .unwrap();
        submit(rec);
        let want: Vec<f64> = (0..hp)
            .map(|i| {
                let v = want_y[i] + dskip[i / d.head_dim as usize] as f64 * case.x[i] as f64;
                v * silu(z[i] as f64)
            })
            .collect();
        let what = format!("gated step y ({})", c.kernels());
        assert_close(&what, &read(c, &yb), &want, 1e-4);
    }
}

#[test]
fn memory_converter_matches_closed_formula() {
    let mut r = rng(13);
    let dims = SCAN_DIMS;
    for d in dims {
        let (h, p, n, g) = (
            d.heads as usize,
            d.head_dim as usize,
            d.state as usize,
            d.groups as usize,
        );
        let cap = 20usize;
        let case = ScanCase::new(&mut r, d, cap);
        for tau in [1usize, 13, 20] {
            let mut want = vec![0.0f64; h * p * n];
            for hh in 0..h {
                let gg = hh / (h / g);
                let a = -(case.a_log[hh] as f64).exp();
                for s in 0..tau {
                    let decay = (a
                        * (s + 1..tau)
                            .map(|q| case.dt[q * h + hh] as f64)
                            .sum::<f64>())
                    .exp();
                    let w = decay * case.dt[s * h + hh] as f64;
                    for pp in 0..p {
                        for nn in 0..n {
                            want[(hh * p + pp) * n + nn] += w
                                * case.x[s * h * p + hh * p + pp] as f64
                                * case.b[s * g * n + gg * n + nn] as f64;
                        }
                    }
                }
            }
            // The converter also equals the recurrence from zero.
            let (_, rec_s) = ScanCase {
                t: tau,
                ..ScanCase::new(&mut rng(0), d, 0)
            }
            .with(&case)
            .reference(&vec![0.0; h * p * n]);
            assert_close(
                "closed formula vs recurrence",
                &rec_s.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                &want,
                1e-5,
            );
            for c in [ctx(), small_ctx(), gpu_ctx(), gpu_wg_ctx(), portable_ctx()] {
                if std::ptr::eq(c, small_ctx()) && d.state_len() * 4 > 4096 {
                    continue; // one state does not fit the 4 KiB test limit
                }
                // Attention cache layout: dense k [cap, G*N], v [cap, H*P], dt [cap, H].
                let kb = up(c, &case.b);
                let vb = up(c, &case.x);
                let dtb = up(c, &case.dt);
                let ab = up(c, &case.a_log);
                for chunk in [1u32, 4, 64, 128] {
                    let state = up(c, &randv(&mut r, h * p * n, 5.0));
                    let mut rec = Recorder::new(c);
                    memory_converter(
                        &mut rec,
                        d,
                        tau as u32,
                        View::dense(&vb, (h * p) as u32),
                        View::dense(&kb, (g * n) as u32),
                        View::dense(&dtb, h as u32),
                        &ab,
                        &state,
                        chunk,
                    )
                    .unwrap();
                    submit(rec);
                    assert_close(
                        &format!("memory converter {d:?} tau={tau} Q={chunk}"),
                        &read(c, &state),
                        &want,
                        1e-4,
                    );
                }
            }
        }
    }
}

impl ScanCase {
    /// This case's sizes with `other`'s data (truncated to `self.t` rows).
    fn with(mut self, other: &ScanCase) -> Self {
        let (h, p, n, g) = (
            other.d.heads as usize,
            other.d.head_dim as usize,
            other.d.state as usize,
            other.d.groups as usize,
        );
        self.d = other.d;
        self.x = other.x[..self.t * h * p].to_vec();
        self.b = other.b[..self.t * g * n].to_vec();
        self.cm = other.cm[..self.t * g * n].to_vec();
        self.dt = other.dt[..self.t * h].to_vec();
        self.a_log = other.a_log.clone();
        self
    }
}

#[test]
fn shape_errors_are_reported() {
    let c = ctx();
    let x = c.zeros("x", 10).unwrap();
    let m = GpuMatrix::from_f32(c, "w", &[0.0; 12], 3, 4).unwrap();
    let y = c.zeros("y", 6).unwrap();
    let mut rec = Recorder::new(c);
    let e = matmul(
        &mut rec,
        3,
        View::dense(&x, 4),
        &m,
        None,
        View::dense(&y, 3),
        false,
    )
    .unwrap_err();
    assert!(matches!(e, GpuError::Shape { op: "matmul", .. }), "{e}");
    let e = rms_norm(
        &mut rec,
        2,
        5,
        View::dense(&x, 5),
        &x,
        View::dense(&x, 5),
        1e-5,
    )
    .unwrap_err();
    assert!(
        matches!(e, GpuError::Shape { .. }),
        "aliasing must be rejected: {e}"
    );
    let d = SsmDims {
        heads: 3,
        head_dim: 2,
        state: 2,
        groups: 2,
    };
    let good = SsmDims { heads: 2, ..d };
    let mut state = SsmState::zeros(c, good).unwrap();
    let inp = SsmInputs {
        x: View::dense(&x, 6),
        b: View::dense(&x, 4),
        c: View::dense(&x, 4),
        dt: View::dense(&x, 3),
        a_log: &x,
    };
    let e = ssm_step(
        &mut rec,
        d,
        &inp,
        &mut state,
        View::dense(&y, 6),
        None,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("H % G"), "{e}");
    // A state of other dims than the step's.
    let other = SsmDims { heads: 4, ..d };
    let e = ssm_step(
        &mut rec,
        other,
        &inp,
        &mut state,
        View::dense(&y, 8),
        None,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("state of"), "{e}");
    assert!(rec.is_empty());
    rec.submit().unwrap();
}

#[test]
fn steady_state_decode_creates_no_bind_groups() {
    let c = new_ctx(GpuOptions::default());
    let mut r = rng(14);
    let x = up(&c, &randv(&mut r, 16, 1.0));
    let w = GpuMatrix::from_f32(&c, "w", &randv(&mut r, 64, 1.0), 4, 16).unwrap();
    let nw = up(&c, &randv(&mut r, 16, 1.0));
    let (h1, y) = (c.zeros("h", 16).unwrap(), c.zeros("y", 4).unwrap());
    let step = |c: &GpuContext| {
        let mut rec = Recorder::new(c);
        rms_norm(
            &mut rec,
            1,
            16,
            View::dense(&x, 16),
            &nw,
            View::dense(&h1, 16),
            1e-5,
        )
        .unwrap();
        matmul(
            &mut rec,
            1,
            View::dense(&h1, 16),
            &w,
            None,
            View::dense(&y, 4),
            true,
        )
        .unwrap();
        rec.submit().unwrap();
    };
    step(&c);
    let n = c.bind_group_cache_len();
    for _ in 0..3 {
        step(&c);
    }
    assert_eq!(c.bind_group_cache_len(), n);
    c.wait_idle().unwrap();
}

/// Both profiler clocks name every kernel once per dispatch, and profiling changes no result
/// (the host clock submits each command alone, transfers included).
#[test]
fn profiler_reports_named_kernels() {
    for clock in [ProfileClock::Host, ProfileClock::Timestamps] {
        let c = new_ctx(GpuOptions {
            profiling: true,
            profile_clock: Some(clock),
            ..Default::default()
        });
        assert_eq!(c.profile_clock(), clock);
        if clock == ProfileClock::Timestamps && !c.has_timestamps() {
            assert!(!c.profiling());
            continue; // nothing to time this way on this adapter
        }
        assert!(c.profiling());
        let mut r = rng(15);
        let x = up(&c, &randv(&mut r, 64 * 32, 1.0));
        let w = GpuMatrix::from_f32(&c, "w", &randv(&mut r, 32 * 32, 1.0), 32, 32).unwrap();
        let nw = up(&c, &randv(&mut r, 32, 1.0));
        let run = |c: &GpuContext| -> Vec<f32> {
            let (xc, h1, y) = (
                c.zeros("xc", 64 * 32).unwrap(),
                c.zeros("h", 64 * 32).unwrap(),
                c.zeros("y", 64 * 32).unwrap(),
            );
            let mut rec = Recorder::new(c);
            rec.copy(&x, 0, &xc, 0, 64 * 32).unwrap();
            rms_norm(
                &mut rec,
                64,
                32,
                View::dense(&xc, 32),
                &nw,
                View::dense(&h1, 32),
                1e-5,
            )
            .unwrap();
            matmul(
                &mut rec,
                64,
                View::dense(&h1, 32),
                &w,
                None,
                View::dense(&y, 32),
                false,
            )
            .unwrap();
            rec.submit().unwrap();
            read(c, &y)
        };
        let profiled = run(&c);
        let report = pollster::block_on(c.profile_collect()).unwrap();
        let names: Vec<&str> = report.iter().map(|r| r.0.as_str()).collect();
        assert!(
            names.iter().any(|n| n.starts_with("matmul"))
                && names.iter().any(|n| n.starts_with("rms_norm")),
            "{clock:?}: {report:?}"
        );
        // Transfers are timed only by the host clock (timestamps bracket passes).
        assert_eq!(
            names.contains(&"copy"),
            clock == ProfileClock::Host,
            "{report:?}"
        );
        assert!(report.iter().all(|r| r.1 >= 0.0 && r.2 == 1), "{report:?}");
        c.set_profiling(false);
        assert_eq!(profiled, run(&c), "{clock:?}: profiling changed a result");
        assert!(!profiled.iter().all(|&v| v == 0.0));
    }
}

/// `cargo test -p transmamba-tests --test gpu_kernels bench -- --ignored --nocapture`
/// (variants are interleaved so a busy machine affects them alike).
#[test]
#[ignore]
fn bench_matmul_and_scan() {
    use std::time::Instant;
    let checked = ctx();
    let unchecked = new_ctx(GpuOptions {
        unchecked_shaders: true,
        ..Default::default()
    });
    println!(
        "adapter: {} ({:?})",
        checked.info.name, checked.info.backend
    );
    let mut r = rng(16);
    let (t, k, o) = (512usize, 768usize, 1536usize);
    let x = randv(&mut r, t * k, 1.0);
    let w = randv(&mut r, o * k, 1.0);
    let flops = 2.0 * (t * k * o) as f64;
    let mut setups = Vec::new();
    for (cname, c) in [("checked", checked), ("unchecked", &unchecked)] {
        let xb = up(c, &x);
        let m = GpuMatrix::from_f32(c, "w", &w, o, k).unwrap();
        let yb = c.zeros("y", t * o).unwrap();
        setups.push((cname, c, xb, m, yb));
    }
    let time = |c: &GpuContext, f: &dyn Fn(&mut Recorder)| {
        let mut rec = Recorder::new(c);
        f(&mut rec);
        rec.submit().unwrap();
        c.wait_idle().unwrap();
        let t0 = Instant::now();
        let mut rec = Recorder::new(c);
        f(&mut rec);
        rec.submit().unwrap();
        c.wait_idle().unwrap();
        t0.elapsed().as_secs_f64()
    };
    for rows in [512usize, 64, 4, 1] {
        for kernel in [MatmulKernel::Tiled, MatmulKernel::MatVec] {
            if rows == 512 && kernel == MatmulKernel::MatVec {
                continue;
            }
            for (cname, c, xb, m, yb) in &setups {
                let s = time(c, &|rec| {
                    matmul_using(
                        rec,
                        rows as u32,
                        View::dense(xb, k as u32),
                        m,
                        None,
                        View::dense(yb, o as u32),
                        false,
                        kernel,
                    )
                    .unwrap()
                });
                let f = flops * rows as f64 / t as f64;
                println!(
                    "matmul {kernel:?} {cname} T={rows} in={k} out={o}: {:.2} ms, {:.2} GFLOP/s",
                    s * 1e3,
                    f / s / 1e9
                );
            }
        }
    }
    let t0 = Instant::now();
    let mut y = vec![0.0f32; t * o];
    for i in 0..t {
        for j in 0..o {
            let mut s = 0.0f32;
            for q in 0..k {
                s += x[i * k + q] * w[j * k + q];
            }
            y[i * o + j] = s;
        }
    }
    let s = t0.elapsed().as_secs_f64();
    println!(
        "CPU naive loop (test profile): {:.1} ms, {:.2} GFLOP/s (y0 {})",
        s * 1e3,
        flops / s / 1e9,
        y[0]
    );

    let d = SsmDims {
        heads: 24,
        head_dim: 64,
        state: 128,
        groups: 1,
    };
    let case = ScanCase::new(&mut r, d, 512);
    for (cname, c) in [("checked", checked), ("unchecked", &unchecked)] {
        let (xbc, dtb, ab, stride) = case.upload(c, &mut r);
        let inp = inputs(d, &xbc, stride, &dtb, &ab);
        let state = up(c, &case.s0);
        let yb = c.zeros("y", 512 * d.inner() as usize).unwrap();
        for chunk in [0u32, 32, 64, 128] {
            let s = time(c, &|rec| {
                if chunk == 0 {
                    ssm_sequential_scan(rec, d, 512, &inp, &state, View::dense(&yb, d.inner()))
                        .unwrap();
                } else {
                    ssd_scan(
                        rec,
                        d,
                        512,
                        &inp,
                        &state,
                        View::dense(&yb, d.inner()),
                        chunk,
                    )
                    .unwrap();
                }
            });
            println!(
                "scan {cname} T=512 H=24 P=64 N=128 chunk={chunk} (0 = sequential): {:.1} ms",
                s * 1e3
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// Kernel-design micro-benchmarks: raw WGSL variants run through wgpu directly, interleaved in
// one process so a busy machine affects them alike.
// `cargo test -p transmamba-tests --test gpu_kernels design -- --ignored --nocapture`

mod design {
    use super::*;
    use std::time::Instant;

    pub const HDR: &str = "struct Params { t: u32, k: u32, rows: u32, col0: u32, x_stride: u32, x_off: u32, y_stride: u32, y_off: u32, flags: u32, ldw4: u32, }
@group(0) @binding(0) var<uniform> p: Params;
";

    /// `HDR`'s params for a dense `[t, k] x [o, k]^T` product: X and Y rows packed, no flags.
    pub fn dense_params(t: usize, k: usize, o: usize) -> [u32; 10] {
        let (t, k, o) = (t as u32, k as u32, o as u32);
        [t, k, o, 0, k, 0, o, 0, 0, o / 4]
    }

    /// `w` [o, k] laid out [k, o] (layout A of the design kernels).
    pub fn transposed(w: &[f32], o: usize, k: usize) -> Vec<f32> {
        let mut wt = vec![0.0f32; k * o];
        for j in 0..o {
            for q in 0..k {
                wt[q * o + j] = w[j * k + q];
            }
        }
        wt
    }

    pub fn pipeline(c: &GpuContext, src: &str, unchecked: bool) -> wgpu::ComputePipeline {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some("design"),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        };
        let m = if unchecked {
            unsafe {
                c.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        } else {
            c.device.create_shader_module(desc)
        };
        c.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("design"),
                layout: None,
                module: &m,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
    }

    pub fn uniform(c: &GpuContext, p: &[u32]) -> wgpu::Buffer {
        let mut v = p.to_vec();
        v.resize(64, 0);
        let b = c.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 256,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        c.queue.write_buffer(&b, 0, bytemuck::cast_slice(&v));
        b
    }

    /// Seconds per dispatch (best of `tries` submits of `reps` dispatches).
    pub fn time(
        c: &GpuContext,
        pipe: &wgpu::ComputePipeline,
        bufs: &[&wgpu::Buffer],
        groups: [u32; 3],
        reps: u32,
        tries: u32,
    ) -> f64 {
        let layout = pipe.get_bind_group_layout(0);
        let entries: Vec<_> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bg = c.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let run = |n: u32| {
            let mut enc = c.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(pipe);
                pass.set_bind_group(0, &bg, &[]);
                for _ in 0..n {
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                }
            }
            c.queue.submit([enc.finish()]);
            c.wait_idle().unwrap();
        };
        run(1);
        let mut best = f64::MAX;
        for _ in 0..tries {
            let t0 = Instant::now();
            run(reps);
            best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
        }
        best
    }

    /// Layout A (current): wt[k * ldw4 + oq] vec4 over 4 outputs; X scalar. `RT` rows per
    /// invocation, rows taken from workgroup_id (uniform) when `uni`, else from gid.y with an
    /// (wx, wy) workgroup.
    pub fn a_kernel(rt: usize, wx: u32, wy: u32, uni: bool, locals: bool) -> String {
        let mut s = String::from(HDR);
        s += "@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> ys: array<f32>;
";
        s += &format!("@compute @workgroup_size({wx}, {wy})\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {{\n");
        s += "  let oq = gid.x;\n";
        if uni {
            s += &format!("  let t0 = wid.y * {rt}u;\n");
        } else {
            s += &format!("  let t0 = gid.y * {rt}u;\n");
        }
        if locals {
            s += "  let kk = p.k; let ldw4 = p.ldw4; let tl = p.t - 1u; let xst = p.x_stride; let xo = p.x_off;\n";
        } else {
            s += "  let tl = p.t - 1u;\n";
        }
        let (kk, ldw4, xst, xo) = if locals {
            ("kk", "ldw4", "xst", "xo")
        } else {
            ("p.k", "p.ldw4", "p.x_stride", "p.x_off")
        };
        s += &format!("  if (oq >= {ldw4} || t0 >= p.t) {{ return; }}\n");
        for r in 0..rt {
            s += &format!(
                "  let x{r} = min(t0 + {r}u, tl) * {xst} + {xo};\n  var c{r} = vec4<f32>(0.0);\n"
            );
        }
        s += &format!(
            "  var wi = oq;\n  for (var k = 0u; k < {kk}; k += 1u) {{\n    let b = wt[wi];\n"
        );
        for r in 0..rt {
            s += &format!("    c{r} += xs[x{r} + k] * b;\n");
        }
        s += &format!("    wi += {ldw4};\n  }}\n");
        for r in 0..rt {
            s += &format!("  if (t0 + {r}u < p.t) {{ let yb = (t0 + {r}u) * p.y_stride + p.y_off + oq * 4u; ys[yb] = c{r}.x; ys[yb + 1u] = c{r}.y; ys[yb + 2u] = c{r}.z; ys[yb + 3u] = c{r}.w; }}\n");
        }
        s += "}\n";
        s
    }

    /// Dot layout: w[o * k4 + i] vec4 along k (W row-major [out, in]); X vec4 along k.
    /// Each invocation: `rt` rows x `ro` outputs. Rows from workgroup_id.y when `uni`.
    pub fn dot_kernel(rt: usize, ro: usize, wx: u32, wy: u32, uni: bool, unroll: usize) -> String {
        let mut s = String::from(HDR);
        s += "@group(0) @binding(1) var<storage, read> xs: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> ys: array<f32>;
";
        s += &format!("@compute @workgroup_size({wx}, {wy})\nfn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {{\n");
        s += &format!("  let o0 = gid.x * {ro}u;\n");
        if uni {
            s += &format!("  let t0 = wid.y * {rt}u;\n");
        } else {
            s += &format!("  let t0 = gid.y * {rt}u;\n");
        }
        s += "  let k4 = p.k / 4u; let tl = p.t - 1u; let ol = p.rows - 1u; let xst = p.x_stride / 4u; let xo = p.x_off / 4u;\n";
        s += "  if (o0 >= p.rows || t0 >= p.t) { return; }\n";
        for r in 0..rt {
            s += &format!("  let x{r} = min(t0 + {r}u, tl) * xst + xo;\n");
        }
        for j in 0..ro {
            s += &format!("  let w{j} = min(o0 + {j}u, ol) * k4;\n");
        }
        for r in 0..rt {
            for j in 0..ro {
                s += &format!("  var c{r}_{j} = 0.0;\n");
            }
        }
        s += &format!("  var i = 0u;\n  for (; i + {unroll}u <= k4; i += {unroll}u) {{\n");
        for u in 0..unroll {
            for r in 0..rt {
                s += &format!("    let a{r}_{u} = xs[x{r} + i + {u}u];\n");
            }
            for j in 0..ro {
                s += &format!("    let b{j}_{u} = w[w{j} + i + {u}u];\n");
                for r in 0..rt {
                    s += &format!("    c{r}_{j} += dot(a{r}_{u}, b{j}_{u});\n");
                }
            }
        }
        s += "  }\n  for (; i < k4; i += 1u) {\n";
        for r in 0..rt {
            s += &format!("    let a{r} = xs[x{r} + i];\n");
        }
        for j in 0..ro {
            s += &format!("    let b{j} = w[w{j} + i];\n");
            for r in 0..rt {
                s += &format!("    c{r}_{j} += dot(a{r}, b{j});\n");
            }
        }
        s += "  }\n";
        for r in 0..rt {
            for j in 0..ro {
                s += &format!("  if (t0 + {r}u < p.t && o0 + {j}u < p.rows) {{ ys[(t0 + {r}u) * p.y_stride + p.y_off + o0 + {j}u] = c{r}_{j}; }}\n");
            }
        }
        s += "}\n";
        s
    }
}

#[test]
#[ignore]
fn design_matmul_variants() {
    use design::*;
    let c = ctx();
    println!("adapter: {} ({:?})", c.info.name, c.info.backend);
    let mut r = rng(21);
    let k = 768usize;
    let o = 1536usize;
    let tmax = 512usize;
    let x = randv(&mut r, tmax * k, 1.0);
    let w = randv(&mut r, o * k, 1.0);
    // Layout A: [k, o] transposed.
    let wt = transposed(&w, o, k);
    let xb = up(c, &x);
    let wab = up(c, &wt);
    let wdb = up(c, &w);
    let yb = c.zeros("y", tmax * o.max(3352)).unwrap();
    let only = std::env::var("TM_DESIGN").unwrap_or_default();
    for &t in &[512usize, 1] {
        let params = dense_params(t, k, o);
        let ub = uniform(c, &params);
        let flops = 2.0 * (t * k * o) as f64;
        let mut variants: Vec<(String, String, [u32; 3], bool)> = Vec::new();
        let q = (o / 4) as u32;
        let tt = t as u32;
        if t > 1 {
            variants.push((
                "A cur 4x4 wg8x8".into(),
                a_kernel(4, 8, 8, false, false),
                [q / 8, tt.div_ceil(4).div_ceil(8), 1],
                true,
            ));
            for &(rt, wx) in &[(4usize, 64u32), (8, 64), (16, 64), (8, 8), (16, 8)] {
                variants.push((
                    format!("A uni {rt}x4 wg{wx}"),
                    a_kernel(rt, wx, 1, true, true),
                    [q.div_ceil(wx), tt.div_ceil(rt as u32), 1],
                    true,
                ));
            }
            for &(rt, ro, wx, wy, uni, un) in &[
                (4usize, 4usize, 8u32, 8u32, false, 1usize),
                (4, 4, 64, 1, false, 1),
                (4, 4, 64, 1, true, 1),
                (8, 1, 64, 1, true, 1),
                (8, 2, 64, 1, true, 1),
                (16, 1, 64, 1, true, 1),
                (8, 4, 64, 1, true, 1),
                (4, 4, 64, 1, true, 2),
            ] {
                let gy = if uni {
                    tt.div_ceil(rt as u32)
                } else {
                    tt.div_ceil(rt as u32).div_ceil(wy)
                };
                variants.push((
                    format!("dot {rt}x{ro} wg{wx}x{wy} uni={uni} unroll={un}"),
                    dot_kernel(rt, ro, wx, wy, uni, un),
                    [(o as u32 / ro as u32).div_ceil(wx), gy, 1],
                    false,
                ));
            }
        } else {
            variants.push((
                "A cur matvec (1x4, 2 acc)".into(),
                a_kernel(1, 64, 1, false, false),
                [q.div_ceil(64), 1, 1],
                true,
            ));
            variants.push((
                "A uni 1x4 wg64".into(),
                a_kernel(1, 64, 1, true, true),
                [q.div_ceil(64), 1, 1],
                true,
            ));
            for &(ro, wx, un) in &[
                (1usize, 64u32, 1usize),
                (1, 64, 4),
                (2, 64, 2),
                (4, 64, 1),
                (4, 64, 2),
                (1, 8, 4),
            ] {
                variants.push((
                    format!("dot 1x{ro} wg{wx} unroll={un}"),
                    dot_kernel(1, ro, wx, 1, true, un),
                    [(o as u32 / ro as u32).div_ceil(wx), 1, 1],
                    false,
                ));
            }
        }
        let mut variants: Vec<(String, String, [u32; 3], u8)> = variants
            .into_iter()
            .map(|(a, b, c, d)| (a, b, c, d as u8))
            .collect();
        if c.has_subgroups() {
            for rtl in [1u32, 2, 4] {
                if let Ok(src) = std::fs::read_to_string(format!("/tmp/sg{rtl}.wgsl")) {
                    variants.push((
                        format!("sg 8x{rtl} rows x 32 outs"),
                        src,
                        [(o as u32).div_ceil(32), tt.div_ceil(8 * rtl), 1],
                        2,
                    ));
                }
            }
        }
        let dummy = c.zeros("bias", o).unwrap();
        for (name, src, groups, a) in &variants {
            if !only.is_empty() && !name.contains(&only) {
                continue;
            }
            for unchecked in [false, true] {
                let pipe = pipeline(c, src, unchecked);
                let wb = if *a == 1 { &wab } else { &wdb };
                let reps = if t == 1 { 20 } else { 2 };
                let s = if *a == 2 {
                    let mut pp = params;
                    pp[9] = (k / 4) as u32;
                    let ub2 = uniform(c, &pp);
                    time(
                        c,
                        &pipe,
                        &[&ub2, xb.raw(), wb.raw(), dummy.raw(), yb.raw()],
                        *groups,
                        reps,
                        3,
                    )
                } else {
                    time(
                        c,
                        &pipe,
                        &[&ub, xb.raw(), wb.raw(), yb.raw()],
                        *groups,
                        reps,
                        3,
                    )
                };
                // Check against CPU for a few outputs.
                let got = read(c, &yb);
                let mut bad = 0;
                for &(i, j) in &[(0usize, 0usize), (t - 1, o - 1), (t / 2, 37)] {
                    let want: f64 = (0..k)
                        .map(|q| x[i * k + q] as f64 * w[j * k + q] as f64)
                        .sum();
                    if (got[i * o + j] as f64 - want).abs() > 1e-3 * (1.0 + want.abs()) {
                        bad += 1;
                    }
                }
                println!(
                    "T={t} {name:40} unchecked={unchecked:5}: {:8.3} ms {:7.2} GFLOP/s {:6.2} GB/s(W){}",
                    s * 1e3,
                    flops / s / 1e9,
                    (k * o * 4) as f64 / s / 1e9,
                    if bad > 0 { " WRONG" } else { "" }
                );
                c.queue.write_buffer(yb.raw(), 0, &[0u8; 64]);
            }
        }
    }
}

/// What a load costs on this adapter (lavapipe: per-lane loops vs broadcasts vs gathers).
#[test]
#[ignore]
fn design_load_costs() {
    use design::*;
    let c = ctx();
    let src = up(c, &[1.0f32; 1 << 20]);
    let out = c.zeros("o", 1 << 16).unwrap();
    let ub = c.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 65536,
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    let iters = 1024u32;
    let nwg = 64u32;
    let mk = |decl: &str, pre: &str, load: &str| {
        format!(
            "{decl}
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  var acc = vec4<f32>(0.0);
  {pre}
  for (var i = 0u; i < {iters}u; i += 1u) {{
    acc = acc * 0.999 + {load};
  }}
  out[gid.x] = acc;
}}
"
        )
    };
    let sdecl = "@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;";
    let udecl = "@group(0) @binding(1) var<uniform> src: array<vec4<f32>, 4096>;";
    let variants: Vec<(&str, String, bool)> = vec![
        ("compute only", mk(sdecl, "let z = src[gid.x];", "z + vec4<f32>(f32(i))"), false),
        ("ssbo vec4, lane-divergent index", mk(sdecl, "", "src[(gid.x * 16u + i) & 262143u]"), false),
        ("ssbo vec4, uniform index (from wid)", mk(sdecl, "", "src[(wid.x * 16u + i) & 262143u]"), false),
        ("ssbo scalar-as-vec4 x4 uniform idx", mk(sdecl, "", "src[(wid.x * 16u + i) & 262143u].x * vec4<f32>(1.0)"), false),
        ("ubo vec4, uniform index", mk(udecl, "", "src[(wid.x * 16u + i) & 4095u]"), true),
        ("ubo vec4, lane-divergent index", mk(udecl, "", "src[(gid.x * 16u + i) & 4095u]"), true),
        ("private array, loop index", mk(sdecl, "var arr: array<vec4<f32>, 16>; for (var j = 0u; j < 16u; j += 1u) { arr[j] = src[j + gid.x]; }", "arr[i & 15u]"), false),
        ("subgroup: 1 ssbo vec4 + 8 broadcasts", mk(sdecl, "", "sgsum(src[(gid.x * 16u + i) & 262143u])"), false),
        ("texture rgba32f, lane-divergent", mk("@group(0) @binding(1) var src: texture_2d<f32>;", "", "textureLoad(src, vec2<i32>(i32((gid.x * 16u + i) & 255u), i32(wid.x & 255u)), 0)"), false),
        ("workgroup array, loop index", mk(&format!("{sdecl}\nvar<workgroup> sm: array<vec4<f32>, 1024>;"), "sm[lid] = src[gid.x]; workgroupBarrier(); let zz = src[0];", "sm[i & 1023u]"), false),
    ];
    let tex = c.device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: 256,
            height: 256,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING,
        view_formats: &[],
    });
    let texview = tex.create_view(&Default::default());
    for round in 0..2 {
        for (name, srcw, uni) in &variants {
            let srcw = &if srcw.contains("sgsum") {
                format!("{srcw}\nfn sgsum(v: vec4<f32>) -> vec4<f32> {{ return subgroupBroadcast(v, 0u) + subgroupBroadcast(v, 1u) + subgroupBroadcast(v, 2u) + subgroupBroadcast(v, 3u) + subgroupBroadcast(v, 4u) + subgroupBroadcast(v, 5u) + subgroupBroadcast(v, 6u) + subgroupBroadcast(v, 7u); }}\n")
            } else {
                srcw.clone()
            };
            let is_tex = srcw.contains("texture_2d");
            for unchecked in [false, true] {
                let pipe = pipeline(c, srcw, unchecked);
                let b1 = if *uni { &ub } else { src.raw() };
                // dummy params buffer at binding 0 is not used: bind only 1 and 2.
                let layout = pipe.get_bind_group_layout(0);
                let bg = c.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &layout,
                    entries: &[
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: if is_tex {
                                wgpu::BindingResource::TextureView(&texview)
                            } else {
                                b1.as_entire_binding()
                            },
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: out.raw().as_entire_binding(),
                        },
                    ],
                });
                let run = || {
                    let mut enc = c.device.create_command_encoder(&Default::default());
                    {
                        let mut pass = enc.begin_compute_pass(&Default::default());
                        pass.set_pipeline(&pipe);
                        pass.set_bind_group(0, &bg, &[]);
                        pass.dispatch_workgroups(nwg, 1, 1);
                    }
                    c.queue.submit([enc.finish()]);
                    c.wait_idle().unwrap();
                };
                run();
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let t0 = std::time::Instant::now();
                    run();
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                let lane_iters = (nwg * 64 * iters) as f64;
                if round == 1 {
                    println!("{name:40} unchecked={unchecked:5}: {:7.2} ms, {:6.2} ns per invocation-iteration (vec4)", best * 1e3, best / lane_iters * 1e9);
                }
            }
        }
    }
}

/// Old (transposed layout, vec4 over outputs, scalar X) vs the library kernels, same run.
/// `cargo test -p transmamba-tests --test gpu_kernels design_old_vs_new -- --ignored --nocapture`
#[test]
#[ignore]
fn design_old_vs_new() {
    use design::*;
    use std::time::Instant;
    let c = ctx();
    println!(
        "adapter: {} ({:?}), subgroup8: {}",
        c.info.name,
        c.info.backend,
        c.plan().subgroup8_kernels()
    );
    let mut r = rng(22);
    for &(t, k, o) in &[
        (512usize, 768usize, 1536usize),
        (1, 768, 1536),
        (1, 768, 3352),
        (4, 768, 3352),
    ] {
        let x = randv(&mut r, t * k, 1.0);
        let w = randv(&mut r, o * k, 1.0);
        let wt = transposed(&w, o, k);
        let xb = up(c, &x);
        let wab = up(c, &wt);
        let m = GpuMatrix::from_f32(c, "w", &w, o, k).unwrap();
        let yb = c.zeros("y", t * o).unwrap();
        let flops = 2.0 * (t * k * o) as f64;
        let params = dense_params(t, k, o);
        let ub = uniform(c, &params);
        let q = (o / 4) as u32;
        let old_src = if t >= 4 {
            a_kernel(4, 8, 8, false, false)
        } else {
            a_kernel(1, 64, 1, false, false)
        };
        let old_groups = if t >= 4 {
            [q.div_ceil(8), (t as u32).div_ceil(4).div_ceil(8), 1]
        } else {
            [q.div_ceil(64), t as u32, 1]
        };
        let old_pipe = pipeline(c, &old_src, false);
        let reps = if t == 1 { 10 } else { 2 };
        let lib = |kernel: MatmulKernel| {
            let run = |n: u32| {
                let mut rec = Recorder::new(c);
                for _ in 0..n {
                    matmul_using(
                        &mut rec,
                        t as u32,
                        View::dense(&xb, k as u32),
                        &m,
                        None,
                        View::dense(&yb, o as u32),
                        false,
                        kernel,
                    )
                    .unwrap();
                }
                rec.submit().unwrap();
                c.wait_idle().unwrap();
            };
            run(1);
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t0 = Instant::now();
                run(reps);
                best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
            }
            best
        };
        let kernels: &[MatmulKernel] = if t >= 8 {
            &[MatmulKernel::Tiled, MatmulKernel::TiledPortable]
        } else {
            &[MatmulKernel::MatVec, MatmulKernel::Tiled]
        };
        for round in 0..2 {
            let s = time(
                c,
                &old_pipe,
                &[&ub, xb.raw(), wab.raw(), yb.raw()],
                old_groups,
                reps,
                3,
            );
            let rep = |name: &str, s: f64| {
                println!(
                    "round {round} T={t} {k}->{o} {name:22}: {:8.3} ms {:6.2} GFLOP/s {:6.2} GB/s of W",
                    s * 1e3,
                    flops / s / 1e9,
                    (k * o * 4) as f64 / s / 1e9
                )
            };
            rep("old (transposed)", s);
            for &kn in kernels {
                rep(&format!("{kn:?}"), lib(kn));
            }
        }
    }
}

/// Per-kernel times of the chunked scan (timestamp profiler) beside the sequential scan.
/// `cargo test -p transmamba-tests --test gpu_kernels design_ssd_profile -- --ignored --nocapture`
#[test]
#[ignore]
fn design_ssd_profile() {
    use std::time::Instant;
    let c = new_ctx(GpuOptions {
        profiling: true,
        ..Default::default()
    });
    let mut r = rng(23);
    let t: u32 = std::env::var("TM_SSD_T")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    for d in [
        SsmDims {
            heads: 8,
            head_dim: 64,
            state: 64,
            groups: 1,
        },
        SsmDims {
            heads: 24,
            head_dim: 64,
            state: 128,
            groups: 1,
        },
    ] {
        let case = ScanCase::new(&mut r, d, t as usize);
        let (xbc, dtb, ab, stride) = case.upload(&c, &mut r);
        let inp = inputs(d, &xbc, stride, &dtb, &ab);
        let state = up(&c, &case.s0);
        let yb = c.zeros("y", t as usize * d.inner() as usize).unwrap();
        for chunk in [0u32, 64, 32] {
            let run = || {
                let mut rec = Recorder::new(&c);
                if chunk == 0 {
                    ssm_sequential_scan(&mut rec, d, t, &inp, &state, View::dense(&yb, d.inner()))
                        .unwrap();
                } else {
                    ssd_scan(
                        &mut rec,
                        d,
                        t,
                        &inp,
                        &state,
                        View::dense(&yb, d.inner()),
                        chunk,
                    )
                    .unwrap();
                }
                rec.submit().unwrap();
                c.wait_idle().unwrap();
            };
            run();
            c.profile_reset();
            let t0 = Instant::now();
            run();
            let s = t0.elapsed().as_secs_f64();
            let rep = pollster::block_on(c.profile_collect()).unwrap();
            let parts: Vec<String> = rep
                .iter()
                .map(|(n, ms, _)| format!("{n} {ms:.1}"))
                .collect();
            println!(
                "T={t} H={} P={} N={} chunk={chunk} (0 = sequential): {:.1} ms wall | {}",
                d.heads,
                d.head_dim,
                d.state,
                s * 1e3,
                parts.join(", ")
            );
        }
    }
}

#[test]
fn chunked_scan_with_several_tiles() {
    // P, N and Q above the 32-wide tiles of the subgroup and workgroup-memory kernels, none a
    // multiple of 32; and mamba2-130m's head shape (P 64, N 128) with a ragged last chunk; on
    // every plan.
    let mut r = rng(24);
    let shapes = [
        (
            SsmDims {
                heads: 4,
                head_dim: 40,
                state: 70,
                groups: 2,
            },
            &[37u32, 64, 100, 128][..],
        ),
        (
            SsmDims {
                heads: 2,
                head_dim: 64,
                state: 128,
                groups: 1,
            },
            &[64u32, 128][..],
        ),
    ];
    for (d, chunks) in shapes {
        let case = ScanCase::new(&mut r, d, 150);
        let (want_y, want_s) = case.reference(&case.s0);
        for c in plan_ctxs() {
            let (xbc, dtb, ab, stride) = case.upload(c, &mut r);
            let inp = inputs(d, &xbc, stride, &dtb, &ab);
            for &chunk in chunks {
                scan_matches(c, &case, &inp, chunk, (&want_y, &want_s));
            }
        }
    }
}

/// Prototype: decode matvec with W in an rgba32float texture (texel fetches are gathers on
/// lavapipe, storage loads per-lane loops) against the library kernels, same run.
#[test]
#[ignore]
fn design_texture_matvec() {
    use design::*;
    use std::time::Instant;
    let c = ctx();
    let mut r = rng(25);
    let (k, o) = (768usize, 3352usize);
    let x = randv(&mut r, k, 1.0);
    let w = randv(&mut r, o * k, 1.0);
    let xb = up(c, &x);
    let yb = c.zeros("y", o).unwrap();
    let m = GpuMatrix::from_f32(c, "w", &w, o, k).unwrap();
    let tex = c.device.create_texture(&wgpu::TextureDescriptor {
        label: None,
        size: wgpu::Extent3d {
            width: (k / 4) as u32,
            height: o as u32,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: wgpu::TextureFormat::Rgba32Float,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    c.queue.write_texture(
        tex.as_image_copy(),
        bytemuck::cast_slice(&w),
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some((k * 4) as u32),
            rows_per_image: None,
        },
        wgpu::Extent3d {
            width: (k / 4) as u32,
            height: o as u32,
            depth_or_array_layers: 1,
        },
    );
    let view = tex.create_view(&Default::default());
    let src = format!("{HDR}
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var wt: texture_2d<f32>;
@group(0) @binding(3) var<storage, read_write> ys: array<f32>;
@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {{
  let o0 = wid.x * 32u;
  let ol = p.rows - 1u;
  let r0 = i32(min(o0 + lane, ol)); let r1 = i32(min(o0 + lane + 8u, ol));
  let r2 = i32(min(o0 + lane + 16u, ol)); let r3 = i32(min(o0 + lane + 24u, ol));
  var c0 = 0.0; var c1 = 0.0; var c2 = 0.0; var c3 = 0.0;
  let k8 = p.k / 32u;
  for (var i = 0u; i < k8; i += 1u) {{
    let kb = (i * 8u + lane) * 4u;
    let xv = vec4<f32>(xs[kb], xs[kb + 1u], xs[kb + 2u], xs[kb + 3u]);
    {body}
  }}
  if (o0 + lane < p.rows) {{ ys[o0 + lane] = c0; }}
  if (o0 + lane + 8u < p.rows) {{ ys[o0 + lane + 8u] = c1; }}
  if (o0 + lane + 16u < p.rows) {{ ys[o0 + lane + 16u] = c2; }}
  if (o0 + lane + 24u < p.rows) {{ ys[o0 + lane + 24u] = c3; }}
}}
",
        body = (0..8)
            .map(|l| format!("{{ let xb = subgroupBroadcast(xv, {l}u); let kk = i32(i * 8u + {l}u); c0 += dot(xb, textureLoad(wt, vec2<i32>(kk, r0), 0)); c1 += dot(xb, textureLoad(wt, vec2<i32>(kk, r1), 0)); c2 += dot(xb, textureLoad(wt, vec2<i32>(kk, r2), 0)); c3 += dot(xb, textureLoad(wt, vec2<i32>(kk, r3), 0)); }}\n    "))
            .collect::<String>()
    );
    let params = [1u32, k as u32, o as u32, 0, k as u32, 0, o as u32, 0, 0, 0];
    let ub = uniform(c, &params);
    let pipe = pipeline(c, &src, false);
    let layout = pipe.get_bind_group_layout(0);
    let bg = c.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: ub.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: xb.raw().as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: wgpu::BindingResource::TextureView(&view),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: yb.raw().as_entire_binding(),
            },
        ],
    });
    let reps = 10;
    let bench = |f: &dyn Fn()| {
        f();
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t0 = Instant::now();
            f();
            best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
        }
        best
    };
    let tex_run = || {
        let mut enc = c.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipe);
            pass.set_bind_group(0, &bg, &[]);
            for _ in 0..reps {
                pass.dispatch_workgroups((o as u32).div_ceil(32), 1, 1);
            }
        }
        c.queue.submit([enc.finish()]);
        c.wait_idle().unwrap();
    };
    let (xbr, ybr, mr) = (&xb, &yb, &m);
    let lib_run = |kn: MatmulKernel| {
        move || {
            let (xb, yb, m) = (xbr, ybr, mr);
            let mut rec = Recorder::new(c);
            for _ in 0..reps {
                matmul_using(
                    &mut rec,
                    1,
                    View::dense(xb, k as u32),
                    m,
                    None,
                    View::dense(yb, o as u32),
                    false,
                    kn,
                )
                .unwrap();
            }
            rec.submit().unwrap();
            c.wait_idle().unwrap();
        }
    };
    for round in 0..2 {
        let st = bench(&tex_run);
        let got = read(c, &yb);
        let want: f64 = (0..k)
            .map(|q| x[q] as f64 * w[(o - 1) * k + q] as f64)
            .sum();
        let ok = (got[o - 1] as f64 - want).abs() < 1e-3 * (1.0 + want.abs());
        let ss = bench(&lib_run(MatmulKernel::MatVec));
        let sp = bench(&lib_run(MatmulKernel::TiledPortable));
        let gb = |s: f64| (k * o * 4) as f64 / s / 1e9;
        println!(
            "round {round} T=1 {k}->{o}: texture+sg {:.3} ms ({:.2} GB/s, correct {ok}) | matvec {:.3} ms ({:.2} GB/s) | tiled portable {:.3} ms ({:.2} GB/s)",
            st * 1e3, gb(st), ss * 1e3, gb(ss), sp * 1e3, gb(sp)
        );
    }
}

/// Shapes whose index arithmetic would pass u32 (kernels index in u32) are refused with a shape
/// error, never wrapped into an aliasing offset (in debug builds a wrap would have panicked).
#[test]
fn index_arithmetic_past_u32_is_refused() {
    let c = ctx();
    let buf = up(c, &[0.0; 64]);
    let dst = up(c, &[0.0; 64]);
    let mut rec = Recorder::new(c);
    // A row offset that would wrap u32 (rows_from saturates): refused, not aliased to row 0.
    let far = View::dense(&buf, 1 << 16).rows_from(1 << 17);
    let e = copy_rows(&mut rec, 1, 4, far, View::dense(&dst, 4)).unwrap_err();
    assert!(matches!(e, GpuError::Shape { .. }), "{e}");
    let far = View::dense(&buf, 4).cols_from(u32::MAX);
    assert!(copy_rows(&mut rec, 1, 4, far, View::dense(&dst, 4)).is_err());
    // Dims whose state H·P·N passes u32.
    let huge = SsmDims {
        heads: 1 << 12,
        head_dim: 1 << 12,
        state: 1 << 12,
        groups: 1,
    };
    let view = View::dense(&buf, 1);
    let e = attention(&mut rec, huge, 1, 0, view, view, view, view, 1.0, None).unwrap_err();
    assert!(e.to_string().contains("u32"), "{e}");
    let d = SsmDims {
        heads: 2,
        head_dim: 2,
        state: 4,
        groups: 1,
    };
    // Queries at a position where p0 + nq wraps.
    let v4 = View::dense(&buf, 4);
    let e = attention(&mut rec, d, 2, u32::MAX, v4, v4, v4, v4, 1.0, None).unwrap_err();
    assert!(e.to_string().contains("u32"), "{e}");
}
