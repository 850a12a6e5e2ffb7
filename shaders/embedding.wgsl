// Embedding gather for one row block of the table (a GpuMatrix block).
//   out[t*out_stride + out_off + d] = table[tokens[t] - row_start, d]
// (GpuMatrix blocks are rgba32float textures, texel (d / 4, row) = row's d..d+4; see weights.rs.)
// Tokens outside [row_start, row_start + rows) belong to another block and are skipped,
// so an invalid token never causes an out-of-bounds read.
// bindings: 0 params | 1 tokens: u32[T] | 2 table block (texture) | 3 out (rw)
// grid: one invocation per (t, d), linear id split over x/y.

struct Params {
    n_tok: u32,
    dim: u32,
    row_start: u32,
    rows: u32,
    out_stride: u32,
    out_off: u32,
    ldk: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// W[r, 4*k4 .. 4*k4 + 4] (the f16 variant of this shader unpacks it from half a packed texel).
fn w4(k4: i32, r: i32) -> vec4<f32> {
    return textureLoad(w, vec2<i32>(k4, r));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.n_tok * p.dim) {
        return;
    }
    let t = i / p.dim;
    let d = i - t * p.dim;
    let tok = tokens[t];
    if (tok < p.row_start || tok - p.row_start >= p.rows) {
        return;
    }
    out[t * p.out_stride + p.out_off + d] = w4(i32(d / 4u), i32(tok - p.row_start))[d % 4u];
}
