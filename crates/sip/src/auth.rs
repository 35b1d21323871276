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
//! retries with the fresh nonce.
//!
//! Each nonce is also bound to the source it was sent to (the IPv4 address, or the /64
//! of an IPv6 one) under the same HMAC. A failed check counts against a source only
//! when it carries a nonce we issued to that source: a spoofed datagram never sees
//! the challenge, so it cannot get the address it forges blocked. Failures are kept
//! per (source, user), so one phone with a wrong password does not lock out the rest
//! of an office behind the same NAT, with a ceiling per source that stops a scanner
//! guessing across many users. The table of failures is bounded; when full it forgets
//! counting records, never a block in force.
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
    /// Failed credential checks for one user from one source within `failure_window`
    /// that get that (source, user) pair blocked.
    pub block_threshold: u32,
    /// Failed checks from one source, over all users, within `failure_window` that get
    /// the whole source blocked (a scanner guessing across users).
    pub source_block_threshold: u32,
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
            source_block_threshold: 50,
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
    /// Unknown user, wrong password, wrong realm or malformed, over a nonce we issued
    /// to this source: all look the same, and this one counts toward blocking.
    Failed,
    /// Wrong credentials over a nonce we did not issue to this source (forged, from
    /// before a restart, or sent from a spoofed address): re-challenge, count nothing.
    Unverified,
}

#[derive(Debug, Clone)]
struct FailureRecord {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

impl FailureRecord {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            count: 0,
            blocked_until: None,
        }
    }

    /// Counts one failure; true when it reaches `threshold` (and blocks).
    fn count(&mut self, now: Instant, threshold: u32, policy: &AuthPolicy) -> bool {
        if now.saturating_duration_since(self.window_start) > policy.failure_window {
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        if self.count >= threshold {
            self.blocked_until = Some(now + policy.block_duration);
            return true;
        }
        false
    }

    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| now < until)
    }

    fn expired(&self, now: Instant, window: Duration) -> bool {
        !self.blocked(now) && now.saturating_duration_since(self.window_start) > window
    }
}

/// Where a request comes from, as blocking sees it: an IPv4 address, or the /64 of an
/// IPv6 one (one subscriber's prefix; per-address keys would let a host rotate
/// through 2^64 addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey([u8; 8]);

impl SourceKey {
    pub fn of(ip: IpAddr) -> Self {
        let mut key = [0u8; 8];
        match ip {
            IpAddr::V4(v4) => key[4..].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => key[4..].copy_from_slice(&v4.octets()),
                // A zero top half cannot be a routable /64, so V4 and V6 keys differ.
                None => key.copy_from_slice(&v6.octets()[..8]),
            },
        }
        Self(key)
    }
}

/// Bound on tracked (source, user) failure records, so that a flood cannot grow memory.
const MAX_TRACKED: usize = 100_000;
/// Usernames are keyed by at most this many bytes (a scanner may send megabytes).
const MAX_KEYED_USER: usize = 64;

