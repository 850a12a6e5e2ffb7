// Chunked SSD scan, pass 4's output step for the `gpu` plan, as ssd_chunk_scan.wgsl's `scan`
// (its `cb` and `lmat` entries run first and fill L in the cl scratch):
//   y[t, h, p] = sum_{j <= t - c0} L[t, j, h] x[c0 + j, h, p]             (intra-chunk)
//              + exp(acs[t]) * sum_n C[t, g, n] S_init(c)[h, p, n]        (inter-chunk)
// Both sums are small GEMMs per (chunk, head): a workgroup of 64 lanes owns 32 rows t of one
// chunk x 32 columns p of one head, each lane 4 x 4, and stages 32 x 32 blocks of L and x (then
// C and S_init) in workgroup memory: 16 multiply-adds per 8 workgroup reads, where the
// per-invocation kernel loads both operands for every multiply-add. No D skip here.
// Params as every ssd_* shader; bindings as ssd_chunk_scan.wgsl (B and dt unused).
// bindings: 0 params | 1 x | 2 B | 3 C | 4 dt | 5 acs | 6 states | 7 cl scratch (rw) | 8 y (rw)
// grid: x over chunks * ceil(Q / 32), y over H, z over ceil(P / 32).

#include ssd_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(3) var<storage, read> cs: array<f32>;
@group(0) @binding(5) var<storage, read> acs: array<f32>;
@group(0) @binding(6) var<storage, read> states: array<f32>;
@group(0) @binding(7) var<storage, read_write> cl: array<f32>;
@group(0) @binding(8) var<storage, read_write> ys: array<f32>;

const E: u32 = 32u;

// [t][k] (L or C) and [k][p] (x or S_init transposed), k the reduced index of the step.
var<workgroup> lhs: array<f32, 1024>;
var<workgroup> rhs: array<f32, 1024>;

// acc[i][j] += sum_k lhs[4 tt + i][k] rhs[k][4 tp + j] over the staged step.
fn step(acc: ptr<function, array<vec4<f32>, 4>>, tt: u32, tp: u32) {
    for (var k = 0u; k < E; k += 1u) {
        let a = vec4<f32>(lhs[(4u * tt) * E + k], lhs[(4u * tt + 1u) * E + k],
                          lhs[(4u * tt + 2u) * E + k], lhs[(4u * tt + 3u) * E + k]);
        let b = vec4<f32>(rhs[k * E + 4u * tp], rhs[k * E + 4u * tp + 1u],
                          rhs[k * E + 4u * tp + 2u], rhs[k * E + 4u * tp + 3u]);
        (*acc)[0] += a.x * b;
        (*acc)[1] += a.y * b;
        (*acc)[2] += a.z * b;
        (*acc)[3] += a.w * b;
    }
}

@compute @workgroup_size(64)
fn scan(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tiles_q = (p.q + E - 1u) / E;
    let c = wid.x / tiles_q;
    let c0 = c * p.q;
    let t0 = c0 + (wid.x % tiles_q) * E;
    // Rows of this tile: t0 .. t1 (inside chunk c and the segment).
    let t1 = min(min(t0 + E, c0 + p.q), p.t);
    let h = wid.y;
    let g = h / (p.h / p.g);
    let p0 = wid.z * E;
    let tt = lid / 8u;
    let tp = lid % 8u;
    var intra: array<vec4<f32>, 4>;
    var inter: array<vec4<f32>, 4>;
    // Intra-chunk: j up to the tile's last row (L is zero past each row's diagonal).
    for (var j0 = 0u; t0 < t1 && c0 + j0 < t1; j0 += E) {
        for (var e = lid; e < E * E; e += 64u) {
            let r = e / E;
            let k = e % E;
            let t = t0 + r;
            let j = j0 + k;
            var l = 0.0;
            if (t < t1 && j < p.q) {
                l = cl[p.l_off + (t * p.q + j) * p.h + h];
            }
            lhs[e] = l;
            let s = c0 + j0 + r;
            let pp = p0 + k;
            var xv = 0.0;
            if (s < t1 && j0 + r < p.q && pp < p.p) {
                xv = xs[s * p.x_stride + p.x_off + h * p.p + pp];
            }
            rhs[e] = xv;
        }
        workgroupBarrier();
        step(&intra, tt, tp);
        workgroupBarrier();
    }
    // Inter-chunk: C [t, n] against the chunk's initial state S [p, n].
    let sb = (c * p.h + h) * p.p;
    for (var n0 = 0u; t0 < t1 && n0 < p.n; n0 += E) {
        for (var e = lid; e < E * E; e += 64u) {
            let r = e / E;
            let k = e % E;
            let t = t0 + r;
            let n = n0 + k;
            var cv = 0.0;
            if (t < t1 && n < p.n) {
                cv = cs[t * p.c_stride + p.c_off + g * p.n + n];
            }
            lhs[e] = cv;
            // rhs[k = n][pp]: lane e reads S[pp = p0 + k][n0 + r] (consecutive e: consecutive n
            // within a row of S would be better; S is small and cached).
            let pp = p0 + k;
            let nn = n0 + r;
            var sv = 0.0;
            if (pp < p.p && nn < p.n) {
                sv = states[(sb + pp) * p.n + nn];
            }
            rhs[r * E + k] = sv;
        }
        workgroupBarrier();
        step(&inter, tt, tp);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i += 1u) {
        let t = t0 + 4u * tt + i;
        if (t < t1) {
            let decay = exp(acs[t * p.h + h]);
            for (var jj = 0u; jj < 4u; jj += 1u) {
                let pp = p0 + 4u * tp + jj;
                if (pp < p.p) {
                    ys[t * p.y_stride + p.y_off + h * p.p + pp] = intra[i][jj] + decay * inter[i][jj];
                }
            }
        }
    }
}
