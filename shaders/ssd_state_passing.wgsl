// Chunked SSD scan, pass 3: sequential over chunks, parallel over (h, p, n).
//   S_init(0) = state;  S_init(c+1) = exp(acs[last of c]) * S_init(c) + states[c]
// Rewrites states[c] in place with S_init(c) (for the output pass) and writes the final state
// back into state. Second half of the memory converter.
// bindings: 0 params | 1 acs | 2 states [nc, H, P, N] (rw) | 3 state [H, P, N] (rw)

#include ssd_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> acs: array<f32>;
@group(0) @binding(2) var<storage, read_write> states: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let hpn = p.h * p.p * p.n;
    if (i >= hpn) {
        return;
    }
    let h = i / (p.p * p.n);
    var s = state[i];
    for (var c = 0u; c < p.nc; c += 1u) {
        let idx = c * hpn + i;
        let loc = states[idx];
        states[idx] = s;
        let last = min((c + 1u) * p.q, p.t) - 1u;
        s = exp(acs[last * p.h + h]) * s + loc;
    }
    state[i] = s;
}
