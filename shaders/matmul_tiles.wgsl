// Y[t, col0 + o] (+)= sum_k X[t, k] * W[col0 + o, k] (+ bias[col0 + o]) for one row block of W:
// the `gpu` plan's prefill product. A workgroup of 256 lanes computes a 64 (t) x 64 (o) tile of
// Y, each lane 4 x 4 outputs; per step of 16 k it stages X's 64 x 16 values and W's 64 x 16
// (as vec4 along k) in workgroup memory, each lane loading one W texel and 4 consecutive X
// values (consecutive lanes read consecutive addresses), then every lane does 64 multiply-adds
// per 8 vec4 reads of workgroup memory. No subgroups needed.
// W is read through `w4` (shaders::shader_variant: f32, f16, q8_0, q4_0 textures), texel index
// clamped to the block's ldk4 - 1; X is zero for k >= K, which cancels whatever the clamp read.
// Params, bindings and flags are matmul.wgsl's (bit 0 = add bias, bit 1 = accumulate into Y),
// plus eps for NORM.
// NORM = 1: the product is of RMSNorm(X) (one group of K columns, the norm's weight folded into
// W's columns, as matmul_xtex_sg's NORM): each lane reads its 4 rows' whole K from the X tiles,
// so it sums their squares in the same loop and scales its outputs at the end.
// bindings: 0 params | 1 X | 2 W block (texture) | 3 bias [out] | 4 Y (rw)
// grid: x over ceil(rows / 64), y over ceil(T / 64).

struct Params {
    t: u32,
    k: u32,
    rows: u32,
    col0: u32,
    x_stride: u32,
    x_off: u32,
    y_stride: u32,
    y_off: u32,
    flags: u32,
    ldk4: u32,
    eps: f32,
}

override NORM: u32 = 0u;

const TILE: u32 = 64u;
// k4 texels (4 values each) per step.
const KQ: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

// [kq][t] and [kq][o]: 4 k values of one row of X / W.
var<workgroup> x_tile: array<vec4<f32>, 256>;
var<workgroup> w_tile: array<vec4<f32>, 256>;

// W[r, 4*k4 .. 4*k4 + 4] (the other formats' variants unpack it from their texels).
fn w4(k4: i32, r: i32) -> vec4<f32> {
    return textureLoad(w, vec2<i32>(k4, r));
}

fn xval(base: u32, k: u32) -> f32 {
    return select(0.0, xs[base + min(k, p.k - 1u)], k < p.k);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o_tile = wid.x * TILE;
    let t_tile = wid.y * TILE;
    // This lane's loads: row lid / 4 of the tile, texel lid % 4 of the step.
    let lrow = lid / KQ;
    let lq = lid % KQ;
    let w_row = i32(min(o_tile + lrow, p.rows - 1u));
    let x_base = min(t_tile + lrow, p.t - 1u) * p.x_stride + p.x_off;
    // This lane's outputs: rows t_tile + 4 ty + i, outputs o_tile + 4 tx + j.
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc: array<vec4<f32>, 4>;
    var ss = vec4<f32>(0.0);
    for (var k4 = 0u; k4 < p.ldk4; k4 += KQ) {
        let kq = k4 + lq;
        let k = 4u * kq;
        x_tile[lq * TILE + lrow] = vec4<f32>(xval(x_base, k), xval(x_base, k + 1u),
                                             xval(x_base, k + 2u), xval(x_base, k + 3u));
        w_tile[lq * TILE + lrow] = w4(i32(min(kq, p.ldk4 - 1u)), w_row);
        workgroupBarrier();
        for (var q = 0u; q < KQ; q += 1u) {
            let b0 = w_tile[q * TILE + 4u * tx];
            let b1 = w_tile[q * TILE + 4u * tx + 1u];
            let b2 = w_tile[q * TILE + 4u * tx + 2u];
            let b3 = w_tile[q * TILE + 4u * tx + 3u];
            for (var i = 0u; i < 4u; i += 1u) {
                let a = x_tile[q * TILE + 4u * ty + i];
                acc[i] += vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
                if (NORM == 1u) {
                    ss[i] += dot(a, a);
                }
            }
        }
        workgroupBarrier();
    }
    if (NORM == 1u) {
        for (var i = 0u; i < 4u; i += 1u) {
            acc[i] *= inverseSqrt(ss[i] / f32(p.k) + p.eps);
        }
    }
    for (var i = 0u; i < 4u; i += 1u) {
        let t = t_tile + 4u * ty + i;
        if (t < p.t) {
            let base = t * p.y_stride + p.y_off + p.col0;
            for (var j = 0u; j < 4u; j += 1u) {
                let o = o_tile + 4u * tx + j;
                if (o < p.rows) {
                    var r = acc[i][j];
                    if ((p.flags & 1u) != 0u) {
                        r += bias[p.col0 + o];
                    }
                    if ((p.flags & 2u) != 0u) {
                        r += ys[base + o];
                    }
                    ys[base + o] = r;
                }
            }
        }
    }
}
