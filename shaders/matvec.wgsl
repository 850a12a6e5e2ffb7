// Decode-time variant of matmul.wgsl (same params, bindings and transposed weight layout):
// each invocation computes 1 row (t) x 4 outputs, so a T = 1 product wastes no work.
// grid: x over ldw/4 output quads (workgroup 64), y over t.

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

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let oq = gid.x;
    let t = gid.y;
    if (oq >= p.ldw4 || t >= p.t) {
        return;
    }
    let xb = t * p.x_stride + p.x_off;
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var wi = oq;
    // Two accumulators halve the dependency chain.
    var k = 0u;
    for (; k + 1u < p.k; k += 2u) {
        c0 += xs[xb + k] * wt[wi];
        c1 += xs[xb + k + 1u] * wt[wi + p.ldw4];
        wi += 2u * p.ldw4;
    }
    if (k < p.k) {
        c0 += xs[xb + k] * wt[wi];
    }
    let c = c0 + c1;
    let base = t * p.y_stride + p.y_off + p.col0;
    for (var j = 0u; j < 4u; j += 1u) {
        let o = oq * 4u + j;
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
