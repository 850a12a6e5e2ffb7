// The params of every attention kernel (ops::attention::AttentionParams); flags: bit 0 = rope
// (log2_theta = log2(theta)).

struct Params {
    nq: u32,
    p0: u32,
    h: u32,
    p: u32,
    n: u32,
    g: u32,
    scale: f32,
    log2_theta: f32,
    q_stride: u32,
    q_off: u32,
    k_stride: u32,
    k_off: u32,
    v_stride: u32,
    v_off: u32,
    y_stride: u32,
    y_off: u32,
    flags: u32,
}
