// gated_rms_norm.wgsl with vec4 accesses (4 channels per access: on lavapipe every storage
// access is a per-lane loop whatever its width, so a quarter of them). Needs Di/G, P, every
// stride and offset multiples of 4 (the op checks, else gated_rms_norm.wgsl).
// MODEL.md steps 5-6, in place on y, per row t and group gi (Di/G consecutive channels):
//   y[t, c] += D[c / P] * x[t, c]                      (flags bit 0)
//   if t >= gate_from_row: y[t, c] *= silu(z[t, c])
//   y[t, c] = y[t, c] / sqrt(mean_{c in group}(y^2) + eps) * w[c]
// A group of up to 64 * KEEP vec4s keeps each lane's gated values in registers between the sum
// and the scaling (fewer storage accesses); a wider group stores them to y and re-reads them.
// Each invocation re-reads only the elements it wrote itself, so in place is race-free.
// bindings: 0 params | 1 x (vec4) | 2 z (vec4) | 3 D [H] | 4 w [Di] (vec4) | 5 y (vec4, rw)
// grid: one workgroup of 64 per (t, group): id = wid.x + wid.y * nwg.x = t * G + gi.

struct Params {
    t: u32,
    di: u32,
    p: u32,
    g: u32,
    eps: f32,
    gate_from_row: u32,
    y_stride: u32,
    y_off: u32,
    x_stride: u32,
    x_off: u32,
    z_stride: u32,
    z_off: u32,
    flags: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> zs: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dskip: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ys: array<vec4<f32>>;

var<workgroup> red: array<f32, 64>;

const KEEP: u32 = 8u;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.t * p.g) {
        return;
    }
    let t = id / p.g;
    let gi = id - t * p.g;
    let gw4 = p.di / p.g / 4u;
    let c0 = gi * gw4;
    let yb = (t * p.y_stride + p.y_off) / 4u;
    let xb = (t * p.x_stride + p.x_off) / 4u;
    let zb = (t * p.z_stride + p.z_off) / 4u;
    let gate = t >= p.gate_from_row;
    let keep = gw4 <= 64u * KEEP;
    var kept: array<vec4<f32>, KEEP>;
    var s = 0.0;
    var n = 0u;
    for (var i = li; i < gw4; i += 64u) {
        let c = c0 + i;
        var v = ys[yb + c];
        if ((p.flags & 1u) != 0u) {
            v += dskip[4u * c / p.p] * xs[xb + c];
        }
        if (gate) {
            let z = zs[zb + c];
            v *= z / (1.0 + exp(-z));
        }
        if (keep) {
            kept[n] = v;
            n += 1u;
        } else {
            ys[yb + c] = v;
        }
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
    let r = inverseSqrt(red[0] / f32(4u * gw4) + p.eps);
    n = 0u;
    for (var i = li; i < gw4; i += 64u) {
        let c = c0 + i;
        var v: vec4<f32>;
        if (keep) {
            v = kept[n];
            n += 1u;
        } else {
            v = ys[yb + c];
        }
        ys[yb + c] = v * r * w[c];
    }
}
