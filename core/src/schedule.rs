//! TransPoints: where each layer switches from attention to the SSM.
//!
//! One type parses and prints every way a user names a schedule (`config`, `paper`, a number,
//! `inf`, a comma list), and resolves it against a model into one [`TransPoint`] per layer.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The token position at which a layer switches to the SSM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransPoint {
    /// Attention for positions `< n`, SSM from `n` on (0: a pure Mamba2 layer).
    At(usize),
    /// Never switch: attention only (`inf`, or `null` in config.json).
    Never,
}

impl TransPoint {
    /// τ' = min(τ, T): the number of attention positions in a sequence of `len` tokens.
    pub fn attention_len(self, len: usize) -> usize {
        match self {
            TransPoint::At(n) => n.min(len),
            TransPoint::Never => len,
        }
    }

    /// Whether the token at absolute position `pos` runs through attention.
    pub fn is_attention(self, pos: usize) -> bool {
        match self {
            TransPoint::At(n) => pos < n,
            TransPoint::Never => true,
        }
    }
}

impl fmt::Display for TransPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransPoint::At(n) => write!(f, "{n}"),
            TransPoint::Never => f.write_str("inf"),
        }
    }
}

impl FromStr for TransPoint {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "inf" | "null" | "none" | "never" => Ok(TransPoint::Never),
            t => t
                .parse::<usize>()
                .map(TransPoint::At)
                .map_err(|_| format!("`{t}` is not a non-negative integer or `inf`")),
        }
    }
}

/// The paper's final fine-grained schedule (v2, Table 6), cycled over every 8 layers; its last
/// entry, 8192, is the training length, so those layers are attention-only.
pub const PAPER_CYCLE: [TransPoint; 8] = [
    TransPoint::At(0),
    TransPoint::At(128),
    TransPoint::At(256),
    TransPoint::At(512),
    TransPoint::At(1024),
    TransPoint::At(2048),
    TransPoint::At(4096),
    TransPoint::Never,
];

/// A schedule as the user names it, before it is resolved against a model.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ScheduleSpec {
    /// The model config's `transpoints`.
    #[default]
    Config,
    /// The same TransPoint in every layer.
    Uniform(TransPoint),
    /// One TransPoint per layer.
    List(Vec<TransPoint>),
    /// [`PAPER_CYCLE`] repeated over the layers.
    Paper,
}

impl FromStr for ScheduleSpec {
    type Err = Error;
    fn from_str(spec: &str) -> Result<Self> {
        let err = |reason: String| Error::Schedule {
            spec: spec.to_string(),
            reason,
        };
        match spec.trim() {
            "" => Err(err("empty".into())),
            "config" => Ok(ScheduleSpec::Config),
            "paper" => Ok(ScheduleSpec::Paper),
            s if s.contains(',') => s
                .split(',')
                .map(|p| p.parse::<TransPoint>())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(ScheduleSpec::List)
                .map_err(err),
            s => s.parse().map(ScheduleSpec::Uniform).map_err(|e| {
                err(format!(
                    "{e}; expected `config`, `paper`, a number, `inf` or a comma list"
                ))
            }),
        }
    }
}

impl fmt::Display for ScheduleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleSpec::Config => f.write_str("config"),
            ScheduleSpec::Paper => f.write_str("paper"),
            ScheduleSpec::Uniform(t) => write!(f, "{t}"),
            ScheduleSpec::List(v) => {
                let parts: Vec<String> = v.iter().map(ToString::to_string).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl ScheduleSpec {
    /// One TransPoint per layer for a model with `config_default` as its own schedule.
    pub fn resolve(&self, config_default: &[TransPoint]) -> Result<Schedule> {
        let layers = config_default.len();
        let points = match self {
            ScheduleSpec::Config => config_default.to_vec(),
            ScheduleSpec::Uniform(t) => vec![*t; layers],
            ScheduleSpec::Paper => (0..layers).map(|i| PAPER_CYCLE[i % 8]).collect(),
            ScheduleSpec::List(v) if v.len() == layers => v.clone(),
            ScheduleSpec::List(v) => {
                return Err(Error::ScheduleLength {
                    got: v.len(),
                    layers,
                })
            }
        };
        Ok(Schedule(points))
    }
}

/// A resolved schedule: exactly one TransPoint per layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule(pub Vec<TransPoint>);

impl Schedule {
    pub fn layer(&self, i: usize) -> TransPoint {
        self.0[i]
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ScheduleSpec::List(self.0.clone()).fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransPoint::*;

    #[test]
    fn parse_and_print_round_trip() {
        for s in ["config", "paper", "0", "inf", "128", "0,inf,16", "3,4"] {
            let spec: ScheduleSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert_eq!(
            "null".parse::<ScheduleSpec>().unwrap(),
            ScheduleSpec::Uniform(Never)
        );
    }

    #[test]
    fn malformed_specs_are_errors() {
        for s in ["", "abc", "-1", "1,,2", "1.5", "0,x"] {
            assert!(
                matches!(s.parse::<ScheduleSpec>(), Err(Error::Schedule { .. })),
                "{s} should not parse"
            );
        }
    }

    #[test]
    fn resolve() {
        let cfg = vec![At(5); 10];
        assert_eq!(ScheduleSpec::Config.resolve(&cfg).unwrap().0, cfg);
        let paper = ScheduleSpec::Paper.resolve(&cfg).unwrap();
        assert_eq!(paper.layer(7), Never);
        assert_eq!(paper.layer(9), At(128));
        assert!(matches!(
            ScheduleSpec::List(vec![At(1), Never]).resolve(&cfg),
            Err(Error::ScheduleLength { got: 2, layers: 10 })
        ));
    }

    #[test]
    fn attention_len() {
        assert_eq!(At(5).attention_len(3), 3);
        assert_eq!(At(5).attention_len(9), 5);
        assert_eq!(Never.attention_len(9), 9);
        assert!(At(5).is_attention(4) && !At(5).is_attention(5));
    }
}
