// Decode-time Y[t, col0 + o] (+)= sum_k X[t, k] * W[col0 + o, k] (+ bias[col0 + o]) for a few
// rows t: the `gpu` plan's product (real GPUs, browsers). The lanes of a workgroup split K:
// lane l reads texels l, l + 64, ... of each of the workgroup's 8 output rows, so a subgroup
// reads consecutive texels of one row at a time (coalesced, 16 bytes a lane), and X's 4 values
// are read once for the 8 rows. The 8 sums are then reduced across the workgroup:
//   SUBGROUPS: subgroupAdd, then one partial per subgroup in workgroup memory. A subgroup's slot
//     comes from a workgroup atomic, so nothing assumes a subgroup size or how the driver maps
//     invocations to subgroups (NVIDIA/Apple 32, AMD 32 or 64, Intel 8-32, lavapipe 8);
//   otherwise: a tree in workgroup memory (adapters without subgroups).
// Weights come through `w4` (shaders::shader_variant: f32, f16, q8_0, q4_0 textures).
// X is read where it lies, a storage buffer (row t at x_off + t * x_stride): on a GPU that is
// as fast as a texture, and it spares the copy into the activation texture that the other
// plans' kernels need on lavapipe. Each such copy was a transfer between compute passes, with
// the texture's layout changed for it and back: two or four a layer and token.
// Params and flags are matvec.wgsl's / matvec_quant.wgsl's (bit 0 = add bias, bit 1 =
// accumulate into Y), so the host code is shared.
// NORM = 1: the product is of RMSNorm(X) with the norm weight folded into W (as matvec.wgsl);
// NORM = 2: ... with the weight [K] read from binding 9 (quantized W, where folding it would
// change the stored blocks).
// Each of `groups` groups (at most 8) of K / groups columns is normalised by its own
// 1 / sqrt(mean(x^2) + eps), computed first by the whole workgroup (X is a few KiB).
// main_conv: also MODEL.md step 2 for in_proj's xBC outputs, as matvec.wgsl's main_conv.
// bindings: 0 params | 1 X (storage) | 2 W block (texture) | 3 bias [out] | 4 Y (rw)
//           (main_conv also: 5 conv weight [Dc, K] | 6 conv bias [Dc] | 7 conv state (rw)
//           | 8 xbc (rw)) | 9 norm weight [K] (NORM = 2)
// grid: x over ceil(rows / 8), y over t. Workgroups of 64.
// (Browsers need `enable subgroups;`, which naga does not parse yet: the web build prepends it,
// see shaders::for_target.)

#include decode_product

override NORM: u32 = 0u;

const WG: u32 = 64u;
// Output rows per workgroup (and the most norm groups).
const R: u32 = 8u;

@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>;
@group(0) @binding(9) var<storage, read> gw: array<f32>;

var<workgroup> part: array<array<f32, R>, WG>;
var<workgroup> total: array<f32, R>;
var<workgroup> inv_rms: array<f32, R>;
#if SUBGROUPS
var<workgroup> slots: atomic<u32>;
#endif

// W[r, 4*k4 .. 4*k4 + 4] (the other formats' variants unpack it from their texels).
fn w4(k4: i32, r: i32) -> vec4<f32> {
    return textureLoad(w, vec2<i32>(k4, r));
}

// X[t, 4 * k4 .. 4 * k4 + 4] (zero past K).
fn x4(t: u32, k4: u32) -> vec4<f32> {
    let base = p.x_off + t * p.x_stride;
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c += 1u) {
        if (4u * k4 + c < p.k) {
            r[c] = xs[base + 4u * k4 + c];
        }
    }
    return r;
}

// The norm weight's g[4 * k4 .. 4 * k4 + 4] (NORM = 2; zero past K).
fn g4(k4: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var c = 0u; c < 4u; c += 1u) {
        if (4u * k4 + c < p.k) {
            r[c] = gw[4u * k4 + c];
        }
    }
    return r;
}

