// Chunked SSD scan, pass 2, for the `gpu` plan: each chunk's own state contribution (zero
// initial state), as ssd_chunk_state.wgsl, computed as the small GEMM it is:
//   states[c, h, p, n] = sum_{s in chunk c} (w[s] x[s, h, p]) B[s, g, n],
//   w[s] = exp(acs[last] - acs[s]) * dt[s, h].
// A workgroup of 64 lanes owns a 32 (p) x 32 (n) tile of one (chunk, head), each lane 4 x 4;
// per step of 32 positions it stages w x and B in workgroup memory (consecutive lanes load
// consecutive p / n: coalesced), then each lane does 16 multiply-adds per 8 reads of workgroup
// memory. The per-invocation kernel reads x and B from memory for every multiply-add.
// Also the first half of the memory converter (MODEL.md step 4). Params as every ssd_* shader.
// bindings: 0 params | 1 x | 2 B | 3 dt | 4 acs | 5 states [nc, H, P, N] (rw)
// grid: x over ceil(P / 32) * ceil(N / 32) tiles, y over H, z over chunks.

#include ssd_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> bs: array<f32>;
@group(0) @binding(3) var<storage, read> dt: array<f32>;
@group(0) @binding(4) var<storage, read> acs: array<f32>;
@group(0) @binding(5) var<storage, read_write> states: array<f32>;

const E: u32 = 32u;
const S: u32 = 32u;

// [s][p] and [s][n] of the step's positions.
var<workgroup> xw: array<f32, 1024>;
var<workgroup> bt: array<f32, 1024>;
var<workgroup> wgt: array<f32, 32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tiles_n = (p.n + E - 1u) / E;
    let p0 = (wid.x / tiles_n) * E;
    let n0 = (wid.x % tiles_n) * E;
    let h = wid.y;
    let c = wid.z;
    let g = h / (p.h / p.g);
    let c0 = c * p.q;
    let c1 = min(c0 + p.q, p.t);
    let last = acs[(c1 - 1u) * p.h + h];
    let tp = lid / 8u;
    let tn = lid % 8u;
    var acc: array<vec4<f32>, 4>;
    for (var s0 = c0; s0 < c1; s0 += S) {
        if (lid < S) {
            let s = s0 + lid;
            var w = 0.0;
            if (s < c1) {
                w = exp(last - acs[s * p.h + h]) * dt[s * p.dt_stride + p.dt_off + h];
            }
            wgt[lid] = w;
        }
        workgroupBarrier();
        for (var e = lid; e < S * E; e += 64u) {
            let sl = e / E;
            let col = e % E;
            let s = min(s0 + sl, c1 - 1u);
            let pp = p0 + col;
            let nn = n0 + col;
            var xv = 0.0;
            if (pp < p.p) {
                xv = xs[s * p.x_stride + p.x_off + h * p.p + pp] * wgt[sl];
            }
            var bv = 0.0;
            if (nn < p.n) {
                bv = bs[s * p.b_stride + p.b_off + g * p.n + nn];
            }
            xw[e] = xv;
            bt[e] = bv;
        }
        workgroupBarrier();
        for (var sl = 0u; sl < S; sl += 1u) {
            let a = vec4<f32>(xw[sl * E + 4u * tp], xw[sl * E + 4u * tp + 1u],
                              xw[sl * E + 4u * tp + 2u], xw[sl * E + 4u * tp + 3u]);
            let b = vec4<f32>(bt[sl * E + 4u * tn], bt[sl * E + 4u * tn + 1u],
                              bt[sl * E + 4u * tn + 2u], bt[sl * E + 4u * tn + 3u]);
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }
    let base = (c * p.h + h) * p.p;
    for (var i = 0u; i < 4u; i += 1u) {
        let pp = p0 + 4u * tp + i;
        for (var j = 0u; j < 4u; j += 1u) {
            let nn = n0 + 4u * tn + j;
            if (pp < p.p && nn < p.n) {
                states[(base + pp) * p.n + nn] = acc[i][j];
            }
        }
    }
}
