// matmul.wgsl for aligned shapes: K, x_stride and x_off multiples of 4, so X and W are read as
// vec4 arrays (4x fewer loads and bounds checks than matmul.wgsl). Same math, params and
// bindings; x_stride, x_off and k are passed in vec4 units (k4 = K / 4).
// bindings: 0 params | 1 X (vec4) | 2 W block (vec4) | 3 bias | 4 Y (rw)
// grid: x over ceil(rows/4) (workgroup 8), y over ceil(T/4) (workgroup 8).

struct Params {
    t: u32,
    k4: u32,
    rows: u32,
    col0: u32,
    x_stride4: u32,
    x_off4: u32,
    y_stride: u32,
    y_off: u32,
    flags: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> ws: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

fn store(t: u32, o: u32, v: f32) {
    if (t < p.t && o < p.rows) {
        let idx = t * p.y_stride + p.y_off + p.col0 + o;
        var r = v;
        if ((p.flags & 1u) != 0u) {
            r += bias[p.col0 + o];
        }
        if ((p.flags & 2u) != 0u) {
            r += ys[idx];
        }
        ys[idx] = r;
    }
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o0 = gid.x * 4u;
    let t0 = gid.y * 4u;
    if (o0 >= p.rows || t0 >= p.t) {
        return;
    }
    let tl = p.t - 1u;
    let ol = p.rows - 1u;
    let x0 = min(t0, tl) * p.x_stride4 + p.x_off4;
    let x1 = min(t0 + 1u, tl) * p.x_stride4 + p.x_off4;
    let x2 = min(t0 + 2u, tl) * p.x_stride4 + p.x_off4;
    let x3 = min(t0 + 3u, tl) * p.x_stride4 + p.x_off4;
    let w0 = min(o0, ol) * p.k4;
    let w1 = min(o0 + 1u, ol) * p.k4;
    let w2 = min(o0 + 2u, ol) * p.k4;
    let w3 = min(o0 + 3u, ol) * p.k4;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k4; k += 1u) {
        let a0 = xs[x0 + k];
        let a1 = xs[x1 + k];
        let a2 = xs[x2 + k];
        let a3 = xs[x3 + k];
        let b0 = ws[w0 + k];
        let b1 = ws[w1 + k];
        let b2 = ws[w2 + k];
        let b3 = ws[w3 + k];
        c0 += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
        c1 += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
        c2 += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
        c3 += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
    }
    for (var j = 0u; j < 4u; j += 1u) {
        store(t0, o0 + j, c0[j]);
        store(t0 + 1u, o0 + j, c1[j]);
        store(t0 + 2u, o0 + j, c2[j]);
        store(t0 + 3u, o0 + j, c3[j]);
    }
}
