// One decode token of the SSM (MODEL.md step 4c) for the `gpu` plan, in place on the state
// buffer [H, P, N]:
//   S[h, p, :] = exp(dt[h] * A[h]) S[h, p, :] + dt[h] x[h, p] B[g, :];  y[h, p] = <S[h, p, :], C[g, :]>
// A workgroup of 64 lanes owns 8 rows (h, p): 8 lanes a row, each reading and writing every
// 8th vec4 of the row's state (consecutive lanes: consecutive 16 bytes, a row's 512 bytes in one
// sweep), then the 8 partial dots of a row are summed through workgroup memory. ssm_step_tex
// gives each row one lane that walks all of N: right for CPU adapters, too few and too serial
// lanes for a GPU (H * P of them for the whole state).
// B and C come from x's buffer where they lie beside x (bc_in_x: decode's xBC' row, no copy),
// else from the uniform staging buffer (B at vec4 0, C at vec4 c4), as ssm_step_tex.
// RAW_DT and GATE as ssm_step_tex.wgsl (step 3 applied here; y = (y + D x) silu(z)).
// Needs N % 4 == 0. Params are ssm_step_tex's (ops::ssd::StepTexParams).
// bindings: 0 params | 1 x | 2 B, C (uniform) | 3 dt | 4 A_log | 5 state (rw) | 6 y (rw)
//           | 7 dt_bias | 8 D [H] | 9 z
// grid: ceil(H * P / 8) workgroups, x + y * nwg.x (as grid_groups).

#include step_tex_params

override RAW_DT: u32 = 0u;
override GATE: u32 = 0u;

const ROWS: u32 = 8u;
const LANES: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xs: array<f32>;
@group(0) @binding(2) var<uniform> bc: array<vec4<f32>, 4096>;
@group(0) @binding(3) var<storage, read> dt: array<f32>;
@group(0) @binding(4) var<storage, read> a_log: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> ys: array<f32>;
@group(0) @binding(7) var<storage, read> dt_bias: array<f32>;
@group(0) @binding(8) var<storage, read> dskip: array<f32>;
@group(0) @binding(9) var<storage, read> zs: array<f32>;

var<workgroup> part: array<f32, 64>;

#include softplus
#include step_row

// xs[at .. at + 4] (B or C in place).
fn x4(at: u32) -> vec4<f32> {
    return vec4<f32>(xs[at], xs[at + 1u], xs[at + 2u], xs[at + 3u]);
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let rows = p.h * p.p;
    let i = (wid.x + wid.y * nwg.x) * ROWS + lid / LANES;
    let q = lid % LANES;
    let valid = i < rows;
    // Rows past the end are clamped for loads; nothing of theirs is stored.
    let ic = min(i, rows - 1u);
    let r = step_row(ic);
    let n4 = p.n / 4u;
    let sb = ic * n4;
    var acc = vec4<f32>(0.0);
    for (var j = q; j < n4; j += LANES) {
        var bv: vec4<f32>;
        var cv: vec4<f32>;
        if (p.bc_in_x == 1u) {
            bv = x4(p.b_off + 4u * (r.bb + j));
            cv = x4(p.c_off + 4u * (r.cb - p.c4 + j));
        } else {
            bv = bc[r.bb + j];
            cv = bc[r.cb + j];
        }
        let s = r.da * state[sb + j] + r.dx * bv;
        if (valid) {
            state[sb + j] = s;
        }
        acc += s * cv;
    }
    part[lid] = acc.x + acc.y + acc.z + acc.w;
    workgroupBarrier();
    if (q == 0u && valid) {
        var v = 0.0;
        for (var k = 0u; k < LANES; k += 1u) {
            v += part[lid + k];
        }
        store_y(r, ic, v);
    }
}
