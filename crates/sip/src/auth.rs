//! Digest authentication for the registrar and UAS (RFC 3261 22, RFC 7616, RFC 2617):
//! challenges, credential verification with MD5 and SHA-256, qop=auth, expiring nonces
//! (stale=true), nonce-count replay protection and blocking of sources that keep
//! failing.
//!
//! Nonces carry their issue time and a serial number, authenticated with HMAC under the
//! caller's seed, so they cannot be forged or predicted. The highest nonce-count seen
//! for each nonce lives in a fixed ring indexed by serial (as Kamailio's nc array does):
//! constant time per request and bounded memory whatever the rate. A nonce whose slot
//! has been reused by a newer one is answered `stale=true`, and the client simply
//! retries with the fresh nonce. Sources with recent failures are kept in a map purged
//! by time.
//! This module never says whether a user exists: an unknown user is verified against a
//! dummy password and fails exactly like a wrong password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::rng::TokenSource;
use crate::syntax::{is_lws, quote, split_top_level, unquote};

/// Digest algorithms (RFC 7616 3.2). The `-sess` variants are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DigestAlgorithm {
    Md5,
    Sha256,
}

impl DigestAlgorithm {
    pub fn token(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("MD5") {
            Some(Self::Md5)
        } else if s.eq_ignore_ascii_case("SHA-256") {
            Some(Self::Sha256)
        } else {
            None
        }
    }

    fn hash_hex(self, data: &str) -> String {
        match self {
            Self::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Self::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// Why an Authorization header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialsError {
    #[error("authorization scheme is not Digest")]
    NotDigest,
    #[error("malformed Digest parameter list")]
    Malformed,
    #[error("missing Digest parameter {0}")]
    MissingParam(&'static str),
}

/// The parameters of a Digest Authorization header (RFC 7616 3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
}

impl DigestCredentials {
    pub fn parse(value: &str) -> Result<Self, CredentialsError> {
        let value = value.trim_matches(is_lws);
        let (scheme, rest) = value.split_once(is_lws).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::NotDigest);
        }
        let mut params: HashMap<String, String> = HashMap::new();
        for part in split_top_level(rest, ',').map_err(|_| CredentialsError::Malformed)? {
            let part = part.trim_matches(is_lws);
            if part.is_empty() {
                continue;
            }
            let (name, value) = part.split_once('=').ok_or(CredentialsError::Malformed)?;
            params.insert(
                name.trim_matches(is_lws).to_ascii_lowercase(),
                unquote(value.trim_matches(is_lws)),
            );
        }
        let mut take = |name: &'static str| params.remove(name);
        Ok(Self {
            username: take("username").ok_or(CredentialsError::MissingParam("username"))?,
            realm: take("realm").ok_or(CredentialsError::MissingParam("realm"))?,
            nonce: take("nonce").ok_or(CredentialsError::MissingParam("nonce"))?,
            uri: take("uri").ok_or(CredentialsError::MissingParam("uri"))?,
            response: take("response").ok_or(CredentialsError::MissingParam("response"))?,
            algorithm: take("algorithm"),
            cnonce: take("cnonce"),
            qop: take("qop"),
            nc: take("nc"),
        })
    }
}

/// Computes a qop=auth digest response (RFC 7616 3.4.1).
#[allow(clippy::too_many_arguments)] // reason: mirrors the RFC's inputs one for one
pub fn digest_response(
    algorithm: DigestAlgorithm,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    qop: &str,
) -> String {
    let ha1 = algorithm.hash_hex(&format!("{username}:{realm}:{password}"));
    let ha2 = algorithm.hash_hex(&format!("{method}:{uri}"));
    algorithm.hash_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
}

/// Tunables for authentication and source blocking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthPolicy {
    /// Algorithms offered, one WWW-Authenticate header each, preferred first.
    pub algorithms: Vec<DigestAlgorithm>,
    /// How long a nonce may be used before the answer is `stale=true`.
    pub nonce_ttl: Duration,
    /// Failed credential checks from one IP within `failure_window` that get it blocked.
    pub block_threshold: u32,
    pub failure_window: Duration,
    pub block_duration: Duration,
    /// What a blocked source gets.
    pub block_action: BlockAction,
}

