// Y[t, col0 + o] (+)= sum_k X[t, k] * W[o, k] (+ bias[col0 + o]) for one row block of W.
// W block is [rows, K] row-major (PyTorch [out, in] layout); col0 = first output row of the block.
// Register blocking, no shared memory (barriers are slow on CPU Vulkan): each invocation
// computes 4 rows (t) x 4 outputs (o); out-of-range rows are clamped for loads and not stored.
// flags: bit 0 = add bias, bit 1 = accumulate into Y (fused residual add).
// bindings: 0 params | 1 X | 2 W block | 3 bias [out] | 4 Y (rw)
// grid: x over ceil(rows/4) (workgroup 8), y over ceil(T/4) (workgroup 8).

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

fn ld4(a: u32) -> vec4<f32> {
    return vec4<f32>(xs[a], xs[a + 1u], xs[a + 2u], xs[a + 3u]);
}

fn lw4(a: u32) -> vec4<f32> {
    return vec4<f32>(ws[a], ws[a + 1u], ws[a + 2u], ws[a + 3u]);
}

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
    let x0 = min(t0, tl) * p.x_stride + p.x_off;
    let x1 = min(t0 + 1u, tl) * p.x_stride + p.x_off;
    let x2 = min(t0 + 2u, tl) * p.x_stride + p.x_off;
    let x3 = min(t0 + 3u, tl) * p.x_stride + p.x_off;
    let w0 = min(o0, ol) * p.k;
    let w1 = min(o0 + 1u, ol) * p.k;
    let w2 = min(o0 + 2u, ol) * p.k;
    let w3 = min(o0 + 3u, ol) * p.k;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    let k4 = p.k & ~3u;
    var k = 0u;
    for (; k < k4; k += 4u) {
        let a0 = ld4(x0 + k);
        let a1 = ld4(x1 + k);
        let a2 = ld4(x2 + k);
        let a3 = ld4(x3 + k);
        let b0 = lw4(w0 + k);
        let b1 = lw4(w1 + k);
        let b2 = lw4(w2 + k);
        let b3 = lw4(w3 + k);
        c0 += vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
        c1 += vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
        c2 += vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
        c3 += vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
    }
    for (; k < p.k; k += 1u) {
        let b = vec4<f32>(ws[w0 + k], ws[w1 + k], ws[w2 + k], ws[w3 + k]);
        c0 += xs[x0 + k] * b;
        c1 += xs[x1 + k] * b;
        c2 += xs[x2 + k] * b;
        c3 += xs[x3 + k] * b;
    }
    for (var j = 0u; j < 4u; j += 1u) {
        store(t0, o0 + j, c0[j]);
        store(t0 + 1u, o0 + j, c1[j]);
        store(t0 + 2u, o0 + j, c2[j]);
        store(t0 + 3u, o0 + j, c3[j]);
    }
}
