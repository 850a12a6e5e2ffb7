//! Text in and out: the model's `tokenizer.json` (through the `tokenizers` crate) when it has
//! one, raw bytes (token id = byte) otherwise.

#[cfg(not(target_arch = "wasm32"))]
use std::path::Path;

use crate::error::{Error, Result};

pub enum TextCodec {
    Tokenizer(Box<tokenizers::Tokenizer>),
    Bytes,
}

impl TextCodec {
    /// The model's tokenizer: the one carried in its file's metadata, else a `tokenizer.json`
    /// in the model directory (or beside the model file), else bytes.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn for_model(model: &crate::Model, path: Option<&Path>) -> Result<Self> {
        if let Some(codec) = Self::from_metadata(model)? {
            return Ok(codec);
        }
        let Some(path) = path else {
            return Ok(TextCodec::Bytes);
        };
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(Path::new("."))
        };
        let file = dir.join("tokenizer.json");
        if file.is_file() {
            let bytes = std::fs::read(&file).map_err(|source| Error::Io {
                path: file.clone(),
                source,
            })?;
            Self::from_tokenizer_json(&bytes, &file.display().to_string())
        } else {
            Ok(TextCodec::Bytes)
        }
    }

    /// The tokenizer carried in the model file's `__metadata__.tokenizer`, if any.
    pub fn from_metadata(model: &crate::Model) -> Result<Option<Self>> {
        model
            .tokenizer_json
            .as_ref()
            .map(|json| Self::from_tokenizer_json(json.as_bytes(), "__metadata__.tokenizer"))
            .transpose()
    }

    pub fn from_tokenizer_json(bytes: &[u8], name: &str) -> Result<Self> {
        let bad = |e: serde_json::Error| Error::Tokenizer(format!("{name}: {e}"));
        // Parse the JSON first, then build the tokenizer from the parsed value: tokenizers
        // 0.22 panics (an `expect` in its decoder deserializer) on a syntax error inside
        // `decoder` when it reads the text itself (found by fuzzing; fuzz/regressions).
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(bad)?;
        check_bpe_merges(&value, name)?;
        let tokenizer: tokenizers::Tokenizer = serde_json::from_value(value).map_err(bad)?;
        Ok(TextCodec::Tokenizer(Box::new(tokenizer)))
    }

    pub fn name(&self) -> &'static str {
        match self {
            TextCodec::Tokenizer(_) => "tokenizer.json",
            TextCodec::Bytes => "bytes",
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            TextCodec::Tokenizer(t) => t
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::Tokenizer(e.to_string())),
            TextCodec::Bytes => Ok(text.bytes().map(u32::from).collect()),
        }
    }

    /// Text of a token sequence (invalid UTF-8 from byte tokens is replaced).
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        match self {
            TextCodec::Tokenizer(t) => t
                .decode(tokens, false)
                .map_err(|e| Error::Tokenizer(e.to_string())),
            TextCodec::Bytes => {
                let bytes: Vec<u8> = tokens.iter().map(|&t| t.min(255) as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }
}

/// Streams text as tokens arrive: each call returns only the newly completed text, so a
/// multi-token character or a merge-dependent space is printed once it is final.
///
/// tokenizers 0.22 slices every BPE merge's second token past `continuing_subword_prefix`
/// without checking its length, and panics (aborts in wasm) when it is shorter (found by
/// fuzzing; fuzz/regressions/tokenizer_json): such a file is refused here first.
fn check_bpe_merges(value: &serde_json::Value, name: &str) -> Result<()> {
    use serde_json::Value;
    let Some(model) = value.get("model") else {
        return Ok(());
    };
    let prefix = model
        .get("continuing_subword_prefix")
        .and_then(Value::as_str)
        .unwrap_or("");
    let Some(merges) = model.get("merges").and_then(Value::as_array) else {
        return Ok(());
    };
    if prefix.is_empty() {
        return Ok(());
    }
    for (i, merge) in merges.iter().enumerate() {
        let second = match merge {
            Value::String(s) => s.split(' ').nth(1),
            Value::Array(parts) => parts.get(1).and_then(Value::as_str),
            _ => None,
        };
        if let Some(b) = second.filter(|b| b.get(prefix.len()..).is_none()) {
            return Err(Error::Tokenizer(format!(
                "{name}: merge {} joins {b:?}, which is shorter than the continuing_subword_prefix {prefix:?}",
                i + 1
            )));
        }
    }
    Ok(())
}

/// Each push decodes a short window of recent tokens, not the whole output, so a step costs
/// O(1) however long the run (re-decoding everything made 20,000 tokens O(n²)). The window
/// starts at the token before the last completed piece: decoding `window` and `window + new`
/// from the same start cancels any start-of-text effect of the decoder (a dropped leading
/// space), and their difference is the new text.
pub struct TextStream<'c> {
    codec: &'c TextCodec,
    /// The window: tokens from the last completed piece's start on.
    window: Vec<u32>,
    /// How many of `window`'s tokens were already printed.
    read: usize,
}

