// Packs columns of row-major X into an rgba32float texture, transposed: texel (c4, r) holds
// X[4c4 .. 4c4+4, r] (rows at or past `len` read as 0), for texel columns c0 .. c0 + nc.
// Keeps the attention cache's values as V^T [channels, positions] so that Y = P V is a
// product with V^T as its matrix (matmul / matvec kernels read matrices from textures); a
// decode token rewrites just the one texel column its row falls in.
// bindings: 0 params | 1 X | 2 out texture (write-only)
// grid: 64-wide over nc * r_count, x + y * nwg.x (as grid64); r fastest.

struct Params {
    len: u32,
    r_count: u32,
    c0: u32,
    nc: u32,
    x_stride: u32,
    x_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var out: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = gid.x + gid.y * nwg.x * 64u;
    if (n >= p.nc * p.r_count) {
        return;
    }
    let ci = n / p.r_count;
    let r = n - ci * p.r_count;
    let c4 = p.c0 + ci;
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i += 1u) {
        let row = 4u * c4 + i;
        if (row < p.len) {
            v[i] = xs[row * p.x_stride + p.x_off + r];
        }
    }
    textureStore(out, vec2<i32>(i32(c4), i32(r)), v);
}
