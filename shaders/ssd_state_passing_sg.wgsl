// Chunked SSD scan, pass 3 (subgroup version of ssd_state_passing.wgsl, same params / bindings /
// result): S_init(0) = state; S_init(c+1) = exp(acs[last of c]) * S_init(c) + states[c].
// The per-chunk decay is the same for a whole head: lane l computes it for chunk c8 + l and
// the subgroup shares it by subgroupBroadcast (one load per 8 chunks instead of one per chunk).
// Needs 8-wide subgroups made of consecutive invocations and P * N % 8 == 0 (a subgroup never
// straddles two heads). No early return: lanes past the end load clamped, store nothing.
// bindings: 0 params | 1 acs | 2 states [nc, H, P, N] (rw) | 3 state [H, P, N] (rw)

#include ssd_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> acs: array<f32>;
@group(0) @binding(2) var<storage, read_write> states: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let i0 = gid.x + gid.y * nwg.x * 64u;
    let hpn = p.h * p.p * p.n;
    let ok = i0 < hpn;
    let i = min(i0, hpn - 1u);
    let h = i / (p.p * p.n);
    var s = state[i];
    for (var c8 = 0u; c8 < p.nc; c8 += 8u) {
        let cc = min(c8 + lane, p.nc - 1u);
        let last = min((cc + 1u) * p.q, p.t) - 1u;
        let dl = exp(acs[last * p.h + h]);
        {
            let d = subgroupBroadcast(dl, 0u);
            let c = c8 + 0u;
            if (c < p.nc) {
                let idx = c * hpn + i;
                let loc = states[idx];
                if (ok) {
                    states[idx] = s;
                }
                s = d * s + loc;
            }
        }
        {
            let d = subgroupBroadcast(dl, 1u);
            let c = c8 + 1u;
            if (c < p.nc) {
                let idx = c * hpn + i;
                let loc = states[idx];
                if (ok) {
                    states[idx] = s;
                }
                s = d * s + loc;
            }
        }
        {
            let d = subgroupBroadcast(dl, 2u);
            let c = c8 + 2u;
            if (c < p.nc) {
                let idx = c * hpn + i;
                let loc = states[idx];
                if (ok) {
                    states[idx] = s;
                }
                s = d * s + loc;
            }
        }
        {
            let d = subgroupBroadcast(dl, 3u);
            let c = c8 + 3u;
            if (c < p.nc) {
                let idx = c * hpn + i;
                let loc = states[idx];
                if (ok) {
                    states[idx] = s;
                }
                s = d * s + loc;
            }
        }
        {
            let d = subgroupBroadcast(dl, 4u);
            let c = c8 + 4u;
            if (c < p.nc) {
                let idx = c * hpn + i;
                let loc = states[idx];
                if (ok) {
                    states[idx] = s;
                }
                s = d * s + loc;
            }
        }
        {
            let d = subgroupBroadcast(dl, 5u);
            let c = c8 + 5u;
            if (c < p.nc) {
                let idx = c * hpn + i;
                let loc = states[idx];
                if (ok) {
                    states[idx] = s;
                }
                s = d * s + loc;
            }
        }
        {
            let d = subgroupBroadcast(dl, 6u);
            let c = c8 + 6u;
            if (c < p.nc) {
                let idx = c * hpn + i;
                let loc = states[idx];
                if (ok) {
                    states[idx] = s;
                }
                s = d * s + loc;
            }
        }
        {
            let d = subgroupBroadcast(dl, 7u);
            let c = c8 + 7u;
            if (c < p.nc) {
                let idx = c * hpn + i;
                let loc = states[idx];
                if (ok) {
                    states[idx] = s;
                }
                s = d * s + loc;
            }
        }
    }
    if (ok) {
        state[i] = s;
    }
}
