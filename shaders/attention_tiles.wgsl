// Causal attention for the `gpu` plan's prefill, flash-style: as attention.wgsl (same params,
// bindings, RoPE identity and online softmax), but a workgroup of 64 lanes owns 8 queries of one
// head and 32 channels of P, and walks the keys in blocks of 16 staged in workgroup memory with
// the queries' Q rows: each key row and value row is read from memory once per 8 queries
// (attention.wgsl: once per query), and no score matrix is written (the products route: a
// [G, nq, T] matrix and a softmax pass). Lane (q, j) of the 8 x 8: scores of keys 2j, 2j+1 for
// query q, then the online-softmax update of channels 4j .. 4j + 4. N <= 128 (the op checks).
// bindings: 0 params | 1 q | 2 k | 3 v | 4 y (rw)
// grid: x over ceil(nq / 8) query tiles, y over H, z over ceil(P / 32) channel chunks.

#include attention_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qs: array<f32>;
@group(0) @binding(2) var<storage, read> ks: array<f32>;
@group(0) @binding(3) var<storage, read> vs: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

const QT: u32 = 8u;
const KB: u32 = 16u;
const PC: u32 = 32u;
const NMAX: u32 = 128u;
const MASKED: f32 = -3.0e38;

var<workgroup> q_tile: array<f32, 1024>;
var<workgroup> k_tile: array<f32, 2048>;
var<workgroup> v_tile: array<f32, 512>;
var<workgroup> scores: array<f32, 128>;
var<workgroup> invf: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t0 = wid.x * QT;
    let h = wid.y;
    let pb = wid.z * PC;
    let g = h / (p.h / p.g);
    let qi = lid / 8u;
    let j = lid % 8u;
    let t = t0 + qi;
    let pos = p.p0 + min(t, p.nq - 1u);
    let rope = (p.flags & 1u) != 0u;
    let half = p.n / 2u;
    // The tile's queries (rows past nq repeat the last one; nothing of theirs is stored).
    for (var e = lid; e < QT * p.n; e += 64u) {
        let r = e / p.n;
        let n = e % p.n;
        let tq = min(t0 + r, p.nq - 1u);
        q_tile[r * NMAX + n] = qs[p.q_off + tq * p.q_stride + g * p.n + n];
    }
    if (rope) {
        for (var i = lid; i < half; i += 64u) {
            invf[i] = exp2(-f32(2u * i) / f32(p.n) * p.log2_theta);
        }
    }
    workgroupBarrier();
    // The largest position any query of the tile attends to.
    let last = p.p0 + min(t0 + QT, p.nq) - 1u;
    var m = MASKED;
    var l = 0.0;
    var acc = vec4<f32>(0.0);
    for (var s0 = 0u; s0 <= last; s0 += KB) {
        for (var e = lid; e < KB * p.n; e += 64u) {
            let r = e / p.n;
            let n = e % p.n;
            let s = min(s0 + r, last);
            k_tile[r * NMAX + n] = ks[p.k_off + s * p.k_stride + g * p.n + n];
        }
        for (var e = lid; e < KB * PC; e += 64u) {
            let r = e / PC;
            let c = e % PC;
            let s = min(s0 + r, last);
            let pp = pb + c;
            var v = 0.0;
            if (pp < p.p) {
                v = vs[p.v_off + s * p.v_stride + h * p.p + pp];
            }
            v_tile[e] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 2u; kk += 1u) {
            let key = 2u * j + kk;
            let s = s0 + key;
            var sc = 0.0;
            if (rope) {
                let dp = f32(i32(s) - i32(pos));
                for (var i = 0u; i < half; i += 1u) {
                    let d = dp * invf[i];
                    let ui = q_tile[qi * NMAX + i];
                    let uj = q_tile[qi * NMAX + i + half];
                    let wi = k_tile[key * NMAX + i];
                    let wj = k_tile[key * NMAX + i + half];
                    sc += (ui * wi + uj * wj) * cos(d) + (uj * wi - ui * wj) * sin(d);
                }
            } else {
                for (var n = 0u; n < p.n; n += 1u) {
                    sc += q_tile[qi * NMAX + n] * k_tile[key * NMAX + n];
                }
            }
            scores[qi * KB + key] = select(MASKED, sc * p.scale, s <= pos);
        }
        workgroupBarrier();
        // The online-softmax update of query qi (its 8 lanes compute the same m and l).
        var mx = m;
        for (var k = 0u; k < KB; k += 1u) {
            mx = max(mx, scores[qi * KB + k]);
        }
        let corr = exp(m - mx);
        var lsum = 0.0;
        var a = vec4<f32>(0.0);
        for (var k = 0u; k < KB; k += 1u) {
            let sk = scores[qi * KB + k];
            let pw = select(0.0, exp(sk - mx), sk > MASKED);
            lsum += pw;
            let vb = k * PC + 4u * j;
            a += pw * vec4<f32>(v_tile[vb], v_tile[vb + 1u], v_tile[vb + 2u], v_tile[vb + 3u]);
        }
        l = l * corr + lsum;
        acc = acc * corr + a;
        m = mx;
        workgroupBarrier();
    }
    if (t < p.nq) {
        let inv = 1.0 / l;
        for (var c = 0u; c < 4u; c += 1u) {
            let pp = pb + 4u * j + c;
            if (pp < p.p) {
                ys[p.y_off + t * p.y_stride + h * p.p + pp] = acc[c] * inv;
            }
        }
    }
}
