// Causal attention with online softmax (MODEL.md step 4, attention region); no T x T matrix.
// Query t (absolute position pos = p0 + t), head h, group g = h / (H / G):
//   y[t, h, :] = sum_{s <= pos} softmax_s(scale * <R(pos) Q_t, R(s) K_s>) * V_s[h, :]
//   Q_t = q[q_off + t*q_stride + g*N + :]   (C of the query row)
//   K_s = k[k_off + s*k_stride + g*N + :]   (unrotated B in the cache)
//   V_s = v[v_off + s*v_stride + h*P + :]   (x in the cache)
// RoPE (rotate-half over N dims, inv_freq_i = theta^(-2i/N)) is applied through the identity
//   <R(a)u, R(b)w> = sum_{i<N/2} (u_i w_i + u_j w_j) cos(d) + (u_j w_i - u_i w_j) sin(d),
//   j = i + N/2, d = (s - pos) * inv_freq_i,
// so only the (exact, small) position difference is multiplied by inv_freq.
// flags: bit 0 = rope (log2_theta = log2(theta)).
// One invocation per (t, h, chunk of 32 channels of P); N <= 256.
// bindings: 0 params | 1 q | 2 k | 3 v | 4 y (rw)

#include attention_params

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qs: array<f32>;
@group(0) @binding(2) var<storage, read> ks: array<f32>;
@group(0) @binding(3) var<storage, read> vs: array<f32>;
@group(0) @binding(4) var<storage, read_write> ys: array<f32>;

const PC: u32 = 32u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    let nch = (p.p + PC - 1u) / PC;
    if (i >= p.nq * p.h * nch) {
        return;
    }
    let ch = i % nch;
    let th = i / nch;
    let h = th % p.h;
    let t = th / p.h;
    let g = h / (p.h / p.g);
    let pos = p.p0 + t;
    let qb = p.q_off + t * p.q_stride + g * p.n;
    let pb = ch * PC;
    let pn = min(PC, p.p - pb);
    let rope = (p.flags & 1u) != 0u;
    let half = p.n / 2u;

    var invf: array<f32, 128>;
    if (rope) {
        for (var j = 0u; j < half; j += 1u) {
            invf[j] = exp2(-f32(2u * j) / f32(p.n) * p.log2_theta);
        }
    }

    // Q in private memory: on lavapipe a storage load costs ~5-20x a private one, and Q is
    // the same for every key.
    var qv: array<f32, 256>;
    for (var j = 0u; j < p.n; j += 1u) {
        qv[j] = qs[qb + j];
    }
    var acc: array<f32, PC>;
    for (var j = 0u; j < PC; j += 1u) {
        acc[j] = 0.0;
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var s = 0u; s <= pos; s += 1u) {
        let kb = p.k_off + s * p.k_stride + g * p.n;
        var sc = 0.0;
        if (rope) {
            let dp = f32(i32(s) - i32(pos));
            for (var j = 0u; j < half; j += 1u) {
                let d = dp * invf[j];
                let ui = qv[j];
                let uj = qv[j + half];
                let wi = ks[kb + j];
                let wj = ks[kb + j + half];
                sc += (ui * wi + uj * wj) * cos(d) + (uj * wi - ui * wj) * sin(d);
            }
        } else {
            for (var j = 0u; j < p.n; j += 1u) {
                sc += qv[j] * ks[kb + j];
            }
        }
        sc *= p.scale;
        let mn = max(m, sc);
        let corr = exp(m - mn);
        let pw = exp(sc - mn);
        l = l * corr + pw;
        m = mn;
        let vb = p.v_off + s * p.v_stride + h * p.p + pb;
        for (var j = 0u; j < PC; j += 1u) {
            if (j < pn) {
                acc[j] = acc[j] * corr + pw * vs[vb + j];
            }
        }
    }
    let yb = p.y_off + t * p.y_stride + h * p.p + pb;
    let inv = 1.0 / l;
    for (var j = 0u; j < PC; j += 1u) {
        if (j < pn) {
            ys[yb + j] = acc[j] * inv;
        }
    }
}
