//! The location service behind REGISTER (RFC 3261 10.3): bindings from an AOR to
//! contacts, their expiry, `+sip.instance`/`reg-id` aware replacement (RFC 5626 6,
//! RFC 5627), a cap per AOR and a serialisable snapshot for persistence.
//!
//! Authentication and AOR validation happen before this module is called (the endpoint
//! owns them); this module only applies one REGISTER's Contact list to the bindings.
//! Expiry is evaluated against the `now` passed in; nothing here reads a clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{CallId, Transport};
use crate::message::Request;
use crate::syntax::{parse_u32, SyntaxError};
use crate::uri::{ContactList, NameAddr, Uri};

/// Expiry bounds and binding cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrarLimits {
    /// Shorter non-zero requests get 423 with Min-Expires (RFC 3261 10.3 step 7).
    pub min_expires: u32,
    /// Longer requests are shortened to this.
    pub max_expires: u32,
    /// Used when neither the Contact `expires` param nor Expires is present.
    pub default_expires: u32,
    /// Most contacts kept per AOR; the least recently refreshed are evicted.
    pub max_bindings_per_aor: usize,
}

impl Default for RegistrarLimits {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_bindings_per_aor: 5,
        }
    }
}

/// Why a REGISTER was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegisterError {
    /// 423 Interval Too Brief with Min-Expires.
    #[error("requested expiry is shorter than {min_expires} seconds")]
    IntervalTooBrief { min_expires: u32 },
    /// 400: `Contact: *` with other contacts or a non-zero Expires (RFC 3261 10.3 step 6).
    #[error("Contact: * needs Expires: 0 and no other contact")]
    BadWildcard,
    /// 400: unparseable Contact or Expires.
    #[error("malformed Contact or Expires")]
    Malformed,
    /// 500: same Call-ID with a CSeq not above the stored one (RFC 3261 10.3 step 7).
    #[error("REGISTER is older than the binding it updates")]
    OutOfOrder,
}

impl RegisterError {
    pub fn status(&self) -> u16 {
        match self {
            Self::IntervalTooBrief { .. } => 423,
            Self::BadWildcard | Self::Malformed => 400,
            Self::OutOfOrder => 500,
        }
    }
}

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub aor: String,
    /// The Contact URI exactly as registered, URI parameters and escaped headers kept
    /// (RFC 4475 3.3.13, 3.3.14).
    pub contact: String,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub call_id: CallId,
    pub cseq: u32,
    /// Where the REGISTER really came from, for NATed clients (RFC 3581 spirit).
    pub source: SocketAddr,
    pub transport: Transport,
    pub expires_at: Instant,
    /// Order of the last refresh, for eviction.
    refreshed: u64,
}

impl Binding {
    pub fn expires_in(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }
}

/// A binding as persisted: absolute expiry in Unix seconds, supplied by the shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBinding {
    pub aor: String,
    pub contact: String,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    pub source: SocketAddr,
    pub transport: Transport,
    pub expires_at_unix: u64,
}

/// Everything needed to rebuild the registrar after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrarSnapshot {
    pub bindings: Vec<StoredBinding>,
}

/// AOR -> bindings.
#[derive(Debug, Default)]
pub struct Registrar {
    limits: RegistrarLimits,
    aors: HashMap<String, Vec<Binding>>,
    refresh_counter: u64,
}

/// Where a REGISTER came from.
#[derive(Debug, Clone, Copy)]
pub struct RegisterSource {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// Comparison key for contacts (RFC 3261 19.1.4, simplified: scheme, decoded user,
/// host case-insensitively, port and all URI parameters; a parameter present on one
/// side only makes the URIs differ, which is stricter than 19.1.4 but never merges two
/// phones, e.g. Zoiper's `rinstance`).
fn contact_key(uri: &Uri) -> String {
    match uri {
        Uri::Sip(u) => {
            let mut params: Vec<String> = u
                .params
                .iter()
                .map(|p| {
                    format!(
                        "{}={}",
                        p.name.to_ascii_lowercase(),
                        crate::syntax::percent_decode(p.value.as_deref().unwrap_or(""))
                            .to_ascii_lowercase()
                    )
                })
                .collect();
            params.sort();
            format!(
                "{}:{}@{}:{}:{}",
                if u.secure { "sips" } else { "sip" },
                u.user_decoded().unwrap_or_default(),
                u.host.as_str().to_ascii_lowercase(),
                u.port.map_or(String::new(), |p| p.to_string()),
                params.join(";")
            )
        }
        other => other.to_string(),
    }
}

fn instance_of(c: &NameAddr) -> Option<String> {
    c.param("+sip.instance").and_then(|p| p.unquoted_value())
}

fn reg_id_of(c: &NameAddr) -> Option<u32> {
    c.param("reg-id")
        .and_then(|p| p.value.as_deref())
        .and_then(|v| v.parse().ok())
}

impl Registrar {
    pub fn new(limits: RegistrarLimits) -> Self {
        Self {
            limits,
            aors: HashMap::new(),
            refresh_counter: 0,
        }
    }

