// What the decode products (matvec.wgsl, matvec_quant.wgsl, matvec_split_k.wgsl) share:
// their params (mirrored by ops::matmul::DecodeParams), the bias and Y bindings, the store with
// bias and accumulation, and the conv step of main_conv. Included with `#include decode_product`.
// flags: bit 0 = add bias, bit 1 = accumulate into Y.

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
    groups: u32,
    eps: f32,
    conv_lo: u32,
    conv_dc: u32,
    conv_k: u32,
    conv_flags: u32,
    xbc_off: u32,
    g_row: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

// Stores output o of row t (+ bias, + Y with accumulate) if it exists; returns what it stored.
fn store(t: u32, o: u32, v: f32) -> f32 {
    var r = v;
    if (o < p.rows) {
        let yi = t * p.y_stride + p.y_off + p.col0 + o;
        if ((p.flags & 1u) != 0u) {
            r += bias[p.col0 + o];
        }
        if ((p.flags & 2u) != 0u) {
            r += ys[yi];
        }
        ys[yi] = r;
    }
    return r;
}

// MODEL.md step 2 for one decode row, for the outputs that are xBC channels (rows conv_lo ..
// conv_lo + conv_dc of W): the causal conv over the carried state [K-1, Dc] and this row, SiLU,
// into xbc, and the state shifted by one row, as conv1d_vec4's `step` does. Each channel
// belongs to one lane, so the shift is race-free; the conv's own dispatch goes.
@group(0) @binding(5) var<storage, read> conv_w: array<f32>;
@group(0) @binding(6) var<storage, read> conv_b: array<f32>;
@group(0) @binding(7) var<storage, read_write> conv_state: array<f32>;
@group(0) @binding(8) var<storage, read_write> xbc: array<f32>;

fn conv_step(o: u32, v: f32) {
    let row = p.col0 + o;
    if (o >= p.rows || row < p.conv_lo || row >= p.conv_lo + p.conv_dc) {
        return;
    }
    let c = row - p.conv_lo;
    let k1 = p.conv_k - 1u;
    var acc = conv_w[c * p.conv_k + k1] * v;
    if ((p.conv_flags & 1u) != 0u) {
        acc += conv_b[c];
    }
    for (var k = 0u; k < k1; k += 1u) {
        let s = conv_state[k * p.conv_dc + c];
        acc += conv_w[c * p.conv_k + k] * s;
        if (k > 0u) {
            conv_state[(k - 1u) * p.conv_dc + c] = s;
        }
    }
    if (k1 > 0u) {
        conv_state[(k1 - 1u) * p.conv_dc + c] = v;
    }
    xbc[p.xbc_off + c] = acc / (1.0 + exp(-acc));
}
