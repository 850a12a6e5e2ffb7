//! Token lists as users write them: `1,2,3`.

use crate::error::{Error, Result};

/// Parses comma- or whitespace-separated token ids.
pub fn parse_token_list(text: &str) -> Result<Vec<u32>> {
    let ids = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| Error::TokenList(truncate(text)))
        })
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        return Err(Error::EmptyTokens);
    }
    Ok(ids)
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_and_rejects() {
        assert_eq!(parse_token_list("1, 2,3\n4").unwrap(), vec![1, 2, 3, 4]);
        assert!(matches!(parse_token_list(" , "), Err(Error::EmptyTokens)));
        assert!(matches!(parse_token_list("1,x"), Err(Error::TokenList(_))));
        assert!(matches!(parse_token_list("-1"), Err(Error::TokenList(_))));
    }
}
