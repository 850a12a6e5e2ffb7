// Y[t, col0 + o] (+)= sum_k X[t, k] * W[col0 + o, k] (+ bias[col0 + o]) for one block of W.
// The block is stored transposed and padded: wt[k * ldw + o] = W[col0 + o, k], o < ldw (ldw is
// the block's output count rounded up to 4, padding is zero), so it is read as vec4 over o:
// neighbouring invocations read neighbouring vec4s (contiguous on CPU SIMD and coalesced on
// GPUs) while X[t, k] is the same for a whole row of the workgroup.
// Register blocking, no shared memory (barriers are slow on CPU Vulkan): each invocation
// computes 4 rows (t) x 4 outputs (o); out-of-range rows are clamped for loads, not stored.
// flags: bit 0 = add bias, bit 1 = accumulate into Y (fused residual add).
// bindings: 0 params | 1 X | 2 wt block (vec4) | 3 bias [out] | 4 Y (rw)
// grid: x over ldw/4 output quads (workgroup 8), y over ceil(T/4) (workgroup 8).

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
    ldw4: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

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

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let oq = gid.x;
    let t0 = gid.y * 4u;
    if (oq >= p.ldw4 || t0 >= p.t) {
        return;
    }
    let tl = p.t - 1u;
    let x0 = t0 * p.x_stride + p.x_off;
    let x1 = min(t0 + 1u, tl) * p.x_stride + p.x_off;
    let x2 = min(t0 + 2u, tl) * p.x_stride + p.x_off;
    let x3 = min(t0 + 3u, tl) * p.x_stride + p.x_off;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    var wi = oq;
    for (var k = 0u; k < p.k; k += 1u) {
        let b = wt[wi];
        c0 += xs[x0 + k] * b;
        c1 += xs[x1 + k] * b;
        c2 += xs[x2 + k] * b;
        c3 += xs[x3 + k] * b;
        wi += p.ldw4;
    }
    let o0 = oq * 4u;
    store(t0, o0, c0);
    store(t0 + 1u, o0, c1);
    store(t0 + 2u, o0, c2);
    store(t0 + 3u, o0, c3);
}
