// Causal depthwise conv over time + SiLU (MODEL.md step 2), and the conv-state update.
// conv:   out[t, c] = silu(bias[c] + sum_{k<K} w[c*K + k] * src(t - K + 1 + k, c))
//         src(j, c) = xin[j*in_stride + in_off + c] for j >= 0, else state[(K - 1 + j)*Dc + c]
// update_state: state[j, c] <- row T + j of (old state (K-1 rows) ++ new rows (T)), j < K-1.
//         One invocation per channel walks j upwards; it reads row T + j > j, never a row
//         it already overwrote, so the update is safe in place (also for T < K-1).
// flags: bit 0 = has bias.
// bindings: 0 params | 1 xin | 2 w [Dc, K] | 3 bias [Dc] | 4 state [K-1, Dc] (rw) | 5 out (rw)

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
@group(0) @binding(1) var<storage, read> xin: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn conv(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.t * p.dc) {
        return;
    }
    let t = i / p.dc;
    let c = i - t * p.dc;
    var acc = 0.0;
    if ((p.flags & 1u) != 0u) {
        acc = bias[c];
    }
    for (var k = 0u; k < p.k; k += 1u) {
        // source row j = t - (K - 1) + k, possibly negative
        let jj = i32(t) - i32(p.k) + 1 + i32(k);
        var v: f32;
        if (jj >= 0) {
            v = xin[u32(jj) * p.in_stride + p.in_off + c];
        } else {
            v = state[u32(i32(p.k) - 1 + jj) * p.dc + c];
        }
        acc += w[c * p.k + k] * v;
    }
    out[t * p.out_stride + p.out_off + c] = acc / (1.0 + exp(-acc));
}

@compute @workgroup_size(64)
fn update_state(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = gid.x + gid.y * nwg.x * 64u;
    if (c >= p.dc) {
        return;
    }
    let km1 = p.k - 1u;
    for (var j = 0u; j < km1; j += 1u) {
        let m = p.t + j;
        var v: f32;
        if (m < km1) {
            v = state[m * p.dc + c];
        } else {
            v = xin[(m - km1) * p.in_stride + p.in_off + c];
        }
        state[j * p.dc + c] = v;
    }
}
