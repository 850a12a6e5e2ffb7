//! Choosing the next token from logits: greedy at temperature 0, else temperature, top-k and
//! top-p (nucleus) sampling from a seeded generator, so a seed reproduces a run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingOptions {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1 keeps all.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

pub struct Sampler {
    opts: SamplingOptions,
}

impl Sampler {
    pub fn new(opts: SamplingOptions) -> Result<Self> {
        if !(opts.temperature.is_finite() && opts.temperature >= 0.0) {
            return Err(Error::InvalidOption {
                name: "temperature",
                reason: format!("{} is not a finite number >= 0", opts.temperature),
            });
        }
        if !(opts.top_p > 0.0 && opts.top_p <= 1.0) {
            return Err(Error::InvalidOption {
                name: "top-p",
                reason: format!("{} is not in (0, 1]", opts.top_p),
            });
        }
        Ok(Self { opts })
    }

    /// Whether this sampler takes the argmax (temperature 0).
    pub fn is_greedy(&self) -> bool {
        self.opts.temperature == 0.0
    }

    /// The next token for one row of logits, the model's output at sequence `position`. The
    /// random draw depends only on the seed and `position` (not on earlier draws), so a sequence
    /// saved and continued samples what one uninterrupted run would. Logits
    /// that are not all finite (an overflow, corrupt weights) are an error naming the position:
    /// argmax over NaN would otherwise pick token 0 forever.
    pub fn sample(&mut self, logits: &[f32], position: usize) -> Result<u32> {
        if let Some(&value) = logits.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFiniteLogits { position, value });
        }
        if logits.is_empty() {
            return Err(Error::InvalidOption {
                name: "logits",
                reason: "an empty row of logits has no token to choose".into(),
            });
        }
        Ok(self.sample_finite(logits, position))
    }

    fn sample_finite(&mut self, logits: &[f32], position: usize) -> u32 {
        if self.is_greedy() {
            return argmax(logits);
        }
        let rows: Vec<(u32, f32)> = (0..logits.len() as u32)
            .zip(logits.iter().copied())
            .collect();
        self.draw(rows, position)
    }

    /// The top k of [`SamplingOptions::top_k`], when set: the rows a sample needs.
    pub fn top_k(&self) -> Option<usize> {
        (self.opts.temperature > 0.0 && self.opts.top_k > 0).then_some(self.opts.top_k)
    }

    /// [`Self::sample`] from some rows of the logits: `(token, logit)` in ascending token
    /// order, holding (at least) the [`Self::top_k`] largest logits of the whole row, every other
    /// token's logit below theirs (what `OutputScreen::top` gives). The token drawn is the one
    /// `sample` would draw from the whole row.
    pub fn sample_top(&mut self, rows: Vec<(u32, f32)>, position: usize) -> Result<u32> {
        let k = self.top_k().ok_or_else(|| Error::InvalidOption {
            name: "top-k",
            reason: "sampling from the top rows needs a temperature and a top-k".into(),
        })?;
        if rows.len() < k || !rows.windows(2).all(|w| w[0].0 < w[1].0) {
            return Err(Error::InvalidOption {
                name: "top-k",
                reason: format!(
                    "{} rows in ascending order are needed for top-{k}",
                    rows.len()
                ),
            });
        }
        if let Some(&(_, value)) = rows.iter().find(|r| !r.1.is_finite()) {
            return Err(Error::NonFiniteLogits { position, value });
        }
        Ok(self.draw(rows, position))
    }

    /// Temperature, top-k and top-p over `rows` (distinct tokens, finite logits).
    fn draw(&mut self, mut order: Vec<(u32, f32)>, position: usize) -> u32 {
        // Largest logit first, equal logits in ascending token order (one total order, so
        // selecting the top k first and sorting only those gives the full sort's first k: a
        // whole vocabulary sorted each token was ~2 ms of a step at 50k tokens).
        let by_rank = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let k = self.opts.top_k;
        if k > 0 && k < order.len() {
            order.select_nth_unstable_by(k - 1, by_rank);
            order.truncate(k);
        }
        order.sort_unstable_by(by_rank);
        let max = order[0].1 as f64;
        let t = self.opts.temperature as f64;
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&(_, l)| ((l as f64 - max) / t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.opts.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    acc += p;
                    acc >= self.opts.top_p as f64
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut rng = StdRng::seed_from_u64(draw_seed(self.opts.seed, position as u64));
        let mut r = rng.random::<f64>() * total;
        for (p, &(tok, _)) in probs.iter().zip(&order) {
            r -= p;
            if r <= 0.0 {
                return tok;
            }
        }
        order[order.len() - 1].0
    }
}

