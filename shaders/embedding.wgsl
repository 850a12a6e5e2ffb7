// Embedding gather for one row block of the table (a GpuMatrix block).
//   out[t*out_stride + out_off + d] = table[d*ldw + tokens[t] - row_start]
// (GpuMatrix blocks are stored transposed, [dim, ldw]; see matmul.wgsl.)
// Tokens outside [row_start, row_start + rows) belong to another block and are skipped,
// so an invalid token never causes an out-of-bounds read.
// bindings: 0 params | 1 tokens: u32[T] | 2 table block [dim, ldw] | 3 out (rw)
// grid: one invocation per (t, d), linear id split over x/y.

struct Params {
    n_tok: u32,
    dim: u32,
    row_start: u32,
    rows: u32,
    out_stride: u32,
    out_off: u32,
    ldw: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> tokens: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

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
    out[t * p.out_stride + p.out_off + d] = table[d * p.ldw + tok - p.row_start];
}
