// Chunked SSD scan, pass 2: each chunk's own state contribution (zero initial state).
//   states[c, h, p, n] = sum_{s in chunk c} exp(acs[last] - acs[s]) * dt[s, h] * x[s, h, p] * B[s, g, n]
// Also the first half of the memory converter (MODEL.md step 4).
// bindings: 0 params | 1 x | 2 B | 3 dt | 4 acs | 5 states [nc, H, P, N] (rw)
// grid: one invocation per (c, h, p, n), n fastest.

#include ssd_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> bs: array<f32>;
@group(0) @binding(3) var<storage, read> dt: array<f32>;
@group(0) @binding(4) var<storage, read> acs: array<f32>;
@group(0) @binding(5) var<storage, read_write> states: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let hpn = p.h * p.p * p.n;
    if (i >= p.nc * hpn) {
        return;
    }
    let c = i / hpn;
    let r = i - c * hpn;
    let nn = r % p.n;
    let hp = r / p.n;
    let pp = hp % p.p;
    let h = hp / p.p;
    let g = h / (p.h / p.g);
    let c0 = c * p.q;
    let c1 = min(c0 + p.q, p.t);
    let last = acs[(c1 - 1u) * p.h + h];
    var acc = 0.0;
    for (var s = c0; s < c1; s += 1u) {
        let wgt = exp(last - acs[s * p.h + h]) * dt[s * p.dt_stride + p.dt_off + h];
        let xv = xs[s * p.x_stride + p.x_off + h * p.p + pp];
        let bv = bs[s * p.b_stride + p.b_off + g * p.n + nn];
        acc += wgt * xv * bv;
    }
    states[i] = acc;
}
