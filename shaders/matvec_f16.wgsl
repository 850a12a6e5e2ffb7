// Decode product for f16 weights: the W block is an rgba32uint texture whose texel (i, o) packs
// W[o, 8i..8i+8] as eight halves (pack2x16float order: low half first), zero padded. One fetch
// brings 8 weights instead of 4, but on lavapipe unpack2x16float costs about what the saved
// fetch does: measured no faster than the f32 matvec (docs/performance-log.md, session 6), so
// this is a memory saving. No shader-f16 needed: unpack2x16float is core WGSL.
// X is in the uniform staging buffer (the op copies its rows there, dense with stride ldk4
// vec4s; ldk is a multiple of 8 here); params and flags as matvec.wgsl (bit 0 = add bias, bit
// 1 = accumulate into Y). Lane l of a 32-wide workgroup owns outputs o0 + l + 32m (m < 4).
// bindings: 0 params | 1 X (uniform) | 2 W block (packed texture) | 3 bias [out] | 4 Y (rw)
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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> xu: array<vec4<f32>, 4096>;
@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

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

// x0 . W[r, 8i..8i+4] + x1 . W[r, 8i+4..8i+8]
fn dot8(x0: vec4<f32>, x1: vec4<f32>, i: i32, r: i32) -> f32 {
    let h = textureLoad(w, vec2<i32>(i, r));
    return dot(x0, vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y)))
         + dot(x1, vec4<f32>(unpack2x16float(h.z), unpack2x16float(h.w)));
}

fn dots(x0: vec4<f32>, x1: vec4<f32>, i: i32, r: vec4<i32>) -> vec4<f32> {
    return vec4<f32>(dot8(x0, x1, i, r.x), dot8(x0, x1, i, r.y), dot8(x0, x1, i, r.z), dot8(x0, x1, i, r.w));
}

@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let o = wid.x * 128u + lane;
    let t = wid.y;
    let ol = p.rows - 1u;
    // Rows past the block are clamped for loads (their results are not stored).
    let r = vec4<i32>(vec4<u32>(min(o, ol), min(o + 32u, ol), min(o + 64u, ol), min(o + 96u, ol)));
    let xb = t * p.ldk4;
    let full = p.k / 8u;
    var c = vec4<f32>(0.0);
    for (var i = 0u; i < full; i += 1u) {
        c += dots(xu[xb + 2u * i], xu[xb + 2u * i + 1u], i32(i), r);
    }
    if (2u * full < p.ldk4) {
        // The last texel of a row whose K is not a multiple of 8: the staging buffer holds stale
        // values past K (W is zero there, but 0 * NaN is not 0), so mask them.
        let rem = p.k - 8u * full;
        let x0 = select(vec4<f32>(0.0), xu[xb + 2u * full], vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(rem));
        let x1 = select(vec4<f32>(0.0), xu[xb + 2u * full + 1u], vec4<u32>(4u, 5u, 6u, 7u) < vec4<u32>(rem));
        c += dots(x0, x1, i32(full), r);
    }
    store(t, o, c.x);
    store(t, o + 32u, c.y);
    store(t, o + 64u, c.z);
    store(t, o + 96u, c.w);
}