/// The generator seed of the draw at `position`: splitmix64 of the pair, so neighbouring
/// positions and seeds give unrelated streams.
fn draw_seed(seed: u64, position: u64) -> u64 {
    let mut z = seed ^ position.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_seeded() {
        let logits = [0.1, 3.0, 2.9, -1.0];
        let mut s = Sampler::new(SamplingOptions::default()).unwrap();
        assert_eq!(s.sample(&logits, 0).unwrap(), 1);
        let opts = SamplingOptions {
            temperature: 1.0,
            seed: 7,
            ..Default::default()
        };
        let run = |o: &SamplingOptions| {
            let mut s = Sampler::new(o.clone()).unwrap();
            (0..50)
                .map(|i| s.sample(&logits, i).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(&opts), run(&opts));
        assert!(
            run(&opts).iter().any(|&t| t != 1),
            "temperature 1 should not be greedy"
        );
        let top2 = SamplingOptions {
            top_k: 2,
            ..opts.clone()
        };
        assert!(run(&top2).iter().all(|&t| t == 1 || t == 2));
        let nucleus = SamplingOptions {
            top_p: 0.01,
            ..opts
        };
        assert!(run(&nucleus).iter().all(|&t| t == 1));
    }

    #[test]
    fn a_draw_depends_on_seed_and_position_only() {
        let logits = [0.3, 0.2, 0.1, 0.0, -0.1];
        let opts = SamplingOptions {
            temperature: 1.0,
            seed: 11,
            ..Default::default()
        };
        let mut whole = Sampler::new(opts.clone()).unwrap();
        let want: Vec<u32> = (0..40).map(|i| whole.sample(&logits, i).unwrap()).collect();
        // A fresh sampler (a restored session) from position 25 on continues the same stream.
        let mut resumed = Sampler::new(opts.clone()).unwrap();
        let tail: Vec<u32> = (25..40)
            .map(|i| resumed.sample(&logits, i).unwrap())
            .collect();
        assert_eq!(tail, want[25..]);
        let other = Sampler::new(SamplingOptions { seed: 12, ..opts })
            .unwrap()
            .sample_many(&logits, 40);
        assert_ne!(other, want, "another seed gives another stream");
    }

    /// Sampling from rows that hold the top k (and some rows beyond, ties at the k-th place)
    /// draws what sampling from the whole row draws, with and without top-p; rows short of k,
    /// out of order, or non-finite are refused.
    #[test]
    fn top_rows_draw_what_the_whole_row_draws() {
        let mut logits: Vec<f32> = (0..300)
            .map(|i| ((i * 7919) % 1000) as f32 / 300.0)
            .collect();
        logits[40] = logits[41]; // a tie
        for (top_k, top_p) in [(1usize, 1.0f32), (3, 1.0), (8, 0.9), (20, 0.5), (41, 1.0)] {
            let opts = SamplingOptions {
                temperature: 0.7,
                top_k,
                top_p,
                seed: 3,
            };
            let mut order: Vec<u32> = (0..300).collect();
            order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            // The top k and the next 5 (a screen keeps some rows beyond k), ascending.
            let mut ids: Vec<u32> = order[..top_k + 5].to_vec();
            ids.sort();
            let rows: Vec<(u32, f32)> = ids.iter().map(|&i| (i, logits[i as usize])).collect();
            let (mut whole, mut top) = (
                Sampler::new(opts.clone()).unwrap(),
                Sampler::new(opts.clone()).unwrap(),
            );
            assert_eq!(top.top_k(), Some(top_k));
            for position in 0..60 {
                assert_eq!(
                    top.sample_top(rows.clone(), position).unwrap(),
                    whole.sample(&logits, position).unwrap(),
                    "top-k {top_k}, top-p {top_p}, position {position}"
                );
            }
            let short = rows[..top_k - 1].to_vec();
            assert!(top.sample_top(short, 0).is_err());
            let mut backwards = rows.clone();
            backwards.reverse();
            assert!(top_k == 1 || top.sample_top(backwards, 0).is_err());
            let mut nan = rows.clone();
            nan[0].1 = f32::NAN;
            assert!(matches!(
                top.sample_top(nan, 4),
                Err(Error::NonFiniteLogits { position: 4, .. })
            ));
        }
        let greedy = Sampler::new(SamplingOptions::default()).unwrap();
        assert_eq!(greedy.top_k(), None);
    }

    /// The draw equals the plain one — a stable sort of every logit, truncated to k, then
    /// top-p and the walk — for logits with many ties, every k and top-p (a seeded run's
    /// tokens do not depend on how the top k are found).
    #[test]
    fn draws_equal_a_stable_sort_of_every_logit() {
        fn reference(o: &SamplingOptions, logits: &[f32], position: usize) -> u32 {
            let mut order: Vec<u32> = (0..logits.len() as u32).collect();
            order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            if o.top_k > 0 {
                order.truncate(o.top_k);
            }
            let max = logits[order[0] as usize] as f64;
            let mut probs: Vec<f64> = order
                .iter()
                .map(|&i| ((logits[i as usize] as f64 - max) / o.temperature as f64).exp())
                .collect();
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
            if o.top_p < 1.0 {
                let mut acc = 0.0;
                let keep = probs
                    .iter()
                    .position(|p| {
                        acc += p;
                        acc >= o.top_p as f64
                    })
                    .map_or(probs.len(), |i| i + 1);
                probs.truncate(keep);
                order.truncate(keep);
            }
            let total: f64 = probs.iter().sum();
            let mut rng = StdRng::seed_from_u64(draw_seed(o.seed, position as u64));
            let mut r = rng.random::<f64>() * total;
            for (p, &tok) in probs.iter().zip(&order) {
                r -= p;
                if r <= 0.0 {
                    return tok;
                }
            }
            order[order.len() - 1]
        }
        // 12 distinct values over 500 tokens: ties everywhere, -0.0 beside 0.0.
        let mut logits: Vec<f32> = (0..500)
            .map(|i| ((i * 37) % 12) as f32 * 0.25 - 1.0)
            .collect();
        logits[7] = -0.0;
        logits[8] = 0.0;
        for top_k in [0usize, 1, 2, 13, 100, 499, 500, 900] {
            for top_p in [1.0f32, 0.6, 0.05] {
                let o = SamplingOptions {
                    temperature: 0.9,
                    top_k,
                    top_p,
                    seed: 21,
                };
                let mut s = Sampler::new(o.clone()).unwrap();
                for position in 0..40 {
                    assert_eq!(
                        s.sample(&logits, position).unwrap(),
                        reference(&o, &logits, position),
                        "top-k {top_k}, top-p {top_p}, position {position}"
                    );
                }
            }
        }
    }

    impl Sampler {
        fn sample_many(mut self, logits: &[f32], n: usize) -> Vec<u32> {
            (0..n).map(|i| self.sample(logits, i).unwrap()).collect()
        }
    }

    #[test]
    fn non_finite_logits_stop_with_the_position() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for temperature in [0.0, 1.0] {
                let mut s = Sampler::new(SamplingOptions {
                    temperature,
                    ..Default::default()
                })
                .unwrap();
                match s.sample(&[0.5, bad, 0.1], 17) {
                    Err(Error::NonFiniteLogits { position: 17, .. }) => {}
                    other => panic!("expected NonFiniteLogits at 17, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn bad_options() {
        let bad = SamplingOptions {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(Sampler::new(bad).is_err());
        let bad = SamplingOptions {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(Sampler::new(bad).is_err());
    }
}
