// Strided 2-D copy: dst[t*dst_stride + dst_off + c] = src[t*src_stride + src_off + c], t < T, c < width.
// Used to append B, x and dt of new tokens to the attention cache (row offset folded into dst_off).
// bindings: 0 params | 1 src | 2 dst (rw)

struct Params {
    t: u32,
    width: u32,
    src_stride: u32,
    src_off: u32,
    dst_stride: u32,
    dst_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.t * p.width) {
        return;
    }
    let t = i / p.width;
    let c = i - t * p.width;
    dst[t * p.dst_stride + p.dst_off + c] = src[t * p.src_stride + p.src_off + c];
}
