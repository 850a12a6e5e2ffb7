// Decode-time Y[t, col0 + o] (+)= sum_k X[t, k] * W[col0 + o, k] (+ bias[col0 + o]) for a few
// rows t, with X's rows packed into an rgba32float texture (texel (i, t) = X[t, 4i..4i+4], zero
// past K: the op copies aligned rows there, or packs them with rows_to_texture).
// Why (lavapipe, Mesa 22.3): a storage-buffer load is a per-lane loop there, and so is a
// uniform or workgroup load at an index the compiler cannot prove constant (a loop counter
// is not): 32 scalar loads per vec4. A read-only storage-texture load is one vector gather of
// 8 texels. So X and W are both texel fetches, and a lane owns 8 outputs (lane l of an
// 8-wide workgroup: o0 + l + 8m, m < 8), one X fetch per 8 W fetches. With W streaming from
// DRAM (decode) this is ~1.3x the kernel that read X from a uniform buffer with 4 outputs per
// lane (core/examples/matvec_designs.rs, NW=8). Same params, W layout and flags as
// matmul_sg.wgsl (bit 0 = add bias, bit 1 = accumulate into Y); x_stride / x_off are unused.
// Portable: no subgroups, no f16.
// With NORM = 1 the product is of RMSNorm(X) instead (MODEL.md's RMSNorm with its weight
// folded into W's columns at load, see engine/model.rs): X's K columns form `groups` groups of
// K/groups, each normalised separately, x / sqrt(mean(x^2) + eps). The sum of squares rides
// along in the loop (one more dot per vec4 of X, which every lane already holds), so the
// norm costs no dispatch and no extra pass over X: on lavapipe a dispatch costs ~0.1 ms.
// Needs K / groups a multiple of 4 (the op checks).
// bindings: 0 params | 1 X (texture) | 2 W block (texture) | 3 bias [out] | 4 Y (rw)
//           (main_conv also: 5 conv weight [Dc, K] | 6 conv bias [Dc] | 7 conv state (rw)
//           | 8 xbc (rw))
// grid: x over ceil(rows / 64), y over t.

#include decode_product

override NORM: u32 = 0u;

@group(0) @binding(1) var xt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var w: texture_storage_2d<rgba32float, read>;

// W[r, 4*k4 .. 4*k4 + 4] (the f16 variant of this shader unpacks it from half a packed texel).
fn w4(k4: i32, r: i32) -> vec4<f32> {
    return textureLoad(w, vec2<i32>(k4, r));
}


fn dots(xv: vec4<f32>, k4: i32, r: vec4<i32>) -> vec4<f32> {
    return vec4<f32>(dot(xv, w4(k4, r.x)), dot(xv, w4(k4, r.y)),
                     dot(xv, w4(k4, r.z)), dot(xv, w4(k4, r.w)));
}

// Outputs o + 8m of one row: m < 4 in lo, 4 <= m < 8 in hi.
struct Eight {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Row t's products for block outputs o + 8m, m < 8 (before bias / accumulation).
fn product(o: u32, t: u32) -> Eight {
    let ol = p.rows - 1u;
    // Rows past the block are clamped for loads (their results are not stored).
    let ra = vec4<i32>(vec4<u32>(min(o, ol), min(o + 8u, ol), min(o + 16u, ol), min(o + 24u, ol)));
    let rb = vec4<i32>(vec4<u32>(min(o + 32u, ol), min(o + 40u, ol), min(o + 48u, ol), min(o + 56u, ol)));
    let row = i32(t);
    var e = Eight(vec4<f32>(0.0), vec4<f32>(0.0));
    if (NORM == 1u) {
        // ldk4 = K / 4 here; each group's partial products scaled by its own 1 / rms.
        let seg = p.ldk4 / p.groups;
        var i = 0u;
        for (var g = 0u; g < p.groups; g += 1u) {
            var a = Eight(vec4<f32>(0.0), vec4<f32>(0.0));
            var ss = vec4<f32>(0.0);
            let end = i + seg;
            for (; i < end; i += 1u) {
                let xv = textureLoad(xt, vec2<i32>(i32(i), row));
                ss += xv * xv;
                a.lo += dots(xv, i32(i), ra);
                a.hi += dots(xv, i32(i), rb);
            }
            let s = inverseSqrt(dot(ss, vec4<f32>(1.0)) / f32(4u * seg) + p.eps);
            e.lo += a.lo * s;
            e.hi += a.hi * s;
        }
        return e;
    }
    // X is zero past K (and so is W): no tail to mask.
    for (var i = 0u; i < p.ldk4; i += 1u) {
        let xv = textureLoad(xt, vec2<i32>(i32(i), row));
        e.lo += dots(xv, i32(i), ra);
        e.hi += dots(xv, i32(i), rb);
    }
    return e;
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let o = wid.x * 64u + lane;
    let t = wid.y;
    let e = product(o, t);
    for (var m = 0u; m < 4u; m += 1u) {
        store(t, o + 8u * m, e.lo[m]);
        store(t, o + 32u + 8u * m, e.hi[m]);
    }
}

// main_conv: main for one decode row of in_proj, plus MODEL.md step 2 for the outputs that are
// xBC channels (rows conv_lo .. conv_lo + conv_dc of W): the causal conv over the carried
// state [K-1, Dc] and this row, SiLU, into xbc, and the state shifted by one row, as
// conv1d_vec4's `step` does. Each channel belongs to one lane, so the shift is race-free; the
// conv's own dispatch goes (one per layer and token, ~0.1 ms each on lavapipe).

@compute @workgroup_size(8)
fn main_conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let o = wid.x * 64u + lane;
    let e = product(o, 0u);
    for (var m = 0u; m < 4u; m += 1u) {
        conv_step(o + 8u * m, store(0u, o + 8u * m, e.lo[m]));
        conv_step(o + 32u + 8u * m, store(0u, o + 32u + 8u * m, e.hi[m]));
    }
}