    pub fn limits(&self) -> &RegistrarLimits {
        &self.limits
    }

    /// Parses a delta-seconds expiry; overlarge values are capped (RFC 4475 3.1.2.4).
    fn expiry_value(&self, s: &str) -> Result<u32, RegisterError> {
        match parse_u32(s) {
            Ok(v) => Ok(v),
            Err(SyntaxError::NumberOutOfRange) => Ok(self.limits.max_expires),
            Err(_) => Err(RegisterError::Malformed),
        }
    }

    /// Applies a REGISTER for `aor` (already authenticated and validated). Returns the
    /// AOR's bindings after the update: a query (no Contact) changes nothing.
    pub fn register(
        &mut self,
        now: Instant,
        aor: &str,
        req: &Request,
        source: RegisterSource,
    ) -> Result<Vec<Binding>, RegisterError> {
        self.purge_aor(now, aor);
        let header_expires = match req.headers.first("Expires") {
            Some(v) => Some(self.expiry_value(v)?),
            None => None,
        };
        let contacts = req.contacts().map_err(|_| RegisterError::Malformed)?;
        let call_id = req.call_id.clone();
        let cseq = req.cseq.seq;
        match contacts {
            None => {}
            Some(ContactList::Star) => {
                if header_expires != Some(0) {
                    return Err(RegisterError::BadWildcard);
                }
                if let Some(list) = self.aors.get_mut(aor) {
                    // RFC 3261 10.3 step 6: keep bindings whose CSeq shows the wildcard
                    // is older than them.
                    if list.iter().any(|b| b.call_id == call_id && b.cseq >= cseq) {
                        return Err(RegisterError::OutOfOrder);
                    }
                    list.clear();
                }
            }
            Some(ContactList::Addresses(list)) => {
                let mut planned = Vec::with_capacity(list.len());
                for c in &list {
                    let expires = match c.param("expires").and_then(|p| p.value.as_deref()) {
                        Some(v) => self.expiry_value(v)?,
                        None => header_expires.unwrap_or(self.limits.default_expires),
                    };
                    if expires != 0 && expires < self.limits.min_expires {
                        return Err(RegisterError::IntervalTooBrief {
                            min_expires: self.limits.min_expires,
                        });
                    }
                    planned.push((c, expires.min(self.limits.max_expires)));
                }
                for (c, expires) in planned {
                    self.apply_contact(now, aor, c, expires, &call_id, cseq, source)?;
                }
                self.enforce_cap(aor);
            }
        }
        let out = self.bindings(now, aor);
        if self.aors.get(aor).is_some_and(Vec::is_empty) {
            self.aors.remove(aor);
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)] // reason: one REGISTER's worth of context
    fn apply_contact(
        &mut self,
        now: Instant,
        aor: &str,
        contact: &NameAddr,
        expires: u32,
        call_id: &CallId,
        cseq: u32,
        source: RegisterSource,
    ) -> Result<(), RegisterError> {
        let key = contact_key(&contact.uri);
        let instance = instance_of(contact);
        let reg_id = reg_id_of(contact);
        self.refresh_counter += 1;
        let refreshed = self.refresh_counter;
        let list = self.aors.entry(aor.to_string()).or_default();
        let existing = list.iter().position(|b| match (&instance, &b.instance) {
            (Some(i), Some(bi)) => i == bi && reg_id == b.reg_id,
            _ => contact_key_str(&b.contact) == key,
        });
        if let Some(i) = existing {
            if list[i].call_id == *call_id && list[i].cseq >= cseq {
                return Err(RegisterError::OutOfOrder);
            }
            if expires == 0 {
                list.remove(i);
                return Ok(());
            }
        } else if expires == 0 {
            return Ok(());
        }
        let binding = Binding {
            aor: aor.to_string(),
            contact: contact.uri.to_string(),
            instance,
            reg_id,
            call_id: call_id.clone(),
            cseq,
            source: source.addr,
            transport: source.transport,
            expires_at: now + Duration::from_secs(u64::from(expires)),
            refreshed,
        };
        match existing {
            Some(i) => list[i] = binding,
            None => list.push(binding),
        }
        Ok(())
    }

