//! Lexical building blocks of the RFC 3261 section 25 grammar: tokens, quoted strings,
//! top-level list splitting and `;name=value` parameters.
//!
//! Everything here works on header values that the message layer has already unfolded
//! (RFC 3261 7.3.1), so LWS is plain spaces and tabs. Nothing here allocates more than
//! the input it is given, and nothing panics on any input.

use std::fmt;

use thiserror::Error;

/// Why a header value or URI failed the grammar.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyntaxError {
    #[error("empty value")]
    Empty,
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("unbalanced angle brackets")]
    UnbalancedAngle,
    #[error("display name is not a token list or quoted string")]
    BadDisplayName,
    #[error("whitespace inside a URI")]
    WhitespaceInUri,
    #[error("URI has no scheme")]
    MissingScheme,
    #[error("malformed host")]
    BadHost,
    #[error("malformed port")]
    BadPort,
    #[error("empty user part")]
    EmptyUser,
    #[error("a URI with ',', '?' or ';' must be enclosed in <>")]
    UnenclosedUri,
    #[error("empty parameter")]
    EmptyParam,
    #[error("malformed parameter")]
    BadParam,
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    #[error("malformed Via sent-protocol")]
    BadSentProtocol,
    #[error("malformed number")]
    BadNumber,
    #[error("number out of range")]
    NumberOutOfRange,
    #[error("unexpected trailing text")]
    TrailingText,
}

/// RFC 3261 25.1 `token` character.
pub(crate) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

pub(crate) fn is_lws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits `s` at every `sep` that is outside a quoted string and outside `<...>`.
/// Used for comma-separated header lists (RFC 3261 7.3.1) and `;` parameter lists.
pub(crate) fn split_top_level(s: &str, sep: char) -> Result<Vec<&str>, SyntaxError> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    let mut escaped = false;
    let mut angle = 0u32;
    for (i, c) in s.char_indices() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quote = false;
            }
            continue;
        }
        match c {
            '"' => in_quote = true,
            '<' => angle += 1,
            '>' => {
                angle = angle.checked_sub(1).ok_or(SyntaxError::UnbalancedAngle)?;
            }
            c if c == sep && angle == 0 => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if in_quote {
        return Err(SyntaxError::UnterminatedQuote);
    }
    if angle != 0 {
        return Err(SyntaxError::UnbalancedAngle);
    }
    parts.push(&s[start..]);
    Ok(parts)
}

/// Parses a quoted string at the start of `s` (which must begin with `"`). Returns the
/// raw quoted text including the quotes and the rest of the input.
pub(crate) fn take_quoted(s: &str) -> Result<(&str, &str), SyntaxError> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Ok((&s[..=i], &s[i + 1..]));
        }
    }
    Err(SyntaxError::UnterminatedQuote)
}

/// Removes the quotes and backslash escapes of a quoted string; returns other text as is.
pub fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

/// Quotes `s` as an RFC 3261 `quoted-string`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Decodes `%HH` escapes (RFC 3261 19.1.2). Invalid escapes are kept literally; the
/// result keeps embedded NULs (RFC 4475 3.1.1.4: `%00` must not truncate).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hi = hex_value(bytes[i + 1]);
            let lo = hex_value(bytes[i + 2]);
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// One `;name[=value]` parameter. The value keeps its quotes if it was quoted, so that
/// printing reproduces what was received; use [`Param::unquoted_value`] to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Option<impl Into<String>>) -> Self {
        Self {
            name: name.into(),
            value: value.map(Into::into),
        }
    }

    pub fn unquoted_value(&self) -> Option<String> {
        self.value.as_deref().map(unquote)
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, ";{}={}", self.name, v),
            None => write!(f, ";{}", self.name),
        }
    }
}

/// Parses header parameters (RFC 3261 25.1 `generic-param`) from text that starts
/// right after the first `;`. LWS around `;` and `=` is allowed (RFC 4475 3.1.1.1).
pub(crate) fn parse_params(s: &str) -> Result<Vec<Param>, SyntaxError> {
    let mut params = Vec::new();
    for part in split_top_level(s, ';')? {
        let part = part.trim_matches(is_lws);
        if part.is_empty() {
            return Err(SyntaxError::EmptyParam);
        }
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim_matches(is_lws), Some(v.trim_matches(is_lws))),
            None => (part, None),
        };
        if !is_token(name) {
            return Err(SyntaxError::BadParam);
        }
        if let Some(v) = value {
            if v.is_empty() {
                return Err(SyntaxError::BadParam);
            }
            if v.starts_with('"') {
                let (q, rest) = take_quoted(v)?;
                if !rest.is_empty() {
                    return Err(SyntaxError::TrailingText);
                }
                let _ = q;
            } else if v
                .chars()
                .any(|c| is_lws(c) || c == '"' || c == '<' || c == '>')
            {
                return Err(SyntaxError::BadParam);
            }
        }
        params.push(Param::new(name, value));
    }
    Ok(params)
}

pub(crate) fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// Parses a decimal number made only of digits (leading zeros allowed, RFC 4475
/// 3.1.1.1), rejecting signs and overflow.
pub(crate) fn parse_u32(s: &str) -> Result<u32, SyntaxError> {
    let s = s.trim_matches(is_lws);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SyntaxError::BadNumber);
    }
    let digits = s.trim_start_matches('0');
    if digits.len() > 10 {
        return Err(SyntaxError::NumberOutOfRange);
    }
    let v: u64 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| SyntaxError::BadNumber)?
    };
    u32::try_from(v).map_err(|_| SyntaxError::NumberOutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_angles() {
        let parts = split_top_level(r#""a,b" <sip:x@y;p=1,2>, <sip:z>"#, ',').unwrap();
        assert_eq!(parts.len(), 2);
        assert!(split_top_level("\"abc", ',').is_err());
        assert!(split_top_level("a>", ',').is_err());
    }

    #[test]
    fn params_allow_lws_and_reject_empty() {
        let p = parse_params(" tag    = 1918181833n").unwrap();
        assert_eq!(p[0].name, "tag");
        assert_eq!(p[0].value.as_deref(), Some("1918181833n"));
        assert_eq!(parse_params(";;"), Err(SyntaxError::EmptyParam));
    }

    #[test]
    fn numbers_reject_overflow_and_signs() {
        assert_eq!(parse_u32("0009"), Ok(9));
        assert!(parse_u32("-1").is_err());
        assert!(parse_u32("36893488147419103232").is_err());
        assert_eq!(parse_u32("4294967295"), Ok(u32::MAX));
        assert!(parse_u32("4294967296").is_err());
    }

    #[test]
    fn percent_decode_keeps_nul_and_bad_escapes() {
        assert_eq!(percent_decode("null-%00-null"), "null-\0-null");
        assert_eq!(percent_decode("%Z%45"), "%ZE");
        assert_eq!(percent_decode("abc%"), "abc%");
        assert_eq!(percent_decode("%75se%72"), "user");
    }
}