/// A window this long is flushed even if its text still ends in a replacement character
/// (a model emitting invalid UTF-8 forever must not grow it without bound).
const MAX_PENDING_TOKENS: usize = 16;

impl<'c> TextStream<'c> {
    pub fn new(codec: &'c TextCodec) -> Self {
        Self {
            codec,
            window: Vec::new(),
            read: 0,
        }
    }

    /// Tokens a push decodes now (bounded: the cost of a step does not grow with the output).
    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    pub fn push(&mut self, token: u32) -> Result<String> {
        self.window.push(token);
        let before = self.codec.decode(&self.window[..self.read])?;
        let text = self.codec.decode(&self.window)?;
        // Hold back a trailing replacement character: it may be half of a UTF-8 sequence.
        let pending = self.window.len() - self.read;
        let complete = !text.ends_with('\u{FFFD}') || pending >= MAX_PENDING_TOKENS;
        if !complete {
            return Ok(String::new());
        }
        let new = if text.starts_with(before.as_str()) {
            text[before.len()..].to_string()
        } else if pending >= MAX_PENDING_TOKENS {
            // The decoder rewrote earlier text (never seen with BPE): print past the common part.
            let common = before
                .char_indices()
                .zip(text.chars())
                .find(|((_, a), b)| a != b)
                .map_or(before.len().min(text.len()), |((i, _), _)| i);
            text[common..].to_string()
        } else {
            return Ok(String::new());
        };
        // The next window starts at this piece's tokens.
        self.window.drain(..self.read);
        self.read = self.window.len();
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: &str = r#"{
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"hello": 0, "world": 1, "[UNK]": 2},
                  "unk_token": "[UNK]"}
    }"#;

    #[test]
    fn tokenizer_json() {
        let c = TextCodec::from_tokenizer_json(WORDS.as_bytes(), "t").unwrap();
        assert_eq!(c.name(), "tokenizer.json");
        assert_eq!(c.encode("hello world there").unwrap(), vec![0, 1, 2]);
        assert_eq!(c.decode(&[0, 1]).unwrap(), "hello world");
        assert!(matches!(
            TextCodec::from_tokenizer_json(b"{not json", "t"),
            Err(Error::Tokenizer(_))
        ));
    }

    #[test]
    fn bytes_round_trip_and_stream() {
        let c = TextCodec::Bytes;
        let ids = c.encode("héllo").unwrap();
        assert_eq!(ids.len(), 6);
        assert_eq!(c.decode(&ids).unwrap(), "héllo");
        let mut s = TextStream::new(&c);
        let pieces: Vec<String> = ids.iter().map(|&t| s.push(t).unwrap()).collect();
        assert_eq!(pieces, vec!["h", "", "é", "l", "l", "o"]);
        // Invalid UTF-8 forever: flushed every MAX_PENDING_TOKENS, never held without bound.
        let mut s = TextStream::new(&c);
        let out: String = (0..100).map(|_| s.push(0xFF).unwrap()).collect();
        assert!(
            out.chars().filter(|&ch| ch == '\u{FFFD}').count() >= 90,
            "{out:?}"
        );
        assert!(s.window.len() <= 2 * MAX_PENDING_TOKENS);
    }
}
