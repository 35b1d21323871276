//! Sans-IO SIP core (RFC 3261): message parsing and printing, transactions, dialogs,
//! the registrar and digest authentication.
//!
//! This crate does no IO, reads no clock and spawns nothing: time arrives as `now`
//! arguments, randomness from a seed owned by the caller. The tokio shell in the root
//! package drives one [`Endpoint`]: it feeds datagrams and framed stream messages in with
//! [`Endpoint::handle_datagram`] / [`Endpoint::handle_message`], calls
//! [`Endpoint::handle_timeout`] when [`Endpoint::poll_timeout`] says, sends every
//! [`Transmit`] from [`Endpoint::poll_transmit`] and reacts to every [`Event`] from
//! [`Endpoint::poll_event`] with the call commands ([`Endpoint::ring`],
//! [`Endpoint::answer`], [`Endpoint::reject`], [`Endpoint::hangup`]). Bodies are bytes
//! plus a content type: this crate knows no SDP.

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod fork;
pub mod framer;
pub mod ids;
pub mod message;
pub mod registrar;
pub mod rng;
pub mod syntax;
pub mod transaction;
pub mod uri;

pub use auth::{AuthPolicy, BlockAction, DigestAlgorithm};
pub use endpoint::sipfrag;
pub use endpoint::{
    Body, CallError, Config, EndReason, Endpoint, EndpointStats, Event, IncomingCall,
    OutgoingInvite, Transmit, UserConfig,
};
pub use fork::{Fork, ForkAction};
pub use framer::{Frame, FramingError, StreamFramer, PONG};
pub use ids::{Branch, CallHandle, CallId, RequestHandle, Tag, Transport};
pub use message::{parse, Framing, Message, Method, ParseError, ParseFailure, Request, Response};
pub use registrar::{Binding, RegistrarLimits, RegistrarSnapshot, StoredBinding};
pub use transaction::TimerConfig;
