// ssm_step.wgsl with vec4 accesses to the state, B and C (4 states per load): used when N and
// the B/C offsets are multiples of 4. On CPU Vulkan (lavapipe) each storage access costs about
// the same whatever its width, so this does a quarter of the accesses of the scalar kernel.
//   S[h, p, :] = exp(dt[h] * A[h]) * S[h, p, :] + dt[h] * x[h, p] * B[g, :];  y[h, p] = <S[h, p, :], C[g, :]>
// bindings: 0 params | 1 x | 2 B (vec4) | 3 C (vec4) | 4 dt | 5 A_log | 6 state [H, P, N] (vec4, rw) | 7 y (rw)
// grid: one invocation per (h, p).

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

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.h * p.p) {
        return;
    }
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
    for (var j = 0u; j < n4; j += 1u) {
        let s = da * state[sb + j] + dx * bs[bb + j];
        state[sb + j] = s;
        acc += s * cs[cb + j];
    }
    ys[p.y_off + h * p.p + pp] = acc.x + acc.y + acc.z + acc.w;
}