    fn enforce_cap(&mut self, aor: &str) {
        let cap = self.limits.max_bindings_per_aor.max(1);
        if let Some(list) = self.aors.get_mut(aor) {
            while list.len() > cap {
                let oldest = list
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, b)| b.refreshed)
                    .map(|(i, _)| i);
                match oldest {
                    Some(i) => {
                        list.remove(i);
                    }
                    None => break,
                }
            }
        }
    }

    fn purge_aor(&mut self, now: Instant, aor: &str) {
        if let Some(list) = self.aors.get_mut(aor) {
            list.retain(|b| b.expires_at > now);
        }
    }

    /// Live bindings of `aor`, most recently refreshed last.
    pub fn bindings(&self, now: Instant, aor: &str) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .aors
            .get(aor)
            .map(|l| l.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|b| b.refreshed);
        v
    }

    /// Removes expired bindings; returns the AORs that lost bindings.
    pub fn purge(&mut self, now: Instant) -> Vec<String> {
        let mut changed = Vec::new();
        self.aors.retain(|aor, list| {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            if list.len() != before {
                changed.push(aor.clone());
            }
            !list.is_empty()
        });
        changed.sort();
        changed
    }

    /// The earliest binding expiry, for [`crate::Endpoint::poll_timeout`].
    pub fn next_expiry(&self) -> Option<Instant> {
        self.aors.values().flatten().map(|b| b.expires_at).min()
    }

    /// All live bindings with absolute expiry computed from the caller's wall clock
    /// reading `unix_now` (seconds) taken at `now`.
    pub fn snapshot(&self, now: Instant, unix_now: u64) -> RegistrarSnapshot {
        let mut bindings: Vec<StoredBinding> = self
            .aors
            .values()
            .flatten()
            .filter(|b| b.expires_at > now)
            .map(|b| StoredBinding {
                aor: b.aor.clone(),
                contact: b.contact.clone(),
                instance: b.instance.clone(),
                reg_id: b.reg_id,
                call_id: b.call_id.as_str().to_string(),
                cseq: b.cseq,
                source: b.source,
                transport: b.transport,
                expires_at_unix: unix_now + b.expires_in(now).as_secs(),
            })
            .collect();
        bindings.sort_by(|a, b| (&a.aor, &a.contact).cmp(&(&b.aor, &b.contact)));
        RegistrarSnapshot { bindings }
    }

    /// Loads persisted bindings, skipping expired ones and unparseable contacts.
    pub fn restore(&mut self, now: Instant, unix_now: u64, snapshot: &RegistrarSnapshot) {
        for s in &snapshot.bindings {
            if s.expires_at_unix <= unix_now || Uri::parse(&s.contact).is_err() {
                continue;
            }
            self.refresh_counter += 1;
            let remaining = (s.expires_at_unix - unix_now).min(u64::from(self.limits.max_expires));
            let binding = Binding {
                aor: s.aor.clone(),
                contact: s.contact.clone(),
                instance: s.instance.clone(),
                reg_id: s.reg_id,
                call_id: CallId::new(s.call_id.clone()),
                cseq: s.cseq,
                source: s.source,
                transport: s.transport,
                expires_at: now + Duration::from_secs(remaining),
                refreshed: self.refresh_counter,
            };
            self.aors.entry(s.aor.clone()).or_default().push(binding);
        }
        let aors: Vec<String> = self.aors.keys().cloned().collect();
        for aor in aors {
            self.enforce_cap(&aor);
        }
    }
}

fn contact_key_str(contact: &str) -> String {
    match Uri::parse(contact) {
        Ok(u) => contact_key(&u),
        Err(_) => contact.to_string(),
    }
}
