// MLP gate: out[t, m] = v[t, m] * silu(g[t, m]) where the fc1 output row is [v (M) | g (M)].
// bindings: 0 params | 1 input | 2 out (rw)

struct Params {
    t: u32,
    m: u32,
    in_stride: u32,
    in_off: u32,
    out_stride: u32,
    out_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.t * p.m) {
        return;
    }
    let t = i / p.m;
    let m = i - t * p.m;
    let base = t * p.in_stride + p.in_off;
    let v = inp[base + m];
    let g = inp[base + p.m + m];
    out[t * p.out_stride + p.out_off + m] = v * g / (1.0 + exp(-g));
}
