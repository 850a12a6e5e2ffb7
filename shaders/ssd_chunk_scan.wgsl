// Chunked SSD scan, pass 4: outputs. Three entry points, run in order:
//   cb:   CB[t, j, g] = <C[t, g, :], B[c0 + j, g, :]>           for c0 + j <= t  (cl[0..])
//   lmat: L[t, j, h] = CB[t, j, g] * exp(acs[t] - acs[c0 + j]) * dt[c0 + j, h], 0 for c0 + j > t
//                                                               (cl[l_off..])
//   scan: y[t, h, p] = sum_j L[t, j, h] * x[c0 + j, h, p]                     (intra-chunk)
//                    + exp(acs[t]) * <C[t, g, :], S_init(c)[h, p, :]>          (inter-chunk)
// with c = t / Q, c0 = c * Q; S_init from ssd_state_passing. No D skip here.
// bindings: 0 params | 1 x | 2 B | 3 C | 4 dt | 5 acs | 6 states | 7 cl scratch (rw) | 8 y (rw)

#include ssd_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> bs: array<f32>;
@group(0) @binding(3) var<storage, read> cs: array<f32>;
@group(0) @binding(4) var<storage, read> dt: array<f32>;
@group(0) @binding(5) var<storage, read> acs: array<f32>;
@group(0) @binding(6) var<storage, read> states: array<f32>;
@group(0) @binding(7) var<storage, read_write> cl: array<f32>;
@group(0) @binding(8) var<storage, read_write> ys: array<f32>;

@compute @workgroup_size(64)
fn cb(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.t * p.q * p.g) {
        return;
    }
    let g = i % p.g;
    let tj = i / p.g;
    let j = tj % p.q;
    let t = tj / p.q;
    let s = (t / p.q) * p.q + j;
    if (s > t) {
        return;
    }
    let cb0 = t * p.c_stride + p.c_off + g * p.n;
    let bb0 = s * p.b_stride + p.b_off + g * p.n;
    var acc = 0.0;
    for (var n = 0u; n < p.n; n += 1u) {
        acc += cs[cb0 + n] * bs[bb0 + n];
    }
    cl[i] = acc;
}

@compute @workgroup_size(64)
fn lmat(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.t * p.q * p.h) {
        return;
    }
    let h = i % p.h;
    let tj = i / p.h;
    let j = tj % p.q;
    let t = tj / p.q;
    let s = (t / p.q) * p.q + j;
    var v = 0.0;
    if (s <= t) {
        let g = h / (p.h / p.g);
        let decay = exp(acs[t * p.h + h] - acs[s * p.h + h]);
        v = cl[tj * p.g + g] * decay * dt[s * p.dt_stride + p.dt_off + h];
    }
    cl[p.l_off + i] = v;
}

@compute @workgroup_size(64)
fn scan(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.t * p.h * p.p) {
        return;
    }
    let pp = i % p.p;
    let th = i / p.p;
    let h = th % p.h;
    let t = th / p.h;
    let g = h / (p.h / p.g);
    let c = t / p.q;
    let c0 = c * p.q;
    var acc = 0.0;
    let lb = p.l_off + t * p.q * p.h + h;
    for (var s = c0; s <= t; s += 1u) {
        acc += cl[lb + (s - c0) * p.h] * xs[s * p.x_stride + p.x_off + h * p.p + pp];
    }
    let cb0 = t * p.c_stride + p.c_off + g * p.n;
    let sb = ((c * p.h + h) * p.p + pp) * p.n;
    var ic = 0.0;
    for (var n = 0u; n < p.n; n += 1u) {
        ic += cs[cb0 + n] * states[sb + n];
    }
    ys[t * p.y_stride + p.y_off + h * p.p + pp] = acc + exp(acs[t * p.h + h]) * ic;
}
