//! How much cache memory a sequence needs under a schedule (all f32).
//!
//! Per layer: the conv state (K-1 rows of Dc); while positions are before the TransPoint, one
//! attention-cache entry per token (B: G·N, x: H·P, dt: H); from the TransPoint on, the fixed
//! SSM state H·P·N in place of the cache.

use crate::config::ModelConfig;
use crate::schedule::{Schedule, TransPoint};

/// Bytes of one layer's cache after `len` tokens.
pub fn layer_cache_bytes(cfg: &ModelConfig, transpoint: TransPoint, len: usize) -> usize {
    let conv = (cfg.conv_kernel - 1) * cfg.d_conv();
    let per_token = cfg.n_groups * cfg.state_size + cfg.d_inner() + cfg.num_heads;
    let ssm = cfg.d_inner() * cfg.state_size;
    let floats = match transpoint {
        TransPoint::At(tau) if len > tau => conv + ssm,
        _ => conv + per_token * len,
    };
    4 * floats
}

/// Bytes of every layer's cache after `len` tokens.
pub fn cache_bytes(cfg: &ModelConfig, schedule: &Schedule, len: usize) -> usize {
    schedule
        .0
        .iter()
        .map(|&tp| layer_cache_bytes(cfg, tp, len))
        .sum()
}

/// Human-readable bytes.
pub fn format_bytes(b: usize) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b} B")
    }
}
