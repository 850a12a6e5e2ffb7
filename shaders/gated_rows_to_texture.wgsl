// MODEL.md steps 5-6 short of the norm, written as texels for out_proj's product:
//   texel (i, t) = ((y + D[h] x) * silu(z))[t, 4i..4i+4]
// with D when flags bit 0, the gate for rows t >= gate_from_row, h the head of channels 4i..
// (P a multiple of 4). matmul_xtex_sg's NORM variant then RMS-normalises each row inside the
// product (one group; the norm's weight is folded into out_proj's columns), so prefill needs
// neither gated_rms_norm's pass over y (7 barriers a row on lavapipe) nor a separate pack.
// Needs Di, P, every stride and offset multiples of 4 (the op checks).
// bindings: 0 params | 1 y (vec4) | 2 x (vec4) | 3 z (vec4) | 4 D [H] | 5 out texture (write-only)
// grid: 64-wide over texels, x + y * nwg.x (as grid64).

struct Params {
    t: u32,
    ldk4: u32,
    p: u32,
    gate_from_row: u32,
    y_stride: u32,
    y_off: u32,
    x_stride: u32,
    x_off: u32,
    z_stride: u32,
    z_off: u32,
    flags: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ys: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> xs: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> zs: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dskip: array<f32>;
@group(0) @binding(5) var out: texture_storage_2d<rgba32float, write>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = gid.x + gid.y * nwg.x * 64u;
    if (n >= p.t * p.ldk4) {
        return;
    }
    let t = n / p.ldk4;
    let i = n - t * p.ldk4;
    var v = ys[(t * p.y_stride + p.y_off) / 4u + i];
    if ((p.flags & 1u) != 0u) {
        v += dskip[4u * i / p.p] * xs[(t * p.x_stride + p.x_off) / 4u + i];
    }
    if (t >= p.gate_from_row) {
        let z = zs[(t * p.z_stride + p.z_off) / 4u + i];
        v *= z / (1.0 + exp(-z));
    }
    textureStore(out, vec2<i32>(i32(i), i32(t)), v);
}
