// Unpacks an rgba32float texture into dense rows, the inverse of rows_to_texture.wgsl:
// X[t, 4i + c] = texel (i, t)[c] for 4i + c < K. Used to bring the decode SSM state (kept in
// textures, ssm_step_tex.wgsl) back into the storage buffer the chunked scan reads.
// bindings: 0 params | 1 texture (read-only) | 2 X (rw)
// grid: 64-wide over texels, x + y * nwg.x (as grid64).

struct Params {
    t: u32,
    k: u32,
    ldk4: u32,
    x_stride: u32,
    x_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var src: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var<storage, read_write> xs: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = gid.x + gid.y * nwg.x * 64u;
    if (n >= p.t * p.ldk4) {
        return;
    }
    let t = n / p.ldk4;
    let i = n - t * p.ldk4;
    let v = textureLoad(src, vec2<i32>(i32(i), i32(t)));
    let base = t * p.x_stride + p.x_off;
    for (var c = 0u; c < 4u; c += 1u) {
        let k = 4u * i + c;
        if (k < p.k) {
            xs[base + k] = v[c];
        }
    }
}
