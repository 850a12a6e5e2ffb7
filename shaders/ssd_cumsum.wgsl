// Chunked SSD scan, pass 1: chunk-local cumulative log-decay.
//   acs[t, h] = sum_{r = c0}^{t} dt[r, h] * A[h],  A[h] = -exp(A_log[h]),  c0 = Q * (t / Q)
// All values are <= 0 and later passes only exponentiate differences acs[t] - acs[s] (t >= s)
// or acs[t] itself, never a positive number.
// Params are shared by all ssd_* / ssm_* shaders (rows are segment-local, offsets include the
// segment start). bindings: 0 params | 1 dt | 2 A_log [H] | 3 acs [T, H] (rw)
// grid: one invocation per (chunk, h).

#include ssd_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dt: array<f32>;
@group(0) @binding(2) var<storage, read> a_log: array<f32>;
@group(0) @binding(3) var<storage, read_write> acs: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.nc * p.h) {
        return;
    }
    let c = i / p.h;
    let h = i - c * p.h;
    let c0 = c * p.q;
    let c1 = min(c0 + p.q, p.t);
    let a = -exp(a_log[h]);
    var run = 0.0;
    for (var s = c0; s < c1; s += 1u) {
        run += dt[s * p.dt_stride + p.dt_off + h] * a;
        acs[s * p.h + h] = run;
    }
}
