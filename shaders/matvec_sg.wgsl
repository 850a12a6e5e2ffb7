// Decode-time variant of matmul_sg.wgsl (same params, bindings and texture weight layout) for
// few rows: a workgroup (= one 8-lane subgroup) computes 32 outputs of one row t; lane l owns
// outputs o0 + l + 8m (m < 4) and fetches their W texels itself, while X is loaded once per
// subgroup (lane l loads the vec4 at k4 = 8i + l) and shared by subgroupBroadcast, so the loop is
// nearly all texel fetches (gathers on CPU Vulkan). Needs subgroups of exactly 8.
// X is read as scalars (any stride / offset), k indices clamped to K-1, k4 past the texture
// zeroed. flags: bit 0 = add bias, bit 1 = accumulate into Y.
// bindings: 0 params | 1 X | 2 W block (texture) | 3 bias [out] | 4 Y (rw)
// grid: x over ceil(rows / 32), y over t.

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
@group(0) @binding(2) var w: texture_2d<f32>;
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

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let o0 = wid.x * 32u;
    let t = wid.y;
    let ol = p.rows - 1u;
    let kl = p.k - 1u;
    let ldk4 = p.ldk4;
    let lt = i32(ldk4) - 1;
    let r0 = i32(min(o0 + lane, ol));
    let r1 = i32(min(o0 + lane + 8u, ol));
    let r2 = i32(min(o0 + lane + 16u, ol));
    let r3 = i32(min(o0 + lane + 24u, ol));
    let xb0 = t * p.x_stride + p.x_off;
    var c = vec4<f32>(0.0);
    let n8 = (ldk4 + 7u) / 8u;
    for (var i = 0u; i < n8; i += 1u) {
        let k4 = i * 8u + lane;
        let k0 = min(k4 * 4u, kl);
        let xl = vec4<f32>(xs[xb0 + k0], xs[xb0 + min(k0 + 1u, kl)], xs[xb0 + min(k0 + 2u, kl)], xs[xb0 + min(k0 + 3u, kl)]);
        let xv = select(vec4<f32>(0.0), xl, k4 < ldk4);
        {
            let xb = subgroupBroadcast(xv, 0u);
            let kk = min(i32(i * 8u + 0u), lt);
            c += vec4<f32>(dot(xb, textureLoad(w, vec2<i32>(kk, r0), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r1), 0)),
                           dot(xb, textureLoad(w, vec2<i32>(kk, r2), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r3), 0)));
        }
        {
            let xb = subgroupBroadcast(xv, 1u);
            let kk = min(i32(i * 8u + 1u), lt);
            c += vec4<f32>(dot(xb, textureLoad(w, vec2<i32>(kk, r0), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r1), 0)),
                           dot(xb, textureLoad(w, vec2<i32>(kk, r2), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r3), 0)));
        }
        {
            let xb = subgroupBroadcast(xv, 2u);
            let kk = min(i32(i * 8u + 2u), lt);
            c += vec4<f32>(dot(xb, textureLoad(w, vec2<i32>(kk, r0), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r1), 0)),
                           dot(xb, textureLoad(w, vec2<i32>(kk, r2), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r3), 0)));
        }
        {
            let xb = subgroupBroadcast(xv, 3u);
            let kk = min(i32(i * 8u + 3u), lt);
            c += vec4<f32>(dot(xb, textureLoad(w, vec2<i32>(kk, r0), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r1), 0)),
                           dot(xb, textureLoad(w, vec2<i32>(kk, r2), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r3), 0)));
        }
        {
            let xb = subgroupBroadcast(xv, 4u);
            let kk = min(i32(i * 8u + 4u), lt);
            c += vec4<f32>(dot(xb, textureLoad(w, vec2<i32>(kk, r0), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r1), 0)),
                           dot(xb, textureLoad(w, vec2<i32>(kk, r2), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r3), 0)));
        }
        {
            let xb = subgroupBroadcast(xv, 5u);
            let kk = min(i32(i * 8u + 5u), lt);
            c += vec4<f32>(dot(xb, textureLoad(w, vec2<i32>(kk, r0), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r1), 0)),
                           dot(xb, textureLoad(w, vec2<i32>(kk, r2), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r3), 0)));
        }
        {
            let xb = subgroupBroadcast(xv, 6u);
            let kk = min(i32(i * 8u + 6u), lt);
            c += vec4<f32>(dot(xb, textureLoad(w, vec2<i32>(kk, r0), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r1), 0)),
                           dot(xb, textureLoad(w, vec2<i32>(kk, r2), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r3), 0)));
        }
        {
            let xb = subgroupBroadcast(xv, 7u);
            let kk = min(i32(i * 8u + 7u), lt);
            c += vec4<f32>(dot(xb, textureLoad(w, vec2<i32>(kk, r0), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r1), 0)),
                           dot(xb, textureLoad(w, vec2<i32>(kk, r2), 0)), dot(xb, textureLoad(w, vec2<i32>(kk, r3), 0)));
        }
    }
    store(t, o0 + lane, c.x);
    store(t, o0 + lane + 8u, c.y);
    store(t, o0 + lane + 16u, c.z);
    store(t, o0 + lane + 24u, c.w);
}
