// dt[t, h] = clamp(softplus(dt_raw[t, h] + dt_bias[h]), lo, hi)   (MODEL.md step 3)
// softplus(v) = v for v > 20, exp(v) for v < -15 (keeps relative accuracy), else log(1 + exp(v)).
// hi = +inf is passed as f32::MAX.
// bindings: 0 params | 1 raw | 2 bias [H] | 3 out (rw)

struct Params {
    t: u32,
    h: u32,
    in_stride: u32,
    in_off: u32,
    out_stride: u32,
    out_off: u32,
    lo: f32,
    hi: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> raw: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.t * p.h) {
        return;
    }
    let t = i / p.h;
    let h = i - t * p.h;
    let v = raw[t * p.in_stride + p.in_off + h] + bias[h];
    var sp: f32;
    if (v > 20.0) {
        sp = v;
    } else if (v < -15.0) {
        sp = exp(v);
    } else {
        sp = log(1.0 + exp(v));
    }
    out[t * p.out_stride + p.out_off + h] = clamp(sp, p.lo, p.hi);
}
