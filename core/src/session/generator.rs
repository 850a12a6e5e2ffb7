//! Text generation over a [`Session`]: sample, stream text, stop. One loop for the CLI's
//! `generate` and `chat` and the browser's `generate`, so they give the same tokens.

use crate::error::{Error, Result};
use crate::sampling::{Sampler, SamplingOptions};
use crate::text::{TextCodec, TextStream};

use super::Session;

#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    pub sampling: SamplingOptions,
    /// Generation ends after emitting one of these (e.g. the tokenizer's end-of-text id).
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            sampling: SamplingOptions::default(),
            stop_tokens: Vec::new(),
        }
    }
}

/// One generated token and the text it completes (empty while a UTF-8 sequence is unfinished).
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub index: usize,
    pub token: u32,
    pub text: String,
}

/// A generation in progress: [`Generator::start`] appends a prompt, each
/// [`Generator::next`] samples one token from the session's last logits and appends it.
///
/// Sampling is keyed by the sequence position (see [`Sampler::sample`]), so a session saved
/// after N tokens and continued with the same options gives the tokens of one run of N + M.
pub struct Generator<'c> {
    sampler: Sampler,
    stream: TextStream<'c>,
    max_tokens: usize,
    stop_tokens: Vec<u32>,
    tokens: Vec<u32>,
    stopped: bool,
}

impl<'c> Generator<'c> {
    pub fn new(codec: &'c TextCodec, opts: &GenerateOptions) -> Result<Self> {
        Ok(Self {
            sampler: Sampler::new(opts.sampling.clone())?,
            stream: TextStream::new(codec),
            max_tokens: opts.max_tokens,
            stop_tokens: opts.stop_tokens.clone(),
            tokens: Vec::new(),
            stopped: false,
        })
    }

    /// Appends `prompt` to the session and feeds it (the prefill). An empty prompt continues
    /// from the session's last token; a session with no tokens needs a prompt.
    pub async fn start(&mut self, session: &mut Session, prompt: &[u32]) -> Result<()> {
        if prompt.is_empty() {
            if session.position() == 0 {
                return Err(Error::EmptyTokens);
            }
            session.next_logits().await?;
            return Ok(());
        }
        session.forward(prompt, crate::Logits::Last).await?;
        Ok(())
    }

    /// The next token, or `None` once `max_tokens` were generated or a stop token was emitted.
    pub async fn next(&mut self, session: &mut Session) -> Result<Option<Step>> {
        if self.stopped || self.tokens.len() >= self.max_tokens {
            return Ok(None);
        }
        // The logits are the model's output at the last position of the sequence (a session
        // that has seen no token has none: `start` with a prompt first).
        let position = session
            .position()
            .checked_sub(1)
            .ok_or(Error::EmptyTokens)?;
        // Greedy or top-k: the CPU engine's output screen gives the rows needed from a few
        // exact ones; otherwise (or where it cannot decide) every logit.
        let screened = if self.sampler.is_greedy() {
            session.screened_greedy().await?.map(|s| s.token)
        } else if let Some(k) = self.sampler.top_k() {
            match session.screened_top(k).await? {
                Some(rows) => Some(self.sampler.sample_top(rows, position)?),
                None => None,
            }
        } else {
            None
        };
        let token = match screened {
            Some(token) => token,
            None => {
                let logits = session.next_logits().await?;
                self.sampler.sample(logits, position)?
            }
        };
        session.push(token)?;
        self.tokens.push(token);
        self.stopped = self.stop_tokens.contains(&token);
        Ok(Some(Step {
            index: self.tokens.len() - 1,
            token,
            text: self.stream.push(token)?,
        }))
    }

    /// The tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Whether generation ended on a stop token.
    pub fn stopped_on_token(&self) -> bool {
        self.stopped
    }

    /// Blocking [`Self::start`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn start_blocking(&mut self, session: &mut Session, prompt: &[u32]) -> Result<()> {
        pollster::block_on(self.start(session, prompt))
    }

    /// Blocking [`Self::next`] (native).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn next_blocking(&mut self, session: &mut Session) -> Result<Option<Step>> {
        pollster::block_on(self.next(session))
    }
}
