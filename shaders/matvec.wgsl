// Decode-time variant of matmul.wgsl (same params, bindings and row-major weight layout), portable
// (see matvec_sg.wgsl for the subgroup one): each invocation computes 1 row (t) x 4 outputs.
// grid: x over ceil(ceil(rows / 4) / 64) (workgroup 64 over output quads), y over t.

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

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let ldk4 = p.ldk4;
    let kl = p.k - 1u;
    let o0 = gid.x * 4u;
    let t = wid.y;
    let ol = p.rows - 1u;
    let w0 = i32(min(o0, ol));
    let w1 = i32(min(o0 + 1u, ol));
    let w2 = i32(min(o0 + 2u, ol));
    let w3 = i32(min(o0 + 3u, ol));
    let xb = t * p.x_stride + p.x_off;
    var c = vec4<f32>(0.0);
    for (var i = 0u; i < ldk4; i += 1u) {
        let k0 = i * 4u;
        let a = vec4<f32>(xs[xb + k0], xs[xb + min(k0 + 1u, kl)], xs[xb + min(k0 + 2u, kl)], xs[xb + min(k0 + 3u, kl)]);
        c += vec4<f32>(dot(a, textureLoad(w, vec2<i32>(i32(i), w0), 0)), dot(a, textureLoad(w, vec2<i32>(i32(i), w1), 0)), dot(a, textureLoad(w, vec2<i32>(i32(i), w2), 0)), dot(a, textureLoad(w, vec2<i32>(i32(i), w3), 0)));
    }
    let base = t * p.y_stride + p.y_off + p.col0;
    for (var j = 0u; j < 4u; j += 1u) {
        let o = o0 + j;
        if (o < p.rows) {
            var r = c[j];
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
