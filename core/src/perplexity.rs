//! Perplexity: the mean negative log-likelihood of each token given the ones before it.

/// Accumulates −log p(target | row) over logits rows, in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NllSum {
    pub nll: f64,
    pub tokens: usize,
}

impl NllSum {
    /// Scores one row of logits against the token that followed.
    pub fn push(&mut self, logits: &[f32], target: u32) {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        let log_z = max + sum.ln();
        self.nll += log_z - logits[target as usize] as f64;
        self.tokens += 1;
    }

    /// Scores `rows` (one per token of `fed`, `[fed.len(), vocab]`) against the next tokens:
    /// row i predicts `next[i]`; rows without a next token are skipped.
    pub fn push_rows(&mut self, rows: &[f32], vocab: usize, next: &[u32]) {
        for (row, &t) in rows.chunks_exact(vocab).zip(next) {
            self.push(row, t);
        }
    }

    pub fn mean(&self) -> f64 {
        self.nll / self.tokens.max(1) as f64
    }

    pub fn perplexity(&self) -> f64 {
        self.mean().exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_logits_give_the_vocabulary_size() {
        let mut s = NllSum::default();
        s.push_rows(&[0.0; 8], 4, &[1, 3]);
        assert_eq!(s.tokens, 2);
        assert!((s.perplexity() - 4.0).abs() < 1e-12);
    }

    #[test]
    fn a_confident_right_guess_costs_little() {
        let mut s = NllSum::default();
        s.push(&[0.0, 30.0, 0.0], 1);
        assert!(s.perplexity() < 1.0 + 1e-9);
        let mut wrong = NllSum::default();
        wrong.push(&[0.0, 30.0, 0.0], 0);
        assert!((wrong.mean() - 30.0).abs() < 1e-6);
    }
}
