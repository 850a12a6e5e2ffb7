//! GFLOP/s of the CPU engine's prefill product (`cpu::ops::matmul`, rows >= 8: the packed GEMM)
//! at the mamba2-130m in_proj and out_proj sizes, 512 rows. `cargo run --release --example cpu_gemm`.

use std::time::Instant;

use transmamba::cpu::ops::matmul;
use transmamba::model::Tensor;

fn main() {
    for (k, n) in [(768usize, 3352usize), (1536, 768)] {
        let rows = 512;
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let w = Tensor::new(
            vec![n, k],
            (0..n * k)
                .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
                .collect(),
        );
        let mut best = f64::MAX;
        for _ in 0..7 {
            let t = Instant::now();
            std::hint::black_box(matmul(&x, rows, &w, None));
            best = best.min(t.elapsed().as_secs_f64());
        }
        let flop = 2.0 * (rows * k * n) as f64;
        println!(
            "[{rows}x{k}]·[{k}x{n}]: {:.1} GFLOP/s (best of 7)",
            flop / best / 1e9
        );
    }
}