// Sums each of the R entries of `acc` over the workgroup into `total` (every lane calls it).
#if SUBGROUPS
fn reduce(acc: array<f32, R>, lid: u32, sg_lane: u32) {
    if (lid == 0u) {
        atomicStore(&slots, 0u);
    }
    workgroupBarrier();
    var s: array<f32, R>;
    for (var r = 0u; r < R; r += 1u) {
        s[r] = subgroupAdd(acc[r]);
    }
    if (sg_lane == 0u) {
        part[atomicAdd(&slots, 1u)] = s;
    }
    workgroupBarrier();
    if (lid < R) {
        let n = atomicLoad(&slots);
        var t = 0.0;
        for (var j = 0u; j < n; j += 1u) {
            t += part[j][lid];
        }
        total[lid] = t;
    }
    workgroupBarrier();
}
#else
fn reduce(acc: array<f32, R>, lid: u32, sg_lane: u32) {
    part[lid] = acc;
    workgroupBarrier();
    for (var h = WG / 2u; h > 0u; h >>= 1u) {
        if (lid < h) {
            for (var r = 0u; r < R; r += 1u) {
                part[lid][r] += part[lid + h][r];
            }
        }
        workgroupBarrier();
    }
    if (lid < R) {
        total[lid] = part[0][lid];
    }
    workgroupBarrier();
}
#endif

// 1 / rms of each norm group of row t into inv_rms (NORM only).
fn norm_groups(t: u32, lid: u32, sg_lane: u32) {
    let seg = p.ldk4 / p.groups;
    var ss: array<f32, R>;
    for (var g = 0u; g < p.groups; g += 1u) {
        for (var k4 = g * seg + lid; k4 < (g + 1u) * seg; k4 += WG) {
            let xv = x4(t, k4);
            ss[g] += dot(xv, xv);
        }
    }
    reduce(ss, lid, sg_lane);
    if (lid < p.groups) {
        inv_rms[lid] = inverseSqrt(total[lid] / f32(4u * seg) + p.eps);
    }
    workgroupBarrier();
}

// Row t's products for outputs o0 .. o0 + R into `total` (before bias / accumulation).
fn product(o0: u32, t: u32, lid: u32, sg_lane: u32) {
    if (NORM != 0u) {
        norm_groups(t, lid, sg_lane);
    }
    // Rows past the block are clamped for loads (their results are not stored).
    var rr: array<i32, R>;
    for (var r = 0u; r < R; r += 1u) {
        rr[r] = i32(min(o0 + r, p.rows - 1u));
    }
    let seg = max(p.ldk4 / max(p.groups, 1u), 1u);
    var acc: array<f32, R>;
    // X reads zero past K (and W is zero there): no tail to mask.
    for (var k4 = lid; k4 < p.ldk4; k4 += WG) {
        var xv = x4(t, k4);
        if (NORM != 0u) {
            xv *= inv_rms[min(k4 / seg, R - 1u)];
            if (NORM == 2u) {
                xv *= g4(k4);
            }
        }
        for (var r = 0u; r < R; r += 1u) {
            acc[r] += dot(xv, w4(i32(k4), rr[r]));
        }
    }
    reduce(acc, lid, sg_lane);
}


@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#if SUBGROUPS
    @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
) {
#if SUBGROUPS
    let lane = sg_lane;
#else
    let lane = lid;
#endif
    let o0 = wid.x * R;
    product(o0, wid.y, lid, lane);
    if (lid < R) {
        store(wid.y, o0 + lid, total[lid]);
    }
}

// main_conv: main for one decode row of in_proj, plus MODEL.md step 2 for the outputs that are
// xBC channels (rows conv_lo .. conv_lo + conv_dc of W): the causal conv over the carried
// state [K-1, Dc] and this row, SiLU, into xbc, and the state shifted by one row. Each channel
// belongs to one lane of one workgroup, so the shift is race-free.

@compute @workgroup_size(64)
fn main_conv(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#if SUBGROUPS
    @builtin(subgroup_invocation_id) sg_lane: u32,
#endif
) {
#if SUBGROUPS
    let lane = sg_lane;
#else
    let lane = lid;
#endif
    let o0 = wid.x * R;
    product(o0, 0u, lid, lane);
    if (lid < R) {
        conv_step(o0 + lid, store(0u, o0 + lid, total[lid]));
    }
}
