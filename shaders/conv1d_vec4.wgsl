// conv1d.wgsl's conv (MODEL.md step 2: causal depthwise conv over time + SiLU) for 4 channels
// and a block of ROWS rows per invocation. The taps sit right-aligned in a window of 4 (zero
// taps in front when K < 4) and the input rows slide through 4 registers, so each input row is
// loaded once per block instead of K times: on lavapipe every storage access is a per-lane loop
// whatever its width, so the accesses are the cost. Needs Dc, strides and offsets multiples of
// 4 and K <= 4 (the op checks, else conv1d.wgsl).
//   out[t, c] = silu(bias[c] + sum_{k<K} w[c*K + k] * src(t - K + 1 + k, c))
//   src(j, c) = xin[j*in_stride + in_off + c] for j >= 0, else state[(K - 1 + j)*Dc + c]
// flags: bit 0 = has bias.
// bindings: 0 params | 1 xin (vec4) | 2 w [Dc, K] | 3 bias [Dc] (vec4) | 4 state [K-1, Dc] (vec4, rw: shared layout)
//           | 5 out (vec4, rw)
// grid: 64-wide over ceil(T / ROWS) * Dc / 4, x + y * nwg.x (as grid64); c4 fastest.

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

const ROWS: u32 = 16u;

// Window slot s (0..4) of channels c..c+4: tap s - (4 - K), zero in front of the first tap.
fn tap(c: u32, s: u32) -> vec4<f32> {
    let pad = 4u - p.k;
    if (s < pad) {
        return vec4<f32>(0.0);
    }
    let k = s - pad;
    return vec4<f32>(w[c * p.k + k], w[(c + 1u) * p.k + k], w[(c + 2u) * p.k + k], w[(c + 3u) * p.k + k]);
}

// Pre-conv row j of channels 4*c4..: the input for j >= 0, else the carried state, zero before it
// (only reached under a zero tap).
fn src(j: i32, c4: u32, dc4: u32) -> vec4<f32> {
    if (j >= 0) {
        return xin[(u32(j) * p.in_stride + p.in_off) / 4u + c4];
    }
    let row = i32(p.k) - 1 + j;
    if (row < 0) {
        return vec4<f32>(0.0);
    }
    return state[u32(row) * dc4 + c4];
}

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
    let w0 = tap(c, 0u);
    let w1 = tap(c, 1u);
    let w2 = tap(c, 2u);
    let w3 = tap(c, 3u);
    var b0 = vec4<f32>(0.0);
    if ((p.flags & 1u) != 0u) {
        b0 = bias[c4];
    }
    let t0 = blk * ROWS;
    var v0 = src(i32(t0) - 3, c4, dc4);
    var v1 = src(i32(t0) - 2, c4, dc4);
    var v2 = src(i32(t0) - 1, c4, dc4);
    let t_end = min(t0 + ROWS, p.t);
    for (var t = t0; t < t_end; t += 1u) {
        let v3 = xin[(t * p.in_stride + p.in_off) / 4u + c4];
        let acc = b0 + w0 * v0 + w1 * v1 + w2 * v2 + w3 * v3;
        out[(t * p.out_stride + p.out_off) / 4u + c4] = acc / (1.0 + exp(-acc));
        v0 = v1;
        v1 = v2;
        v2 = v3;
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