impl Default for AuthPolicy {
    fn default() -> Self {
        Self {
            algorithms: vec![DigestAlgorithm::Md5],
            nonce_ttl: Duration::from_secs(300),
            block_threshold: 10,
            failure_window: Duration::from_secs(60),
            block_duration: Duration::from_secs(600),
            block_action: BlockAction::Forbidden,
        }
    }
}

/// The answer to a request from a blocked source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockAction {
    /// Answer 403 Forbidden.
    Forbidden,
    /// Send nothing.
    Drop,
}

/// Outcome of checking credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The request is from this user.
    Authenticated(String),
    /// Correct digest over a nonce that expired or that we did not issue: re-challenge
    /// with stale=true (RFC 7616 3.3).
    Stale,
    /// A nonce-count at or below one already seen for this nonce (RFC 7616 3.4).
    Replay,
    /// Unknown user, wrong password, wrong realm or malformed: all look the same.
    Failed,
}

#[derive(Debug, Clone)]
struct FailureRecord {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

/// Bound on tracked failing sources, so that a flood cannot grow memory.
const MAX_TRACKED: usize = 100_000;

/// Nonces whose nonce-count is tracked: the last this many issued. At 6000 challenges/s
/// that is about three minutes of nonces, in 4 MiB.
const NONCE_SLOTS: u64 = 1 << 20;

/// Issues challenges and verifies credentials.
#[derive(Debug)]
pub struct Authenticator {
    policy: AuthPolicy,
    epoch: Instant,
    /// Serial number of the newest nonce issued (serials start at 1).
    last_serial: u64,
    /// Highest nonce-count seen per nonce, at `(serial - 1) % nonce_slots`; 0 when unused.
    /// Grows up to `nonce_slots` entries, then is reused as a ring.
    nonce_counts: Vec<u32>,
    nonce_slots: u64,
    failures: HashMap<IpAddr, FailureRecord>,
}

impl Authenticator {
    pub fn new(policy: AuthPolicy, epoch: Instant) -> Self {
        Self {
            policy,
            epoch,
            last_serial: 0,
            nonce_counts: Vec::new(),
            nonce_slots: NONCE_SLOTS,
            failures: HashMap::new(),
        }
    }

    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }

    /// A fresh nonce: issue second, serial number and a truncated HMAC over both.
    pub fn new_nonce(&mut self, now: Instant, tokens: &TokenSource) -> String {
        let secs = now.saturating_duration_since(self.epoch).as_secs() as u32;
        self.last_serial += 1;
        let serial = self.last_serial;
        let slot = ((serial - 1) % self.nonce_slots) as usize;
        if slot < self.nonce_counts.len() {
            self.nonce_counts[slot] = 0;
        } else {
            self.nonce_counts.push(0);
        }
        let mac = tokens.mac(&[b"nonce", &secs.to_be_bytes(), &serial.to_be_bytes()]);
        format!("{secs:08x}{serial:016x}{}", hex::encode(&mac[..16]))
    }

    /// The issue time and serial of a nonce we minted, or `None` for a forged or
    /// foreign one.
    fn nonce_issued(&self, nonce: &str, tokens: &TokenSource) -> Option<(Instant, u64)> {
        if nonce.len() != 56 || !nonce.is_ascii() {
            return None;
        }
        let secs = u32::from_str_radix(&nonce[..8], 16).ok()?;
        let serial = u64::from_str_radix(&nonce[8..24], 16).ok()?;
        let mac = tokens.mac(&[b"nonce", &secs.to_be_bytes(), &serial.to_be_bytes()]);
        if !constant_time_eq(hex::encode(&mac[..16]).as_bytes(), &nonce.as_bytes()[24..]) {
            return None;
        }
        Some((self.epoch + Duration::from_secs(u64::from(secs)), serial))
    }

    /// The nonce-count slot of a nonce, while it is still tracked.
    fn nonce_count_slot(&mut self, serial: u64) -> Option<&mut u32> {
        if serial == 0 || serial > self.last_serial || self.last_serial - serial >= self.nonce_slots
        {
            return None;
        }
        self.nonce_counts
            .get_mut(((serial - 1) % self.nonce_slots) as usize)
    }

