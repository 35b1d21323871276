//! Identifier newtypes (Call-ID, branch, tag, handles) and the transport enum, so that
//! a branch can never be passed where a tag is expected.
//!
//! Generated identifiers come from [`crate::rng::TokenSource`], never from a clock or a
//! thread-local RNG.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// The Call-ID header value (RFC 3261 20.8), compared byte for byte.
    CallId
);
string_id!(
    /// A Via `branch` parameter (RFC 3261 8.1.1.7).
    Branch
);
string_id!(
    /// A From/To `tag` parameter (RFC 3261 19.3).
    Tag
);

impl Branch {
    /// Whether the branch carries the RFC 3261 magic cookie and something after it.
    pub fn is_rfc3261(&self) -> bool {
        self.0.len() > crate::uri::BRANCH_MAGIC_COOKIE.len()
            && self.0.starts_with(crate::uri::BRANCH_MAGIC_COOKIE)
    }
}

/// The transport a message arrived on or must leave by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// RFC 3261 17: reliable transports need no retransmissions.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Self::Udp)
    }

    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }

    /// The default port for this transport (RFC 3261 19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 5060,
            Self::Tls => 5061,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// A call (INVITE dialog) owned by the endpoint; handed out in [`crate::Event`]s and
/// taken by the call commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallHandle(pub u64);

/// A request the endpoint sent on the caller's behalf (OPTIONS ping, BYE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestHandle(pub u64);

impl fmt::Display for CallHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call#{}", self.0)
    }
}

impl fmt::Display for RequestHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request#{}", self.0)
    }
}
