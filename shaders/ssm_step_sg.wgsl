// ssm_step_vec4.wgsl for 8-wide subgroups: the 8 lanes of a workgroup are 8 consecutive p of one
// head (P a multiple of 8), so they share B and C; each lane loads one vec4 of B and of C per 8
// and the subgroup shares them by broadcast, instead of every lane loading all of them (storage
// loads are the cost on lavapipe, a broadcast is a register move). N a multiple of 32.
//   S[h, p, :] = exp(dt[h] * A[h]) * S[h, p, :] + dt[h] * x[h, p] * B[g, :];  y[h, p] = <S[h, p, :], C[g, :]>
// bindings: 0 params | 1 x | 2 B (vec4) | 3 C (vec4) | 4 dt | 5 A_log | 6 state [H, P, N] (vec4, rw) | 7 y (rw)
// grid: H * P / 8 workgroups of 8 (wid.x + wid.y * nwg.x).

struct Params {
    t: u32,
    h: u32,
    p: u32,
    n: u32,
    g: u32,
    q: u32,
    nc: u32,
    x_stride: u32,
    x_off: u32,
    b_stride: u32,
    b_off: u32,
    c_stride: u32,
    c_off: u32,
    dt_stride: u32,
    dt_off: u32,
    y_stride: u32,
    y_off: u32,
    l_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<storage, read> bs: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> cs: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dt: array<f32>;
@group(0) @binding(5) var<storage, read> a_log: array<f32>;
@group(0) @binding(6) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> ys: array<f32>;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let i = (wid.x + wid.y * nwg.x) * 8u + lane;
    let h = i / p.p;
    let pp = i - h * p.p;
    let g = h / (p.h / p.g);
    let d = dt[p.dt_off + h];
    let da = exp(d * -exp(a_log[h]));
    let dx = d * xs[p.x_off + h * p.p + pp];
    let n4 = p.n / 4u;
    let bb = (p.b_off + g * p.n) / 4u;
    let cb = (p.c_off + g * p.n) / 4u;
    let sb = i * n4;
    var acc = vec4<f32>(0.0);
    for (var j0 = 0u; j0 < n4; j0 += 8u) {
        let bl = bs[bb + j0 + lane];
        let cl = cs[cb + j0 + lane];
        {
            let s = da * state[sb + j0 + 0u] + dx * subgroupBroadcast(bl, 0u);
            state[sb + j0 + 0u] = s;
            acc += s * subgroupBroadcast(cl, 0u);
        }
        {
            let s = da * state[sb + j0 + 1u] + dx * subgroupBroadcast(bl, 1u);
            state[sb + j0 + 1u] = s;
            acc += s * subgroupBroadcast(cl, 1u);
        }
        {
            let s = da * state[sb + j0 + 2u] + dx * subgroupBroadcast(bl, 2u);
            state[sb + j0 + 2u] = s;
            acc += s * subgroupBroadcast(cl, 2u);
        }
        {
            let s = da * state[sb + j0 + 3u] + dx * subgroupBroadcast(bl, 3u);
            state[sb + j0 + 3u] = s;
            acc += s * subgroupBroadcast(cl, 3u);
        }
        {
            let s = da * state[sb + j0 + 4u] + dx * subgroupBroadcast(bl, 4u);
            state[sb + j0 + 4u] = s;
            acc += s * subgroupBroadcast(cl, 4u);
        }
        {
            let s = da * state[sb + j0 + 5u] + dx * subgroupBroadcast(bl, 5u);
            state[sb + j0 + 5u] = s;
            acc += s * subgroupBroadcast(cl, 5u);
        }
        {
            let s = da * state[sb + j0 + 6u] + dx * subgroupBroadcast(bl, 6u);
            state[sb + j0 + 6u] = s;
            acc += s * subgroupBroadcast(cl, 6u);
        }
        {
            let s = da * state[sb + j0 + 7u] + dx * subgroupBroadcast(bl, 7u);
            state[sb + j0 + 7u] = s;
            acc += s * subgroupBroadcast(cl, 7u);
        }
    }
    ys[p.y_off + h * p.p + pp] = acc.x + acc.y + acc.z + acc.w;
}
