// Decode-time Y[t, col0 + o] (+)= sum_k X[t, k] * W[col0 + o, k] (+ bias[col0 + o]) for a few
// rows t, with X in a uniform buffer (the op copies X's rows there, dense with stride ldk4 vec4s).
// Why (lavapipe, Mesa 22.3): a storage-buffer load is a per-lane loop there, while a uniform load
// at a lane-uniform address is one scalar load, and a read-only storage-texture load is a vector
// gather (~2x cheaper than a sampled-texture fetch). So every lane reads the same X vec4 (uniform)
// and its own W texels, and the loop holds nothing else: ~2x the old subgroup-broadcast kernel.
// Lane l of a 32-wide workgroup owns outputs o0 + l + 32m (m < 4): four independent rows of
// fetches per iteration. Same params, W layout and flags as matmul_sg.wgsl (bit 0 = add bias,
// bit 1 = accumulate into Y); x_stride / x_off are unused (X is already dense). Portable: no
// subgroups, no f16.
// With NORM = 1 the product is of RMSNorm(X) instead (MODEL.md's RMSNorm with its weight
// folded into W's columns at load, see engine/model.rs): X's K columns form `groups` groups of
// K/groups, each normalised separately, x / sqrt(mean(x^2) + eps). The sum of squares rides
// along in the loop (one more dot per vec4 of X, which every lane already holds), so the
// norm costs no dispatch and no extra pass over X: on lavapipe a dispatch costs ~0.1 ms.
// Needs K / groups a multiple of 4 (the op checks).
// bindings: 0 params | 1 X (uniform) | 2 W block (texture) | 3 bias [out] | 4 Y (rw)
// grid: x over ceil(rows / 128), y over t.

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
    groups: u32,
    eps: f32,
}

override NORM: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> xu: array<vec4<f32>, 4096>;
@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

// W[r, 4*k4 .. 4*k4 + 4] (the f16 variant of this shader unpacks it from half a packed texel).
fn w4(k4: i32, r: i32) -> vec4<f32> {
    return textureLoad(w, vec2<i32>(k4, r));
}

fn store(t: u32, o: u32, v: f32) {
    if (o < p.rows) {
        let yi = t * p.y_stride + p.y_off + p.col0 + o;
        var r = v;
        if ((p.flags & 1u) != 0u) {
            r += bias[p.col0 + o];
        }
        if ((p.flags & 2u) != 0u) {
            r += ys[yi];
        }
        ys[yi] = r;
    }
}

fn dots(xv: vec4<f32>, k4: i32, r: vec4<i32>) -> vec4<f32> {
    return vec4<f32>(dot(xv, w4(k4, r.x)), dot(xv, w4(k4, r.y)),
                     dot(xv, w4(k4, r.z)), dot(xv, w4(k4, r.w)));
}

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let o = wid.x * 128u + lane;
    let t = wid.y;
    let ol = p.rows - 1u;
    // Rows past the block are clamped for loads (their results are not stored).
    let r = vec4<i32>(vec4<u32>(min(o, ol), min(o + 32u, ol), min(o + 64u, ol), min(o + 96u, ol)));
    let xb = t * p.ldk4;
    let full = p.k / 4u;
    var c = vec4<f32>(0.0);
    if (NORM == 1u) {
        // full = K / 4 here; each group's partial product scaled by its own 1 / rms.
        let seg = full / p.groups;
        var i = 0u;
        for (var g = 0u; g < p.groups; g += 1u) {
            var a = vec4<f32>(0.0);
            var ss = vec4<f32>(0.0);
            let end = i + seg;
            for (; i < end; i += 1u) {
                let xv = xu[xb + i];
                ss += xv * xv;
                a += dots(xv, i32(i), r);
            }
            c += a * inverseSqrt(dot(ss, vec4<f32>(1.0)) / f32(4u * seg) + p.eps);
        }
        store(t, o, c.x);
        store(t, o + 32u, c.y);
        store(t, o + 64u, c.z);
        store(t, o + 96u, c.w);
        return;
    }
    for (var i = 0u; i < full; i += 1u) {
        c += dots(xu[xb + i], i32(i), r);
    }
    if (full < p.ldk4) {
        // The last vec4 of a row whose K is not a multiple of 4: the staging buffer holds stale
        // values past K (W is zero there, but 0 * NaN is not 0), so mask them.
        let keep = vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.k - 4u * full);
        c += dots(select(vec4<f32>(0.0), xu[xb + full], keep), i32(full), r);
    }
    store(t, o, c.x);
    store(t, o + 32u, c.y);
    store(t, o + 64u, c.z);
    store(t, o + 96u, c.w);
}
