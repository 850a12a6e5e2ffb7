// Causal softmax over attention scores, in place (MODEL.md step 4, attention region, when the
// scores come from a product Q K^T): rows are (g, t) of a dense [G, nq, T] buffer, query t at
// absolute position p0 + t attends to keys s <= p0 + t:
//   P[g, t, s] = exp(scale * S[g, t, s] - m) / sum_{s' <= p0+t} exp(scale * S[g, t, s'] - m)
// with m the row's largest scaled score; P = 0 for s > p0 + t.
// bindings: 0 params | 1 S -> P (rw)
// grid: one workgroup of 64 per row (wid.x + wid.y * nwg.x = g * nq + t).

struct Params {
    rows: u32,
    nq: u32,
    p0: u32,
    t_len: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> sc: array<f32>;

var<workgroup> red: array<f32, 64>;

fn reduce(li: u32, v: f32, is_max: bool) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var k = 32u; k > 0u; k = k >> 1u) {
        if (li < k) {
            let o = red[li + k];
            red[li] = select(red[li] + o, max(red[li], o), is_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let t = row % p.nq;
    let n = min(p.p0 + t + 1u, p.t_len);
    let b = row * p.t_len;
    var m = -3.0e38;
    for (var s = li; s < n; s += 64u) {
        m = max(m, p.scale * sc[b + s]);
    }
    m = reduce(li, m, true);
    var l = 0.0;
    for (var s = li; s < n; s += 64u) {
        let e = exp(p.scale * sc[b + s] - m);
        sc[b + s] = e;
        l += e;
    }
    let inv = 1.0 / reduce(li, l, false);
    for (var s = li; s < p.t_len; s += 64u) {
        sc[b + s] = select(0.0, sc[b + s] * inv, s < n);
    }
}
