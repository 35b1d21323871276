//! SIP addresses: URIs (RFC 3261 19.1, IPv6 references per RFC 5118), `name-addr` /
//! `addr-spec` header values (From, To, Contact, Route) and Via values (RFC 3261 20.42).
//!
//! Values are parsed leniently where RFC 4475 says a robust element must accept
//! (LWS around separators, unknown schemes, `;` in the user part) and strictly where it
//! says to reject (unterminated quotes, spaces inside `<...>`, unenclosed URIs with `?`).
//! Printing reproduces the parsed form; escapes are kept as received.

use std::fmt;
use std::net::IpAddr;

use crate::syntax::{
    find_param, is_lws, is_token, is_token_char, parse_params, split_top_level, take_quoted,
    unquote, Param, SyntaxError,
};

/// A host as written in a URI or Via: a name, an IPv4 address or a bracketed IPv6
/// reference (`[2001:db8::10]`, RFC 5118 4.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host(String);

impl Host {
    fn parse(s: &str) -> Result<Self, SyntaxError> {
        if s.is_empty() {
            return Err(SyntaxError::BadHost);
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            // RFC 5118 4.10: tolerate the three-colon form the RFC 3261 ABNF admits, so
            // check characters rather than insisting on RFC 4291 syntax.
            if inner.is_empty()
                || !inner
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(SyntaxError::BadHost);
            }
            return Ok(Self(s.to_string()));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(SyntaxError::BadHost);
        }
        Ok(Self(s.to_string()))
    }

    /// A host from an IP address, bracketing IPv6.
    pub fn from_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(v4.to_string()),
            IpAddr::V6(v6) => Self(format!("[{v6}]")),
        }
    }

    /// A host from a configured name or address literal.
    pub fn from_name(name: &str) -> Self {
        match name.parse::<IpAddr>() {
            Ok(ip) => Self::from_ip(ip),
            Err(_) => Self(name.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address if the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        let s = self.0.trim_start_matches('[').trim_end_matches(']');
        s.parse().ok()
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A `sip:` or `sips:` URI (RFC 3261 19.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    /// The user part as received, escapes intact (RFC 4475 3.1.1.9: may contain `;`).
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
    /// Everything after `?`, as received.
    pub headers: Option<String>,
}

impl SipUri {
    /// The user part with `%HH` escapes decoded (RFC 3261 19.1.4 comparison form).
    pub fn user_decoded(&self) -> Option<String> {
        self.user.as_deref().map(crate::syntax::percent_decode)
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `transport` URI parameter, lower-cased.
    pub fn transport_param(&self) -> Option<String> {
        self.param("transport")
            .and_then(|p| p.value.as_deref())
            .map(|v| v.to_ascii_lowercase())
    }

    fn parse_rest(secure: bool, rest: &str) -> Result<Self, SyntaxError> {
        if rest.is_empty() {
            return Err(SyntaxError::BadHost);
        }
        // '@' cannot appear unescaped in params or headers, so the first one ends the
        // userinfo, which itself may contain ';', '?' and ',' (RFC 4475 3.1.1.2).
        let (userinfo, hostpart) = match rest.find('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p.to_string())),
                    None => (ui, None),
                };
                if u.is_empty() {
                    return Err(SyntaxError::EmptyUser);
                }
                (Some(u.to_string()), p)
            }
            None => (None, None),
        };
        let (hostport_params, headers) = match hostpart.split_once('?') {
            Some((hp, h)) => (hp, Some(h.to_string())),
            None => (hostpart, None),
        };
        let (hostport, params) = match hostport_params.split_once(';') {
            Some((hp, p)) => (hp, Some(p)),
            None => (hostport_params, None),
        };
        let (host, port) = split_host_port(hostport)?;
        let params = match params {
            Some(p) => p
                .split(';')
                .filter(|s| !s.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((n, v)) => Param::new(n, Some(v)),
                    None => Param::new(p, None::<String>),
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(Self {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }
}

/// Splits `host[:port]`, where host may be a bracketed IPv6 reference.
pub(crate) fn split_host_port(s: &str) -> Result<(Host, Option<u16>), SyntaxError> {
    let (host, port) = if s.starts_with('[') {
        let close = s.find(']').ok_or(SyntaxError::BadHost)?;
        let (h, rest) = s.split_at(close + 1);
        match rest {
            "" => (h, None),
            r => (h, Some(r.strip_prefix(':').ok_or(SyntaxError::BadPort)?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(SyntaxError::BadPort);
            }
            Some(p.parse::<u16>().map_err(|_| SyntaxError::BadPort)?)
        }
        None => None,
    };
    Ok((Host::parse(host)?, port))
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for p in &self.params {
            write!(f, "{p}")?;
        }
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// Any URI: SIP/SIPS parsed, other schemes kept opaque so that the UAS can answer 416
/// (RFC 3261 8.2.2.1, RFC 4475 3.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    Other { scheme: String, rest: String },
}

impl Uri {
    pub fn parse(s: &str) -> Result<Self, SyntaxError> {
        if s.is_empty() {
            return Err(SyntaxError::Empty);
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(if is_lws(c) {
                SyntaxError::WhitespaceInUri
            } else {
                SyntaxError::UnexpectedChar(c)
            });
        }
        if let Some(c) = s.chars().find(|c| matches!(c, '<' | '>' | '"')) {
            return Err(SyntaxError::UnexpectedChar(c));
        }
        let (scheme, rest) = s.split_once(':').ok_or(SyntaxError::MissingScheme)?;
        let mut chars = scheme.chars();
        let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(SyntaxError::MissingScheme);
        }
        if scheme.eq_ignore_ascii_case("sip") {
            Ok(Self::Sip(SipUri::parse_rest(false, rest)?))
        } else if scheme.eq_ignore_ascii_case("sips") {
            Ok(Self::Sip(SipUri::parse_rest(true, rest)?))
        } else {
            Ok(Self::Other {
                scheme: scheme.to_string(),
                rest: rest.to_string(),
            })
        }
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Self::Sip(u) => Some(u),
            Self::Other { .. } => None,
        }
    }

    pub fn scheme(&self) -> &str {
        match self {
            Self::Sip(u) if u.secure => "sips",
            Self::Sip(_) => "sip",
            Self::Other { scheme, .. } => scheme,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sip(u) => write!(f, "{u}"),
            Self::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

/// A `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route,
/// Record-Route (RFC 3261 20.10, 20.20, 20.39).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as written (quoted or a token list), if any.
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Vec<Param>,
}

impl NameAddr {
    pub fn new(uri: Uri) -> Self {
        Self {
            display: None,
            uri,
            params: Vec::new(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, SyntaxError> {
        let s = s.trim_matches(is_lws);
        if s.is_empty() {
            return Err(SyntaxError::Empty);
        }
        let (display, uri_text, after) = if s.starts_with('"') {
            let (quoted, rest) = take_quoted(s)?;
            let rest = rest.trim_start_matches(is_lws);
            let inner = rest.strip_prefix('<').ok_or(SyntaxError::UnbalancedAngle)?;
            let close = inner.find('>').ok_or(SyntaxError::UnbalancedAngle)?;
            (
                Some(quoted.to_string()),
                &inner[..close],
                &inner[close + 1..],
            )
        } else if let Some(lt) = s.find('<') {
            let display = s[..lt].trim_matches(is_lws);
            // RFC 3261 25.1: display-name = *(token LWS) / quoted-string. RFC 4475
            // 3.1.1.6 requires accepting no LWS before '<'.
            if !display.split(is_lws).all(|t| t.is_empty() || is_token(t)) {
                return Err(SyntaxError::BadDisplayName);
            }
            let inner = &s[lt + 1..];
            let close = inner.find('>').ok_or(SyntaxError::UnbalancedAngle)?;
            let display = (!display.is_empty()).then(|| display.to_string());
            (display, &inner[..close], &inner[close + 1..])
        } else {
            // addr-spec: parameters after the URI belong to the header (RFC 3261 20).
            let (uri, rest) = match s.find(';') {
                Some(i) => (&s[..i], &s[i..]),
                None => (s, ""),
            };
            let uri = uri.trim_end_matches(is_lws);
            if uri.contains(['?', ',']) {
                return Err(SyntaxError::UnenclosedUri);
            }
            (None, uri, rest)
        };
        if uri_text.starts_with(is_lws) || uri_text.ends_with(is_lws) {
            return Err(SyntaxError::WhitespaceInUri);
        }
        let uri = Uri::parse(uri_text)?;
        let after = after.trim_matches(is_lws);
        let params = if after.is_empty() {
            Vec::new()
        } else {
            let p = after.strip_prefix(';').ok_or(SyntaxError::TrailingText)?;
            parse_params(p)?
        };
        Ok(Self {
            display,
            uri,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `tag` parameter (RFC 3261 19.3).
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").and_then(|p| p.value.as_deref())
    }

    pub fn display_name(&self) -> Option<String> {
        self.display.as_deref().map(unquote)
    }

    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        self.params.retain(|p| !p.name.eq_ignore_ascii_case(name));
        self.params.push(Param {
            name: name.to_string(),
            value,
        });
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        write!(f, "<{}>", self.uri)?;
        for p in &self.params {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A Contact header value: `*` or a list of addresses (RFC 3261 20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactList {
    Star,
    Addresses(Vec<NameAddr>),
}

/// Parses a comma-separated list of name-addr values (Contact, Route, Record-Route).
pub(crate) fn parse_name_addr_list(s: &str) -> Result<Vec<NameAddr>, SyntaxError> {
    split_top_level(s, ',')?
        .into_iter()
        .map(NameAddr::parse)
        .collect()
}

/// One Via value (RFC 3261 20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Upper-cased transport token (`UDP`, `TCP`, `TLS`, `SCTP` or an extension).
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

/// RFC 3261 8.1.1.7 magic cookie.
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    pub fn parse(s: &str) -> Result<Self, SyntaxError> {
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport, with LWS
        // allowed around the slashes (RFC 3261 25.1 SLASH, RFC 4475 3.1.1.1).
        let mut rest = s.trim_matches(is_lws);
        let mut fields = Vec::with_capacity(3);
        for i in 0..3 {
            let end = rest.find(|c: char| !is_token_char(c)).unwrap_or(rest.len());
            let (field, r) = rest.split_at(end);
            if field.is_empty() {
                return Err(SyntaxError::BadSentProtocol);
            }
            fields.push(field);
            rest = r.trim_start_matches(is_lws);
            if i < 2 {
                rest = rest
                    .strip_prefix('/')
                    .ok_or(SyntaxError::BadSentProtocol)?
                    .trim_start_matches(is_lws);
            }
        }
        if !fields[0].eq_ignore_ascii_case("SIP") || fields[1] != "2.0" {
            return Err(SyntaxError::BadSentProtocol);
        }
        let transport = fields[2].to_ascii_uppercase();
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let sent_by = sent_by.trim_matches(is_lws);
        // LWS is allowed around the ':' of sent-by only as part of HCOLON-like laxness;
        // remove it before splitting host and port.
        let compact: String = sent_by.chars().filter(|c| !is_lws(*c)).collect();
        if compact.len() != sent_by.len() && !sent_by.contains(':') {
            return Err(SyntaxError::TrailingText);
        }
        let (host, port) = split_host_port(&compact)?;
        let params = match params {
            Some(p) => parse_params(p)?,
            None => Vec::new(),
        };
        Ok(Self {
            transport,
            host,
            port,
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    /// `Some(None)` for a bare `rport` (RFC 3581), `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport")
            .map(|p| p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    /// `host[:port]` as written, used in transaction matching (RFC 3261 17.2.3).
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        if let Some(p) = self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            p.value = value;
        } else {
            self.params.push(Param {
                name: name.to_string(),
                value,
            });
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIP/2.0/{} {}", self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for p in &self.params {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_with_semicolon_user_and_ipv6() {
        let Uri::Sip(u) = Uri::parse("sip:user;par=u%40example.net@example.com").unwrap() else {
            panic!("expected a SIP URI");
        };
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(u.host.as_str(), "example.com");
        let Uri::Sip(u) = Uri::parse("sip:[2001:db8::10]:5070").unwrap() else {
            panic!("expected a SIP URI");
        };
        assert_eq!(u.port, Some(5070));
        assert!(u.host.ip().is_some());
        assert!(Uri::parse("sip:2001:db8::10").is_err());
        assert!(Uri::parse("<sip:a@b>").is_err());
    }

    #[test]
    fn unknown_scheme_is_opaque() {
        let u = Uri::parse("nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!(u.scheme(), "nobodyKnowsThisScheme");
        assert!(u.as_sip().is_none());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(n.tag(), Some("98asjd8"));
        assert_eq!(n.display_name().as_deref(), Some("J Rosenberg \\\""));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display.as_deref(), Some("caller"));
        assert!(NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>").is_err());
        assert!(NameAddr::parse("Bell, Alexander <sip:a@b>").is_err());
        assert!(NameAddr::parse("< sip:t.watson@example.org >").is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:x%3E").is_err());
        assert!(NameAddr::parse("\"Joe\" <sip:joe@example.org>;;;;").is_err());
    }

    #[test]
    fn via_with_lws_and_ipv6_received() {
        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v =
            Via::parse("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3")
                .unwrap();
        assert_eq!(v.port, None);
        let v = Via::parse("SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK9d;rport").unwrap();
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.sent_by(), "127.0.0.1:5062");
        assert!(Via::parse("SIP/2.0/UDP 192.0.2.15;;").is_err());
        assert!(Via::parse("").is_err());
    }
}
