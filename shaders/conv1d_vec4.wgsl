// conv1d.wgsl's conv (MODEL.md step 2: causal depthwise conv over time + SiLU) for 4 channels
// and a block of 8 rows per invocation: the taps of the 4 channels are loaded once per block,
// the input rows as vec4s. On lavapipe every storage access is a per-lane loop whatever its
// width, so this does ~1/7 of the scalar kernel's accesses. Needs Dc, strides and offsets
// multiples of 4 and K <= 8 (the op checks, else conv1d.wgsl).
//   out[t, c] = silu(bias[c] + sum_{k<K} w[c*K + k] * src(t - K + 1 + k, c))
//   src(j, c) = xin[j*in_stride + in_off + c] for j >= 0, else state[(K - 1 + j)*Dc + c]
// flags: bit 0 = has bias.
// bindings: 0 params | 1 xin (vec4) | 2 w [Dc, K] | 3 bias [Dc] (vec4) | 4 state [K-1, Dc] (vec4, rw: shared layout)
//           | 5 out (vec4, rw)
// grid: 64-wide over ceil(T / 8) * Dc / 4, x + y * nwg.x (as grid64); c4 fastest.

struct Params {
    t: u32,
    dc: u32,
    k: u32,
    in_stride: u32,
    in_off: u32,
    out_stride: u32,
    out_off: u32,
    flags: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xin: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;

const ROWS: u32 = 8u;
const MAX_K: u32 = 8u;

@compute @workgroup_size(64)
fn conv(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let dc4 = p.dc / 4u;
    if (i >= (p.t + ROWS - 1u) / ROWS * dc4) {
        return;
    }
    let blk = i / dc4;
    let c4 = i - blk * dc4;
    let c = 4u * c4;
    // taps[k] = (w[c, k], w[c+1, k], w[c+2, k], w[c+3, k])
    var taps: array<vec4<f32>, MAX_K>;
    for (var k = 0u; k < p.k; k += 1u) {
        taps[k] = vec4<f32>(w[c * p.k + k], w[(c + 1u) * p.k + k], w[(c + 2u) * p.k + k], w[(c + 3u) * p.k + k]);
    }
    var b0 = vec4<f32>(0.0);
    if ((p.flags & 1u) != 0u) {
        b0 = bias[c4];
    }
    let t_end = min(blk * ROWS + ROWS, p.t);
    for (var t = blk * ROWS; t < t_end; t += 1u) {
        var acc = b0;
        for (var k = 0u; k < p.k; k += 1u) {
            let jj = i32(t) - i32(p.k) + 1 + i32(k);
            var v: vec4<f32>;
            if (jj >= 0) {
                v = xin[(u32(jj) * p.in_stride + p.in_off) / 4u + c4];
            } else {
                v = state[u32(i32(p.k) - 1 + jj) * dc4 + c4];
            }
            acc += taps[k] * v;
        }
        out[(t * p.out_stride + p.out_off) / 4u + c4] = acc / (1.0 + exp(-acc));
    }
}

// Decode (T == 1): the conv output and the conv-state update in one pass, 4 channels per
// invocation (each invocation owns its channels in every state row, so the shift is
// race-free): state rows j < K-2 take row j + 1, row K-2 takes the new input row.
// grid: 64-wide over Dc / 4, x + y * nwg.x (as grid64).
@compute @workgroup_size(64)
fn step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c4 = gid.x + gid.y * nwg.x * 64u;
    let dc4 = p.dc / 4u;
    if (c4 >= dc4) {
        return;
    }
    let c = 4u * c4;
    let km1 = p.k - 1u;
    let x = xin[p.in_off / 4u + c4];
    var acc = vec4<f32>(w[c * p.k + km1], w[(c + 1u) * p.k + km1], w[(c + 2u) * p.k + km1], w[(c + 3u) * p.k + km1]) * x;
    if ((p.flags & 1u) != 0u) {
        acc += bias[c4];
    }
    for (var k = 0u; k < km1; k += 1u) {
        let tap = vec4<f32>(w[c * p.k + k], w[(c + 1u) * p.k + k], w[(c + 2u) * p.k + k], w[(c + 3u) * p.k + k]);
        let s = state[k * dc4 + c4];
        acc += tap * s;
        // row k - 1 <- row k (row k was read just now, row k - 1 in the previous iteration)
        if (k > 0u) {
            state[(k - 1u) * dc4 + c4] = s;
        }
    }
    if (km1 > 0u) {
        state[(km1 - 1u) * dc4 + c4] = x;
    }
    out[p.out_off / 4u + c4] = acc / (1.0 + exp(-acc));
}
