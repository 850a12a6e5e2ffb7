// Decode product for q8_0 / q4_0 weights: Y[t, col0 + o] (+)= sum_k X[t, k] * W[col0 + o, k]
// (+ bias) for a few rows t, W in the superblock layout of GpuMatrix::from_quant (weights.rs):
// per 128 weights one texel of 4 f32 scales, then the codes (q4_0: one texel per block of 32,
// 8 nibbles per u32 in weight order, offset 8; q8_0: two texels per block, 4 i8 per u32).
// Why its own kernel: the generic `w4` variant fetches a scale and a code texel for every 4
// weights; here a lane fetches each code texel once for 32 (q4_0) or 16 (q8_0) weights, X's 8
// texels of a block once for its 8 rows, and a block's scale texel with its codes: per row and
// block 2 (q4_0) or 3 (q8_0) weight fetches where f32 takes 8 (lavapipe's cost is the fetch).
// The scale texel is fetched again for each of its 4 blocks rather than held across them: 8
// rows' scales carried through the K loop cost lavapipe more than the fetches they save
// (measured: the kernel 1.2-1.4x faster without).
// Structure as matvec.wgsl: an 8-lane workgroup, lane l owns outputs o0 + l + 8m (m < 8), X's
// rows in an rgba32float texture (zero past K). K is a multiple of 32 (the op checks).
// W's rows are interleaved by 8 (QuantRows::Interleaved8 in weights.rs, the layout of the
// plans that run this kernel): texel c of row r at (8c + r % 8, r / 8), so the 8 lanes' texels
// of rows o0 + 8m .. o0 + 8m + 7 are 128 contiguous bytes and a workgroup streams 8 runs of
// memory, not 64 rows' (measured on lavapipe: the kernel 1.1-1.4x faster than with plain rows).
// Params and flags as matvec.wgsl (bit 0 = add bias, bit 1 = accumulate into Y).
// With NORM = 1 (decode's fusions, as matvec.wgsl's NORM, for one row) the product is of
// RMSNorm(X) with its weight g: X's K columns in `groups` groups of K / groups (whole blocks),
// each normalised by its own 1 / rms; g is not folded into W (that would change the stored
// blocks) but read from row `g_row` of the X texture, one fetch per X texel, shared by the
// lane's 8 rows. main_conv adds the decode conv step for in_proj's xBC rows (as matvec.wgsl).
// Portable: no subgroups, no f16, no int8 feature.
// bindings: 0 params | 1 X (texture; g in row g_row) | 2 W block (rgba32uint texture)
//           | 3 bias [out] | 4 Y (rw) (main_conv also: 5 conv weight [Dc, K] | 6 conv bias [Dc]
//           | 7 conv state (rw) | 8 xbc (rw))
// grid: x over ceil(rows / 64), y over t.

#include decode_product

// 1: q8_0 (9 texels per superblock), 0: q4_0 (5).
override Q8: u32 = 0u;
override NORM: u32 = 0u;

@group(0) @binding(1) var xt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(2) var w: texture_storage_2d<rgba32uint, read>;


// 4 q4_0 codes (nibbles sh/4 .. sh/4 + 4 of a word) as stored, offset included: the block's
// 8 · Σx is subtracted once for all 8 rows instead of 8 from every code (a fifth of a code's
// vector operations on lavapipe).
fn nib(word: u32, sh: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(word) >> vec4<u32>(sh, sh + 4u, sh + 8u, sh + 12u)) & vec4<u32>(15u));
}

