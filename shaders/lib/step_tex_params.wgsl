// The params of the decode-step kernels ssm_step_tex and ssm_step_wide (ops::ssd::StepTexParams).

struct Params {
    h: u32,
    p: u32,
    n: u32,
    g: u32,
    x_off: u32,
    dt_off: u32,
    y_off: u32,
    c4: u32,
    lo: f32,
    hi: f32,
    z_off: u32,
    // ssm_step_wide: B and C read from `xs` at these offsets (1) instead of the staging (0).
    bc_in_x: u32,
    b_off: u32,
    c_off: u32,
}
