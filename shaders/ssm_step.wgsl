// One decode token of the SSM (MODEL.md step 4, SSM region), in place on the state:
//   S[h, p, :] = exp(dt[h] * A[h]) * S[h, p, :] + dt[h] * x[h, p] * B[g, :];  y[h, p] = <S[h, p, :], C[g, :]>
// Row 0 of each view (offsets point at the token's row). Params as in ssd_cumsum.wgsl (t = 1).
// bindings: 0 params | 1 x | 2 B | 3 C | 4 dt | 5 A_log | 6 state [H, P, N] (rw) | 7 y (rw)
// grid: one invocation per (h, p).

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
    let d = dt[p.dt_off + h];
    let da = exp(d * -exp(a_log[h]));
    let dx = d * xs[p.x_off + h * p.p + pp];
    let bb = p.b_off + g * p.n;
    let cb = p.c_off + g * p.n;
    let sb = i * p.n;
    var acc = 0.0;
    for (var n = 0u; n < p.n; n += 1u) {
        let s = da * state[sb + n] + dx * bs[bb + n];
        state[sb + n] = s;
        acc += s * cs[cb + n];
    }
    ys[p.y_off + h * p.p + pp] = acc;
}
