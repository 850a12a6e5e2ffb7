// As dt.wgsl: v for v > 20, exp(v) for v < -15 (keeps relative accuracy), else log(1 + exp(v)).
fn softplus(v: f32) -> f32 {
    if (v > 20.0) {
        return v;
    }
    if (v < -15.0) {
        return exp(v);
    }
    return log(1.0 + exp(v));
}
