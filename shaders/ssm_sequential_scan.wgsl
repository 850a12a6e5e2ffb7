// Baseline scan, one token at a time (benchmarks and tests only): one invocation per (h, p)
// keeps its N-wide state row in registers (N <= 256) and loops over t:
//   S = exp(dt[t, h] * A[h]) * S + dt[t, h] * x[t, h, p] * B[t, g, :];  y[t, h, p] = <S, C[t, g, :]>
// Same params and bindings as ssm_step.wgsl; state holds S0 on entry and the final state on exit.

#include ssd_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> bs: array<f32>;
@group(0) @binding(3) var<storage, read> cs: array<f32>;
@group(0) @binding(4) var<storage, read> dt: array<f32>;
@group(0) @binding(5) var<storage, read> a_log: array<f32>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> ys: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.h * p.p) {
        return;
    }
    let h = i / p.p;
    let pp = i - h * p.p;
    let g = h / (p.h / p.g);
    let a = -exp(a_log[h]);
    let sb = i * p.n;
    var s: array<f32, 256>;
    for (var n = 0u; n < p.n; n += 1u) {
        s[n] = state[sb + n];
    }
    for (var t = 0u; t < p.t; t += 1u) {
        let d = dt[t * p.dt_stride + p.dt_off + h];
        let da = exp(d * a);
        let dx = d * xs[t * p.x_stride + p.x_off + h * p.p + pp];
        let bb = t * p.b_stride + p.b_off + g * p.n;
        let cb = t * p.c_stride + p.c_off + g * p.n;
        var acc = 0.0;
        for (var n = 0u; n < p.n; n += 1u) {
            let v = da * s[n] + dx * bs[bb + n];
            s[n] = v;
            acc += v * cs[cb + n];
        }
        ys[t * p.y_stride + p.y_off + h * p.p + pp] = acc;
    }
    for (var n = 0u; n < p.n; n += 1u) {
        state[sb + n] = s[n];
    }
}
