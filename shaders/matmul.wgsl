// Y[t, col0 + o] (+)= sum_k X[t, k] * W[col0 + o, k] (+ bias[col0 + o]) for one row block of W.
// Portable version (no subgroups; see matmul_sg.wgsl for the fast one on 8-wide subgroups).
// The W block is an rgba32float texture, texel (i, o) = W[o, 4i..4i+4] (zero padded; see
// weights.rs), read as vec4 along k; X is read as scalars (any stride / offset), k indices clamped to K-1 (the zero
// W padding multiplies them away). Each invocation computes 4 rows x 4 outputs as dot products.
// Rows come from workgroup_id (uniform across the workgroup); no early return, so the loop runs
// unmasked; out-of-range rows / outputs are clamped for loads and skipped for stores.
// flags: bit 0 = add bias, bit 1 = accumulate into Y (fused residual add).
// bindings: 0 params | 1 X | 2 W block (texture) | 3 bias [out] | 4 Y (rw)
// grid: x over ceil(ceil(rows / 4) / 64) (workgroup 64 over output quads), y over ceil(T / 4).

struct Params {
    t: u32,
    k: u32,
    rows: u32,
    col0: u32,
    x_stride: u32,
    x_off: u32,
    y_stride: u32,
    y_off: u32,
    flags: u32,
    ldk4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

// W[r, 4*k4 .. 4*k4 + 4] (the f16 variant of this shader unpacks it from half a packed texel).
fn w4(k4: i32, r: i32) -> vec4<f32> {
    return textureLoad(w, vec2<i32>(k4, r));
}

fn store(t: u32, o0: u32, v: vec4<f32>) {
    if (t >= p.t) {
        return;
    }
    let base = t * p.y_stride + p.y_off + p.col0;
    for (var j = 0u; j < 4u; j += 1u) {
        let o = o0 + j;
        if (o < p.rows) {
            var r = v[j];
            if ((p.flags & 1u) != 0u) {
                r += bias[p.col0 + o];
            }
            if ((p.flags & 2u) != 0u) {
                r += ys[base + o];
            }
            ys[base + o] = r;
        }
    }
}

fn xload(b: u32, k0: u32, kl: u32) -> vec4<f32> {
    return vec4<f32>(xs[b + k0], xs[b + min(k0 + 1u, kl)], xs[b + min(k0 + 2u, kl)], xs[b + min(k0 + 3u, kl)]);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ldk4 = p.ldk4;
    let kl = p.k - 1u;
    let o0 = gid.x * 4u;
    let t0 = wid.y * 4u;
    let ol = p.rows - 1u;
    let tl = p.t - 1u;
    let w0 = i32(min(o0, ol));
    let w1 = i32(min(o0 + 1u, ol));
    let w2 = i32(min(o0 + 2u, ol));
    let w3 = i32(min(o0 + 3u, ol));
    let x0 = min(t0, tl) * p.x_stride + p.x_off;
    let x1 = min(t0 + 1u, tl) * p.x_stride + p.x_off;
    let x2 = min(t0 + 2u, tl) * p.x_stride + p.x_off;
    let x3 = min(t0 + 3u, tl) * p.x_stride + p.x_off;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var i = 0u; i < ldk4; i += 1u) {
        let k0 = i * 4u;
        let a0 = xload(x0, k0, kl);
        let a1 = xload(x1, k0, kl);
        let a2 = xload(x2, k0, kl);
        let a3 = xload(x3, k0, kl);
        let b0 = w4(i32(i), w0);
        let b1 = w4(i32(i), w1);
        let b2 = w4(i32(i), w2);
        let b3 = w4(i32(i), w3);
        c0 += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
        c1 += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
        c2 += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
        c3 += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
    }
    store(t0, o0, c0);
    store(t0 + 1u, o0, c1);
    store(t0 + 2u, o0, c2);
    store(t0 + 3u, o0, c3);
}