fn user_key(user: &str) -> Box<str> {
    let mut end = user.len().min(MAX_KEYED_USER);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].into()
}

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
    /// Failures per (source, user).
    failures: HashMap<(SourceKey, Box<str>), FailureRecord>,
    /// Failures per source over all users, for the per-source ceiling.
    source_failures: HashMap<SourceKey, FailureRecord>,
    max_tracked: usize,
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
            source_failures: HashMap::new(),
            max_tracked: MAX_TRACKED,
        }
    }

    pub fn policy(&self) -> &AuthPolicy {
        &self.policy
    }

    /// A fresh nonce for `source`: issue second, serial number and a truncated HMAC over
    /// both and the source.
    pub fn new_nonce(&mut self, now: Instant, source: IpAddr, tokens: &TokenSource) -> String {
        let secs = now.saturating_duration_since(self.epoch).as_secs() as u32;
        self.last_serial += 1;
        let serial = self.last_serial;
        let slot = ((serial - 1) % self.nonce_slots) as usize;
        if slot < self.nonce_counts.len() {
            self.nonce_counts[slot] = 0;
        } else {
            self.nonce_counts.push(0);
        }
        let mac = nonce_mac(tokens, secs, serial, source);
        format!("{secs:08x}{serial:016x}{}", hex::encode(&mac[..16]))
    }

    /// The issue time and serial of a nonce we minted for `source`, or `None` for a
    /// forged or foreign one, or one issued to another source.
    fn nonce_issued(
        &self,
        nonce: &str,
        source: IpAddr,
        tokens: &TokenSource,
    ) -> Option<(Instant, u64)> {
        if nonce.len() != 56 || !nonce.is_ascii() {
            return None;
        }
        let secs = u32::from_str_radix(&nonce[..8], 16).ok()?;
        let serial = u64::from_str_radix(&nonce[8..24], 16).ok()?;
        let mac = nonce_mac(tokens, secs, serial, source);
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

    /// WWW-Authenticate header values for a challenge sent to `source`, one per
    /// configured algorithm.
    pub fn challenge(
        &mut self,
        now: Instant,
        realm: &str,
        stale: bool,
        source: IpAddr,
        tokens: &TokenSource,
    ) -> Vec<String> {
        let nonce = self.new_nonce(now, source, tokens);
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

    /// Verifies credentials for `method` from `source`. `password` is the configured
    /// password of `creds.username`, `None` when no such user exists; `realm` is the
    /// realm that user's challenge carried.
    #[allow(clippy::too_many_arguments)] // reason: the request's parts, one for one
    pub fn verify(
        &mut self,
        now: Instant,
        method: &str,
        creds: &DigestCredentials,
        realm: &str,
        password: Option<&str>,
        source: IpAddr,
        tokens: &TokenSource,
    ) -> Verdict {
        // Whether this source was sent this nonce decides whether a failure may count.
        let issued = self.nonce_issued(&creds.nonce, source, tokens);
        let failed = if issued.is_some() {
            Verdict::Failed
        } else {
            Verdict::Unverified
        };
        let algorithm = match creds.algorithm.as_deref() {
            None => Some(DigestAlgorithm::Md5),
            Some(a) => DigestAlgorithm::parse(a),
        };
        let Some(algorithm) = algorithm.filter(|a| self.policy.algorithms.contains(a)) else {
            return failed;
        };
        let (Some(qop), Some(nc), Some(cnonce)) = (&creds.qop, &creds.nc, &creds.cnonce) else {
            return failed;
        };
        let nc_value = match u32::from_str_radix(nc, 16) {
            Ok(v) if nc.len() == 8 => v,
            _ => return failed,
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return failed;
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
            return failed;
        }
        let Some((issued, serial)) = issued else {
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

    /// Counts a failed credential check of `user` from `source` (only ever for a
    /// [`Verdict::Failed`]); returns true when the pair, or the whole source, is now
    /// blocked.
    pub fn record_failure(&mut self, now: Instant, source: IpAddr, user: &str) -> bool {
        let source = SourceKey::of(source);
        let key = (source, user_key(user));
        if !self.failures.contains_key(&key) {
            self.make_room(now);
        }
        let policy = &self.policy;
        let pair = self
            .failures
            .entry(key)
            .or_insert_with(|| FailureRecord::new(now))
            .count(now, policy.block_threshold, policy);
        let whole = self
            .source_failures
            .entry(source)
            .or_insert_with(|| FailureRecord::new(now))
            .count(now, policy.source_block_threshold, policy);
        pair || whole
    }

    /// Keeps the failure tables within `max_tracked`: expired records go first, then
    /// records that only count, oldest first; blocks in force are kept, and only when
    /// nothing else is left does the block that ends soonest go.
    fn make_room(&mut self, now: Instant) {
        if self.failures.len() < self.max_tracked && self.source_failures.len() < self.max_tracked {
            return;
        }
        self.purge(now);
        for _ in 0..2 {
            if self.failures.len() >= self.max_tracked {
                evict_one(&mut self.failures, now);
            }
            if self.source_failures.len() >= self.max_tracked {
                evict_one(&mut self.source_failures, now);
            }
        }
    }

    /// Whether requests from `source` claiming `user` are refused now.
    pub fn is_blocked(&self, now: Instant, source: IpAddr, user: &str) -> bool {
        let source = SourceKey::of(source);
        self.source_failures
            .get(&source)
            .is_some_and(|r| r.blocked(now))
            || self
                .failures
                .get(&(source, user_key(user)))
                .is_some_and(|r| r.blocked(now))
    }

    /// (source, user) pairs and sources blocked now, for metrics.
    pub fn blocked_count(&self, now: Instant) -> usize {
        self.failures.values().filter(|r| r.blocked(now)).count()
            + self
                .source_failures
                .values()
                .filter(|r| r.blocked(now))
                .count()
    }

    /// Failure records held (both tables), for tests and metrics.
    pub fn tracked(&self) -> usize {
        self.failures.len() + self.source_failures.len()
    }

    /// Drops expired failure records.
    pub fn purge(&mut self, now: Instant) {
        let window = self.policy.failure_window;
        self.failures.retain(|_, r| !r.expired(now, window));
        self.source_failures.retain(|_, r| !r.expired(now, window));
    }
}

/// Removes one record: the oldest that only counts, else the block that ends soonest.
/// A linear scan, but only when the table is full (100,000 real, challenge-answering
/// sources), and it frees room for the next many inserts only one at a time; the
/// bound, not the speed, is what matters here.
fn evict_one<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, FailureRecord>, now: Instant) {
    let victim = map
        .iter()
        .filter(|(_, r)| !r.blocked(now))
        .min_by_key(|(_, r)| r.window_start)
        .or_else(|| map.iter().min_by_key(|(_, r)| r.blocked_until))
        .map(|(k, _)| k.clone());
    if let Some(k) = victim {
        map.remove(&k);
    }
}

fn nonce_mac(tokens: &TokenSource, secs: u32, serial: u64, source: IpAddr) -> [u8; 32] {
    tokens.mac(&[
        b"nonce",
        &secs.to_be_bytes(),
        &serial.to_be_bytes(),
        &SourceKey::of(source).0,
    ])
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

    const PHONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 4));
    const OTHER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));

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
        let nonce = auth.new_nonce(t0, PHONE, &t);
        assert!(auth.nonce_issued(&nonce, PHONE, &t).is_some());
        let mut forged = nonce.clone();
        forged.replace_range(55.., if nonce.ends_with('0') { "1" } else { "0" });
        assert!(auth.nonce_issued(&forged, PHONE, &t).is_none());
        assert!(auth.nonce_issued("short", PHONE, &t).is_none());
    }

    fn credentials(
        auth: &mut Authenticator,
        t0: Instant,
        tokens: &TokenSource,
        nonce: &str,
        nc: &str,
    ) -> Verdict {
        credentials_from(auth, t0, tokens, nonce, nc, "secret", PHONE)
    }

    fn credentials_from(
        auth: &mut Authenticator,
        t0: Instant,
        tokens: &TokenSource,
        nonce: &str,
        nc: &str,
        password: &str,
        source: IpAddr,
    ) -> Verdict {
        let response = digest_response(
            DigestAlgorithm::Md5,
            "alice",
            "example.com",
            password,
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
            source,
            tokens,
        )
    }

    #[test]
    fn nonce_count_must_increase_per_nonce() {
        let t = TokenSource::new([7; 32]);
        let t0 = origin();
        let mut auth = Authenticator::new(AuthPolicy::default(), t0);
        let first = auth.new_nonce(t0, PHONE, &t);
        let second = auth.new_nonce(t0, PHONE, &t);
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
        let old = auth.new_nonce(t0, PHONE, &t);
        let ok = Verdict::Authenticated("alice".into());
        assert_eq!(credentials(&mut auth, t0, &t, &old, "00000001"), ok);
        let newer: Vec<String> = (0..4).map(|_| auth.new_nonce(t0, PHONE, &t)).collect();
        // The old nonce's slot now belongs to a newer nonce: its count is unknown.
        assert_eq!(
            credentials(&mut auth, t0, &t, &old, "00000002"),
            Verdict::Stale
        );
        // The newer nonce in that slot starts from zero, not from the old count.
        assert_eq!(credentials(&mut auth, t0, &t, &newer[3], "00000001"), ok);
        assert_eq!(credentials(&mut auth, t0, &t, &newer[0], "00000001"), ok);
    }

    #[test]
    fn nonce_is_bound_to_the_source_it_was_sent_to() {
        let t = TokenSource::new([7; 32]);
        let t0 = origin();
        let mut auth = Authenticator::new(AuthPolicy::default(), t0);
        let nonce = auth.new_nonce(t0, PHONE, &t);
        assert!(auth.nonce_issued(&nonce, PHONE, &t).is_some());
        assert!(auth.nonce_issued(&nonce, OTHER, &t).is_none());
        // Right password over another source's nonce: a fresh challenge, not success.
        assert_eq!(
            credentials_from(&mut auth, t0, &t, &nonce, "00000001", "secret", OTHER),
            Verdict::Stale
        );
        // Wrong password over it: nothing that may count against OTHER.
        assert_eq!(
            credentials_from(&mut auth, t0, &t, &nonce, "00000001", "guess", OTHER),
            Verdict::Unverified
        );
        assert_eq!(
            credentials_from(&mut auth, t0, &t, &nonce, "00000001", "guess", PHONE),
            Verdict::Failed
        );
    }

    #[test]
    fn ipv6_sources_are_grouped_by_their_64() {
        let a: IpAddr = "2001:db8:1:2::10".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::10".parse().unwrap();
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of(c));
        let mapped: IpAddr = "::ffff:198.51.100.4".parse().unwrap();
        assert_eq!(SourceKey::of(mapped), SourceKey::of(PHONE));
        let t0 = origin();
        let policy = AuthPolicy {
            block_threshold: 2,
            ..AuthPolicy::default()
        };
        let mut auth = Authenticator::new(policy, t0);
        auth.record_failure(t0, a, "alice");
        assert!(auth.record_failure(t0, b, "alice"));
        assert!(auth.is_blocked(t0, "2001:db8:1:2::99".parse().unwrap(), "alice"));
        assert!(!auth.is_blocked(t0, c, "alice"));
    }

    #[test]
    fn blocking_is_per_user_with_a_ceiling_per_source() {
        let t0 = origin();
        let policy = AuthPolicy {
            block_threshold: 3,
            source_block_threshold: 10,
            ..AuthPolicy::default()
        };
        let mut auth = Authenticator::new(policy, t0);
        for _ in 0..3 {
            auth.record_failure(t0, PHONE, "1001");
        }
        assert!(auth.is_blocked(t0, PHONE, "1001"));
        // Another user behind the same address is still served.
        assert!(!auth.is_blocked(t0, PHONE, "1002"));
        // A scanner guessing across users trips the ceiling for the whole source.
        for user in 0..7 {
            auth.record_failure(t0, PHONE, &format!("u{user}"));
        }
        assert!(auth.is_blocked(t0, PHONE, "1002"));
        assert!(!auth.is_blocked(t0, OTHER, "1002"));
        // Blocks lift after block_duration.
        let later = t0 + AuthPolicy::default().block_duration + Duration::from_secs(1);
        assert!(!auth.is_blocked(later, PHONE, "1001"));
    }

    #[test]
    fn full_failure_table_stays_bounded_and_keeps_its_blocks() {
        let t0 = origin();
        let policy = AuthPolicy {
            block_threshold: 2,
            source_block_threshold: 1000,
            ..AuthPolicy::default()
        };
        let mut auth = Authenticator::new(policy, t0);
        auth.max_tracked = 50;
        auth.record_failure(t0, PHONE, "1001");
        auth.record_failure(t0, PHONE, "1001");
        assert!(auth.is_blocked(t0, PHONE, "1001"));
        for i in 0..5000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            auth.record_failure(t0, ip, "1001");
        }
        assert!(auth.tracked() <= 2 * 50, "{} records", auth.tracked());
        assert!(
            auth.is_blocked(t0, PHONE, "1001"),
            "the block survived the flood"
        );
        // Counting still works for new sources (blocking was never switched off).
        let late = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        auth.record_failure(t0, late, "1001");
        assert!(auth.record_failure(t0, late, "1001"));
        assert!(auth.is_blocked(t0, late, "1001"));
    }
}
