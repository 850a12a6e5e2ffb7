// rows_to_texture.wgsl with one vec4 load per texel: on lavapipe every storage access is a
// per-lane loop whatever its width, so a quarter of them. Needs K, the stride and the offset
// multiples of 4 (the op checks, else rows_to_texture.wgsl).
// texel (col0 + i, row0 + t) = X[t, 4i..4i+4]
// bindings: 0 params | 1 X (vec4) | 2 out texture (write-only)
// grid: 64-wide over texels, x + y * nwg.x (as grid64).

struct Params {
    t: u32,
    k: u32,
    ldk4: u32,
    x_stride: u32,
    x_off: u32,
    row0: u32,
    col0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<vec4<f32>>;
@group(0) @binding(2) var out: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = gid.x + gid.y * nwg.x * 64u;
    if (n >= p.t * p.ldk4) {
        return;
    }
    let t = n / p.ldk4;
    let i = n - t * p.ldk4;
    let v = xs[(t * p.x_stride + p.x_off) / 4u + i];
    textureStore(out, vec2<i32>(i32(p.col0 + i), i32(p.row0 + t)), v);
}
