//! Sans-IO SIP core (RFC 3261): message parsing and printing, transactions, dialogs,
//! the registrar and digest authentication.
//!
//! This crate does no IO, reads no clock and spawns nothing: time arrives as `now`
//! arguments, randomness from a seeded generator owned by the caller. The tokio shell in
//! the root package drives it.
