// rms_norm.wgsl with vec4 accesses (on lavapipe every storage access is a per-lane loop
// whatever its width, so a quarter of them). Needs width, strides and offsets multiples of 4.
// RMSNorm per row: out[r, i] = x[r, i] / sqrt(mean_i(x[r, :]^2) + eps) * w[i]
// bindings: 0 params | 1 x (vec4) | 2 w [width] (vec4) | 3 out (vec4, rw, must not alias x)
// grid: one workgroup of 64 per row (row = wid.x + wid.y * nwg.x); one tree reduction.

struct Params {
    rows: u32,
    width: u32,
    eps: f32,
    x_stride: u32,
    x_off: u32,
    out_stride: u32,
    out_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>;

var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let w4 = p.width / 4u;
    let xb = (row * p.x_stride + p.x_off) / 4u;
    var s = 0.0;
    for (var i = li; i < w4; i += 64u) {
        let v = x[xb + i];
        s += dot(v, v);
    }
    red[li] = s;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k = k >> 1u) {
        if (li < k) {
            red[li] += red[li + k];
        }
        workgroupBarrier();
    }
    let r = inverseSqrt(red[0] / f32(p.width) + p.eps);
    let ob = (row * p.out_stride + p.out_off) / 4u;
    for (var i = li; i < w4; i += 64u) {
        out[ob + i] = x[xb + i] * r * w[i];
    }
}
