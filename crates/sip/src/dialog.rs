//! Dialogs (RFC 3261 12), from either side, and the per-call state that hangs off them:
//! the dialog identifiers, route set, remote target and CSeq spaces, plus which INVITE
//! (initial or re-INVITE) is waiting for the application's answer or for its ACK.
//!
//! This module builds in-dialog requests (BYE, the ACK of a 2xx) from dialog state
//! (12.2.1.1); it does not send anything or run timers; the endpoint does.

use std::fmt::Write as _;

use crate::ids::{CallHandle, CallId, Tag};
use crate::message::{Method, Request, Response};
use crate::transaction::Route;
use crate::uri::{NameAddr, Uri};

/// Dialog ID from our side: Call-ID, local tag (our To tag as UAS, our From tag as
/// UAC), remote tag (the peer's; empty for RFC 2543 peers that send none). A request
/// from the peer carries our tag in To and theirs in From, whichever side we are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogKey {
    pub call_id: CallId,
    pub local_tag: Tag,
    pub remote_tag: Tag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// INVITE received, no 2xx yet (an early dialog exists once a 1xx with tag left).
    Early,
    /// 2xx sent (ACKed or not).
    Confirmed,
}

#[derive(Debug, Clone)]
pub struct Dialog {
    pub key: DialogKey,
    pub state: DialogState,
    /// Our address: the To of the INVITE, tagged.
    pub local: NameAddr,
    /// The caller's address: the From of the INVITE.
    pub remote: NameAddr,
    /// Contact of the caller (12.1.1): the Request-URI of our in-dialog requests.
    pub remote_target: Uri,
    /// Record-Route of the INVITE, in order (12.1.1).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// Where in-dialog requests go: the source the INVITE came from (symmetric
    /// signalling, so NATed callers are reachable).
    pub peer: Route,
}

impl Dialog {
    /// Creates the UAS side of a dialog from an INVITE (RFC 3261 12.1.1).
    pub fn from_invite(req: &Request, local_tag: Tag, peer: Route, local_cseq: u32) -> Self {
        let remote_tag = Tag::new(req.from.tag().unwrap_or_default());
        let mut local = req.to.clone();
        local.set_param("tag", Some(local_tag.as_str().to_string()));
        let remote_target = match req.contacts() {
            Ok(Some(crate::uri::ContactList::Addresses(list))) if !list.is_empty() => {
                list[0].uri.clone()
            }
            _ => req.from.uri.clone(),
        };
        let route_set = req.headers.list("Record-Route");
        Self {
            key: DialogKey {
                call_id: req.call_id.clone(),
                local_tag,
                remote_tag,
            },
            state: DialogState::Early,
            local,
            remote: req.from.clone(),
            remote_target,
            route_set,
            local_cseq,
            remote_cseq: req.cseq.seq,
            peer,
        }
    }

    /// Creates the UAC side of a dialog from the INVITE we sent and a 2xx to it (RFC
    /// 3261 12.1.2): the remote tag from To, the remote target from Contact, the route
    /// set from Record-Route in reverse. `None` when the 2xx has no To tag.
    pub fn from_2xx(invite: &Request, response: &Response, peer: Route) -> Option<Self> {
        let remote_tag = Tag::new(response.to.tag()?);
        let local_tag = Tag::new(invite.from.tag()?);
        let remote_target = match crate::message::parse_contacts(&response.headers) {
            Ok(Some(crate::uri::ContactList::Addresses(list))) if !list.is_empty() => {
                list[0].uri.clone()
            }
            _ => invite.uri.clone(),
        };
        let mut route_set = response.headers.list("Record-Route");
        route_set.reverse();
        Some(Self {
            key: DialogKey {
                call_id: invite.call_id.clone(),
                local_tag,
                remote_tag,
            },
            state: DialogState::Confirmed,
            local: invite.from.clone(),
            remote: response.to.clone(),
            remote_target,
            route_set,
            local_cseq: invite.cseq.seq,
            remote_cseq: 0,
            peer,
        })
    }

    /// The ACK of a 2xx to our INVITE with CSeq `invite_cseq` (RFC 3261 13.2.2.4): a
    /// request of the dialog, with the INVITE's sequence number.
    pub fn build_ack(&self, invite_cseq: u32, via: &str, user_agent: &str) -> Vec<u8> {
        self.build(Method::Ack, invite_cseq, via, user_agent)
    }

    /// Builds an in-dialog request (RFC 3261 12.2.1.1) with a fresh CSeq.
    pub fn build_request(&mut self, method: Method, via: &str, user_agent: &str) -> Vec<u8> {
        self.build_request_with(method, via, user_agent, &[], None)
    }

    /// As [`Dialog::build_request`], with extra header lines (a re-INVITE's Contact, a
    /// NOTIFY's Event) and a body given as (Content-Type, bytes).
    pub fn build_request_with(
        &mut self,
        method: Method,
        via: &str,
        user_agent: &str,
        extra: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        self.local_cseq = self.local_cseq.wrapping_add(1) & 0x7fff_ffff;
        self.build_with(method, self.local_cseq, via, user_agent, extra, body)
    }

    fn build(&self, method: Method, cseq: u32, via: &str, user_agent: &str) -> Vec<u8> {
        self.build_with(method, cseq, via, user_agent, &[], None)
    }

    fn build_with(
        &self,
        method: Method,
        cseq: u32,
        via: &str,
        user_agent: &str,
        extra: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        let mut s = String::with_capacity(512);
        let _ = write!(s, "{method} {} SIP/2.0\r\n", self.remote_target);
        let _ = write!(s, "Via: {via}\r\n");
        s.push_str("Max-Forwards: 70\r\n");
        let _ = write!(s, "From: {}\r\n", self.local);
        let _ = write!(s, "To: {}\r\n", self.remote);
        let _ = write!(s, "Call-ID: {}\r\n", self.key.call_id);
        let _ = write!(s, "CSeq: {cseq} {method}\r\n");
        for r in &self.route_set {
            let _ = write!(s, "Route: {r}\r\n");
        }
        let _ = write!(s, "User-Agent: {user_agent}\r\n");
        for (name, value) in extra {
            let _ = write!(s, "{name}: {value}\r\n");
        }
        match body {
            Some((content_type, bytes)) => {
                let _ = write!(
                    s,
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                );
                let mut out = s.into_bytes();
                out.extend_from_slice(bytes);
                out
            }
            None => {
                s.push_str("Content-Length: 0\r\n\r\n");
                s.into_bytes()
            }
        }
    }
}

/// What is outstanding on a call's INVITE transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteProgress {
    /// The application has not answered the INVITE yet.
    AwaitingAnswer,
    /// A 2xx went out and its ACK has not arrived (RFC 3261 13.3.1.4).
    AwaitingAck,
    /// Nothing outstanding.
    Idle,
}

/// One call: a dialog plus the INVITE in flight.
#[derive(Debug, Clone)]
pub struct Call {
    pub handle: CallHandle,
    pub dialog: Dialog,
    pub progress: InviteProgress,
    /// The INVITE (initial or re-INVITE) being answered; responses are built from it.
    pub invite: Request,
    /// Key of the server transaction of `invite`.
    pub invite_tx: String,
    /// Whether `invite` is the dialog-creating INVITE.
    pub initial: bool,
    /// Hang up as soon as the 2xx is ACKed.
    pub hangup_after_ack: bool,
    /// The digest user that authenticated the INVITE, for the per-caller call limit.
    pub caller: Option<String>,
    /// Whether we chose the Call-ID (we placed the call): RFC 3261 14.1's wait after a
    /// 491 depends on it.
    pub call_id_owner: bool,
}
