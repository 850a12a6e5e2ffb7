// Decode-time Y[t, col0 + o] (+)= sum_k X[t, k] * W[o, k] (+ bias) for small T.
// One workgroup of 64 computes 4 outputs of one row t: strided vec4 partial dots, then one
// tree reduction in workgroup memory. Same params/bindings/flags as matmul.wgsl.
// grid: x (+ y overflow) over ceil(rows/4) output quads, z over t.

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
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> ws: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

var<workgroup> red: array<vec4<f32>, 64>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let o0 = (wid.x + wid.y * nwg.x) * 4u;
    let t = wid.z;
    if (o0 >= p.rows || t >= p.t) {
        return;
    }
    let ol = p.rows - 1u;
    let xb = t * p.x_stride + p.x_off;
    let w0 = min(o0, ol) * p.k;
    let w1 = min(o0 + 1u, ol) * p.k;
    let w2 = min(o0 + 2u, ol) * p.k;
    let w3 = min(o0 + 3u, ol) * p.k;
    var acc = vec4<f32>(0.0);
    let k4 = p.k & ~3u;
    for (var k = li * 4u; k < k4; k += 256u) {
        let a = vec4<f32>(xs[xb + k], xs[xb + k + 1u], xs[xb + k + 2u], xs[xb + k + 3u]);
        let b0 = vec4<f32>(ws[w0 + k], ws[w0 + k + 1u], ws[w0 + k + 2u], ws[w0 + k + 3u]);
        let b1 = vec4<f32>(ws[w1 + k], ws[w1 + k + 1u], ws[w1 + k + 2u], ws[w1 + k + 3u]);
        let b2 = vec4<f32>(ws[w2 + k], ws[w2 + k + 1u], ws[w2 + k + 2u], ws[w2 + k + 3u]);
        let b3 = vec4<f32>(ws[w3 + k], ws[w3 + k + 1u], ws[w3 + k + 2u], ws[w3 + k + 3u]);
        acc += vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
    }
    for (var k = k4 + li; k < p.k; k += 64u) {
        acc += xs[xb + k] * vec4<f32>(ws[w0 + k], ws[w1 + k], ws[w2 + k], ws[w3 + k]);
    }
    red[li] = acc;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    if (li < 4u) {
        let o = o0 + li;
        if (o < p.rows) {
            let idx = t * p.y_stride + p.y_off + p.col0 + o;
            var r = red[0][li];
            if ((p.flags & 1u) != 0u) {
                r += bias[p.col0 + o];
            }
            if ((p.flags & 2u) != 0u) {
                r += ys[idx];
            }
            ys[idx] = r;
        }
    }
}
