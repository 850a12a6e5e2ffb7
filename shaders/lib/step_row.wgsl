// What the decode-step kernels (ssm_step_tex, ssm_step_wide) do for a state row i = h * P + p
// besides sweeping its N values: the row's scalars before the sweep, its output after. Uses
// the including kernel's Params (step_tex_params), xs, dt, dt_bias, a_log, dskip, zs, ys,
// softplus and its overrides RAW_DT and GATE.

struct StepRow {
    h: u32,
    xi: f32,
    // exp(dt[h] A[h]) and dt[h] x[i]: S' = da S + dx B.
    da: f32,
    dx: f32,
    // Where B and C of the row's group start in `bc` (vec4s).
    bb: u32,
    cb: u32,
}

// Row i's scalars; with RAW_DT, dt = clamp(softplus(raw + dt_bias), lo, hi) (MODEL.md step 3).
fn step_row(i: u32) -> StepRow {
    let h = i / p.p;
    let g = h / (p.h / p.g);
    var d = dt[p.dt_off + h];
    if (RAW_DT == 1u) {
        d = clamp(softplus(d + dt_bias[h]), p.lo, p.hi);
    }
    let xi = xs[p.x_off + i];
    let n4 = p.n / 4u;
    return StepRow(h, xi, exp(d * -exp(a_log[h])), d * xi, g * n4, p.c4 + g * n4);
}

// Stores row i's output y = <S', C>; with GATE, (y + D[h] x) silu(z) (MODEL.md steps 5-6 up to
// the norm).
fn store_y(r: StepRow, i: u32, y: f32) {
    var v = y;
    if (GATE == 1u) {
        let z = zs[p.z_off + i];
        v = (v + dskip[r.h] * r.xi) * (z / (1.0 + exp(-z)));
    }
    ys[p.y_off + i] = v;
}
