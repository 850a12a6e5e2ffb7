// One decode token of the SSM (MODEL.md step 4c) with the state in a pair of textures:
//   S'[h, p, :] = exp(dt[h] * A[h]) * S[h, p, :] + dt[h] * x[h, p] * B[g, :];  y[h, p] = <S'[h, p, :], C[g, :]>
// S is read from one rgba32float texture and S' written to the other (texel (j, h*P + p) holds
// S[h, p, 4j..4j+4]); the op swaps the two every token. B and C come from the uniform staging
// buffer (the op copies them there), at lane-uniform addresses when a workgroup is one head.
// Why (lavapipe): an image load is a vector gather and an image store a tight per-lane loop
// (still half the step's time: the state is written every token), where storage-buffer
// accesses are heavier per-lane loops: ~2x the storage-buffer step
// (core/examples/ssm_step_designs.rs). Needs N % 4 == 0.
// With RAW_DT = 1 binding 3 holds the raw dt of in_proj and the kernel applies MODEL.md step 3
// itself, dt = clamp(softplus(raw + dt_bias), lo, hi) as dt.wgsl: one dispatch less per layer
// and token (on lavapipe a dispatch costs ~0.1 ms).
// With GATE = 1 it also applies MODEL.md steps 5-6 up to the norm: y = (y + D[h] x) * silu(z),
// so that decode's grouped norm can ride in out_proj's product (ops::matvec_normed): one
// dispatch less per layer and token.
// bindings: 0 params | 1 x | 2 B, C (uniform: B at vec4 0, C at vec4 c4) | 3 dt | 4 A_log
//           | 5 S (read-only texture) | 6 S' (write-only texture) | 7 y (rw) | 8 dt_bias
//           | 9 D [H] | 10 z
// grid: 64-wide over H * P, x + y * nwg.x (as grid64).

#include step_tex_params

override RAW_DT: u32 = 0u;
override GATE: u32 = 0u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<uniform> bc: array<vec4<f32>, 4096>;
@group(0) @binding(3) var<storage, read> dt: array<f32>;
@group(0) @binding(4) var<storage, read> a_log: array<f32>;
@group(0) @binding(5) var s_in: texture_storage_2d<rgba32float, read>;
@group(0) @binding(6) var s_out: texture_storage_2d<rgba32float, write>;
@group(0) @binding(7) var<storage, read_write> ys: array<f32>;
@group(0) @binding(8) var<storage, read> dt_bias: array<f32>;
@group(0) @binding(9) var<storage, read> dskip: array<f32>;
@group(0) @binding(10) var<storage, read> zs: array<f32>;

#include softplus
#include step_row

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.h * p.p) {
        return;
    }
    let r = step_row(i);
    let n4 = p.n / 4u;
    let row = i32(i);
    var acc = vec4<f32>(0.0);
    for (var j = 0u; j < n4; j += 1u) {
        let at = vec2<i32>(i32(j), row);
        let s = r.da * textureLoad(s_in, at) + r.dx * bc[r.bb + j];
        textureStore(s_out, at, s);
        acc += s * bc[r.cb + j];
    }
    store_y(r, i, acc.x + acc.y + acc.z + acc.w);
}