    /// WWW-Authenticate header values, one per configured algorithm.
    pub fn challenge(
        &mut self,
        now: Instant,
        realm: &str,
        stale: bool,
        tokens: &TokenSource,
    ) -> Vec<String> {
        let nonce = self.new_nonce(now, tokens);
        self.policy
            .algorithms
            .iter()
            .map(|alg| {
                let mut v = format!(
                    "Digest realm={}, nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    quote(realm),
                    alg.token()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }

    /// Verifies credentials for `method`. `password` is the configured password of
    /// `creds.username`, `None` when no such user exists; `realm` is the realm that
    /// user's challenge carried.
    pub fn verify(
        &mut self,
        now: Instant,
        method: &str,
        creds: &DigestCredentials,
        realm: &str,
        password: Option<&str>,
        tokens: &TokenSource,
    ) -> Verdict {
        let algorithm = match creds.algorithm.as_deref() {
            None => Some(DigestAlgorithm::Md5),
            Some(a) => DigestAlgorithm::parse(a),
        };
        let Some(algorithm) = algorithm.filter(|a| self.policy.algorithms.contains(a)) else {
            return Verdict::Failed;
        };
        let (Some(qop), Some(nc), Some(cnonce)) = (&creds.qop, &creds.nc, &creds.cnonce) else {
            return Verdict::Failed;
        };
        let nc_value = match u32::from_str_radix(nc, 16) {
            Ok(v) if nc.len() == 8 => v,
            _ => return Verdict::Failed,
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return Verdict::Failed;
        }
        // Unknown users are checked against a dummy secret so that the work done and
        // the answer given do not depend on whether the user exists.
        let known = password.is_some();
        let expected = digest_response(
            algorithm,
            &creds.username,
            &creds.realm,
            password.unwrap_or("\u{0}no-such-user\u{0}"),
            method,
            &creds.uri,
            &creds.nonce,
            nc,
            cnonce,
            qop,
        );
        let matches = constant_time_eq(
            expected.as_bytes(),
            creds.response.to_ascii_lowercase().as_bytes(),
        );
        if !(known && matches && creds.realm == realm) {
            return Verdict::Failed;
        }
        let Some((issued, serial)) = self.nonce_issued(&creds.nonce, tokens) else {
            return Verdict::Stale;
        };
        if now >= issued + self.policy.nonce_ttl {
            return Verdict::Stale;
        }
        // A nonce too old to have its count tracked any more: make the client take a
        // new one rather than accept a count we cannot check.
        let Some(last_nc) = self.nonce_count_slot(serial) else {
            return Verdict::Stale;
        };
        if nc_value <= *last_nc {
            return Verdict::Replay;
        }
        *last_nc = nc_value;
        Verdict::Authenticated(creds.username.clone())
    }

    /// Counts a failed credential check; returns true when the source is now blocked.
    pub fn record_failure(&mut self, now: Instant, ip: IpAddr) -> bool {
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(&ip) {
            self.purge(now);
            if self.failures.len() >= MAX_TRACKED {
                return false;
            }
        }
        let policy = &self.policy;
        let rec = self.failures.entry(ip).or_insert(FailureRecord {
            window_start: now,
            count: 0,
            blocked_until: None,
        });
        if now.saturating_duration_since(rec.window_start) > policy.failure_window {
            rec.window_start = now;
            rec.count = 0;
        }
        rec.count += 1;
        if rec.count >= policy.block_threshold {
            rec.blocked_until = Some(now + policy.block_duration);
            return true;
        }
        false
    }

    pub fn is_blocked(&self, now: Instant, ip: IpAddr) -> bool {
        self.failures
            .get(&ip)
            .and_then(|r| r.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Drops expired failure records.
    pub fn purge(&mut self, now: Instant) {
        let window = self.policy.failure_window;
        self.failures.retain(|_, r| {
            r.blocked_until.is_some_and(|u| u > now)
                || now.saturating_duration_since(r.window_start) <= window
        });
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One real instant as the origin of virtual time.
    #[allow(clippy::disallowed_methods)] // reason: tests need an Instant to offset from
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn rfc_7616_test_vectors() {
        // RFC 7616 3.9.1 (the same inputs as the RFC 2617 3.5 example).
        let args = (
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            "auth",
        );
        let md5 = digest_response(
            DigestAlgorithm::Md5,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
            args.6,
            args.7,
            args.8,
        );
        assert_eq!(md5, "8ca523f5e9506fed4657c9700eebdbec");
        let sha = digest_response(
            DigestAlgorithm::Sha256,
            args.0,
            args.1,
            args.2,
            args.3,
            args.4,
            args.5,
            args.6,
            args.7,
            args.8,
        );
        assert_eq!(
            sha,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn parses_linphone_authorization_with_double_space() {
        let c = DigestCredentials::parse(
            r#" Digest realm="test.local", nonce="a37a", algorithm=MD5, username="alice",  uri="sip:127.0.0.1", response="ad1a", cnonce="Oge1", nc=00000001, qop=auth"#,
        )
        .unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.nc.as_deref(), Some("00000001"));
        assert_eq!(
            DigestCredentials::parse("Basic abc"),
            Err(CredentialsError::NotDigest)
        );
    }

    #[test]
    fn forged_nonce_is_not_ours() {
        let t = TokenSource::new([7; 32]);
        let t0 = origin();
        let mut auth = Authenticator::new(AuthPolicy::default(), t0);
        let nonce = auth.new_nonce(t0, &t);
        assert!(auth.nonce_issued(&nonce, &t).is_some());
        let mut forged = nonce.clone();
        forged.replace_range(55.., if nonce.ends_with('0') { "1" } else { "0" });
        assert!(auth.nonce_issued(&forged, &t).is_none());
        assert!(auth.nonce_issued("short", &t).is_none());
    }

    fn credentials(
        auth: &mut Authenticator,
        t0: Instant,
        tokens: &TokenSource,
        nonce: &str,
        nc: &str,
    ) -> Verdict {
        let response = digest_response(
            DigestAlgorithm::Md5,
            "alice",
            "example.com",
            "secret",
            "REGISTER",
            "sip:example.com",
            nonce,
            nc,
            "c0ffee",
            "auth",
        );
        let creds = DigestCredentials {
            username: "alice".into(),
            realm: "example.com".into(),
            nonce: nonce.into(),
            uri: "sip:example.com".into(),
            response,
            algorithm: Some("MD5".into()),
            cnonce: Some("c0ffee".into()),
            qop: Some("auth".into()),
            nc: Some(nc.into()),
        };
        auth.verify(
            t0,
            "REGISTER",
            &creds,
            "example.com",
            Some("secret"),
            tokens,
        )
    }

    #[test]
    fn nonce_count_must_increase_per_nonce() {
        let t = TokenSource::new([7; 32]);
        let t0 = origin();
        let mut auth = Authenticator::new(AuthPolicy::default(), t0);
        let first = auth.new_nonce(t0, &t);
        let second = auth.new_nonce(t0, &t);
        let ok = Verdict::Authenticated("alice".into());
        assert_eq!(credentials(&mut auth, t0, &t, &first, "00000001"), ok);
        assert_eq!(
            credentials(&mut auth, t0, &t, &first, "00000001"),
            Verdict::Replay
        );
        assert_eq!(credentials(&mut auth, t0, &t, &first, "00000003"), ok);
        assert_eq!(
            credentials(&mut auth, t0, &t, &first, "00000002"),
            Verdict::Replay
        );
        // Counts are per nonce: the second starts afresh.
        assert_eq!(credentials(&mut auth, t0, &t, &second, "00000001"), ok);
    }

    #[test]
    fn nonce_whose_slot_was_reused_is_stale_not_replayable() {
        let t = TokenSource::new([7; 32]);
        let t0 = origin();
        let mut auth = Authenticator::new(AuthPolicy::default(), t0);
        auth.nonce_slots = 4;
        let old = auth.new_nonce(t0, &t);
        let ok = Verdict::Authenticated("alice".into());
        assert_eq!(credentials(&mut auth, t0, &t, &old, "00000001"), ok);
        let newer: Vec<String> = (0..4).map(|_| auth.new_nonce(t0, &t)).collect();
        // The old nonce's slot now belongs to a newer nonce: its count is unknown.
        assert_eq!(
            credentials(&mut auth, t0, &t, &old, "00000002"),
            Verdict::Stale
        );
        // The newer nonce in that slot starts from zero, not from the old count.
        assert_eq!(credentials(&mut auth, t0, &t, &newer[3], "00000001"), ok);
        assert_eq!(credentials(&mut auth, t0, &t, &newer[0], "00000001"), ok);
    }
}
