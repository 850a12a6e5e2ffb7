// The params every ssd_* / ssm_sequential_scan / ssm_step shader declares (ops::ssd::SsdParams):
// rows t, heads h, head dim p, state n, groups g, chunk q, chunks nc, the views' strides and
// offsets, the CL scratch offset l_off.

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