// The 4 i8 codes of a word, sign-extended by an arithmetic shift.
fn i8x4(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<i32>(bitcast<i32>(word)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Row t's products for outputs o + 8m, m < 8 (before bias / accumulation).
fn product(o: u32, t: u32) -> array<f32, 8> {
    // Texel c of row o + 8m is at (8c + o % 8, o / 8 + m) (rows interleaved by 8; the texture is
    // padded to whole workgroups, so no load is out of bounds).
    let xl = i32(o & 7u);
    let y0 = i32(o >> 3u);
    var acc: array<f32, 8>;
    let texels = select(5u, 9u, Q8 == 1u);
    let nb = p.k / 32u;
    let groups = select(1u, p.groups, NORM == 1u);
    let seg = nb / groups;
    let xrow = i32(t);
    for (var gi = 0u; gi < groups; gi += 1u) {
        var part: array<f32, 8>;
        var ss = vec4<f32>(0.0);
        for (var bk = gi * seg; bk < (gi + 1u) * seg; bk += 1u) {
            let base = i32((bk >> 2u) * texels);
            let j = bk & 3u;
            let x0 = i32(8u * bk);
            var xv: array<vec4<f32>, 8>;
            var xs = vec4<f32>(0.0);
            for (var i = 0; i < 8; i += 1) {
                let v = textureLoad(xt, vec2<i32>(x0 + i, xrow));
                if (NORM == 1u) {
                    ss += v * v;
                    xv[i] = v * textureLoad(xt, vec2<i32>(x0 + i, i32(p.g_row)));
                } else {
                    xv[i] = v;
                }
                xs += xv[i];
            }
            // q4_0's offset: Σ (c − 8)·x = Σ c·x − 8·Σx.
            let offset = 8.0 * dot(xs, vec4<f32>(1.0));
            for (var m = 0u; m < 8u; m += 1u) {
                var d: f32;
                if (Q8 == 1u) {
                    let a = textureLoad(w, vec2<i32>(8 * (base + 1 + 2 * i32(j)) + xl, y0 + i32(m)));
                    let b = textureLoad(w, vec2<i32>(8 * (base + 2 + 2 * i32(j)) + xl, y0 + i32(m)));
                    d = dot(xv[0], i8x4(a.x)) + dot(xv[1], i8x4(a.y)) + dot(xv[2], i8x4(a.z))
                      + dot(xv[3], i8x4(a.w)) + dot(xv[4], i8x4(b.x)) + dot(xv[5], i8x4(b.y))
                      + dot(xv[6], i8x4(b.z)) + dot(xv[7], i8x4(b.w));
                } else {
                    let c = textureLoad(w, vec2<i32>(8 * (base + 1 + i32(j)) + xl, y0 + i32(m)));
                    d = dot(xv[0], nib(c.x, 0u)) + dot(xv[1], nib(c.x, 16u))
                      + dot(xv[2], nib(c.y, 0u)) + dot(xv[3], nib(c.y, 16u))
                      + dot(xv[4], nib(c.z, 0u)) + dot(xv[5], nib(c.z, 16u))
                      + dot(xv[6], nib(c.w, 0u)) + dot(xv[7], nib(c.w, 16u)) - offset;
                }
                // Block j's scale by selects (a dynamic component index goes through memory).
                let sc = bitcast<vec4<f32>>(textureLoad(w, vec2<i32>(8 * base + xl, y0 + i32(m))));
                let sj = select(select(sc.x, sc.y, j == 1u), select(sc.z, sc.w, j == 3u), j >= 2u);
                part[m] += sj * d;
            }
        }
        var s = 1.0;
        if (NORM == 1u) {
            s = inverseSqrt(dot(ss, vec4<f32>(1.0)) / f32(32u * seg) + p.eps);
        }
        for (var m = 0u; m < 8u; m += 1u) {
            acc[m] += part[m] * s;
        }
    }
    return acc;
}

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let o = wid.x * 64u + lane;
    let t = wid.y;
    let acc = product(o, t);
    for (var m = 0u; m < 8u; m += 1u) {
        store(t, o + 8u * m, acc[m]);
    }
}

// main_conv: main for one decode row of in_proj, plus MODEL.md step 2 for the xBC outputs
// (rows conv_lo .. conv_lo + conv_dc): as matvec.wgsl's main_conv.

@compute @workgroup_size(8)
fn main_conv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let o = wid.x * 64u + lane;
    let acc = product(o, 0u);
    for (var m = 0u; m < 8u; m += 1u) {
        conv_step(o + 8u * m, store(0u, o + 8u * m, acc[m]));
    }
}
