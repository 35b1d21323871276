//! Calls the endpoint places (the UAC side, RFC 3261 13.2): the INVITE client
//! transaction, CANCEL (9.1), the ACKs (17.1.1.3 for a non-2xx, 13.2.2.4 for a 2xx),
//! and the UAC dialog a 2xx creates. Once answered, an outgoing call is a [`Call`] like
//! any other: BYE, re-INVITE and INFO from either side go through the same code.
//!
//! Forking is the application's: it places one INVITE per contact and cancels the
//! losers (see [`crate::fork`]).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use super::{Body, CallError, EndReason, Endpoint, Event, TimerTarget, ALLOW};
use crate::dialog::{Call, Dialog, InviteProgress};
use crate::ids::{CallHandle, RequestHandle, Transport};
use crate::message::{parse, Framing, Message, Request, Response};
use crate::syntax::quote;
use crate::transaction::{ClientPurpose, InviteClientTransaction, InviteResponseAction, Route};
use crate::uri::Uri;

/// An INVITE to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingInvite {
    /// Where it goes: for a registered phone, the address and transport it registered
    /// from (its NAT mapping, or its own TCP connection).
    pub destination: SocketAddr,
    pub transport: Transport,
    /// The Request-URI: the binding's Contact URI.
    pub request_uri: String,
    /// The To URI: the callee's address of record, e.g. `sip:1001@example.com`.
    pub to: String,
    /// The caller as the callee sees it (From user part and display name).
    pub from_user: String,
    pub from_display: Option<String>,
    /// A P-Asserted-Identity value (RFC 3325) for the caller, when the switch vouches.
    pub asserted_identity: Option<String>,
    pub body: Option<Body>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cancel {
    NotAsked,
    /// Asked before any provisional response: RFC 3261 9.1 says wait for one.
    Pending,
    Sent,
}

/// One INVITE we sent, from the request until its transaction ends.
pub(super) struct Outgoing {
    call: CallHandle,
    /// Our INVITE, parsed back: the ACK, CANCEL and the dialog are built from it.
    request: Request,
    tx: InviteClientTransaction,
    cancel: Cancel,
    /// The ACK sent for the 2xx, resent for each retransmission of it.
    ack_2xx: Option<Vec<u8>>,
}

impl Endpoint {
    /// Places a call: sends the INVITE and returns the call's handle. What becomes of it
    /// arrives as events: [`Event::CallProgress`], then [`Event::CallAnswered`] (the ACK
    /// is already sent) or [`Event::CallFailed`] (final).
    pub fn invite(&mut self, now: Instant, out: OutgoingInvite) -> Result<CallHandle, CallError> {
        let uri = Uri::parse(&out.request_uri).map_err(|_| CallError::BadUri)?;
        let to = Uri::parse(&out.to).map_err(|_| CallError::BadUri)?;
        if uri.as_sip().is_none() || to.as_sip().is_none() {
            return Err(CallError::BadUri);
        }
        let branch = self.new_branch();
        let via = self.via_value(out.transport, &branch);
        let tag = self.tokens.next_hex("tag", 16);
        let call_id = format!(
            "{}@{}",
            self.tokens.next_hex("call-id", 24),
            self.config.advertised_host
        );
        let cseq = (self.tokens.next_counter() as u32) & 0xffff | 1;
        let host = crate::uri::Host::from_name(&self.config.advertised_host);
        let display = out
            .from_display
            .as_deref()
            .map(|d| format!("{} ", quote(d)))
            .unwrap_or_default();
        let mut s = String::with_capacity(800);
        let _ = write!(
            s,
            "INVITE {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        );
        let _ = write!(
            s,
            "From: {display}<sip:{}@{host}>;tag={tag}\r\nTo: <{to}>\r\n",
            escape_user(&out.from_user)
        );
        let _ = write!(s, "Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n");
        let _ = write!(s, "Contact: {}\r\n", self.contact_header(out.transport));
        if let Some(pai) = &out.asserted_identity {
            let _ = write!(s, "P-Asserted-Identity: {pai}\r\n");
        }
        let _ = write!(
            s,
            "Allow: {ALLOW}\r\nUser-Agent: {}\r\n",
            self.config.user_agent
        );
        let mut bytes = match &out.body {
            Some(body) => {
                let _ = write!(
                    s,
                    "Content-Type: {}\r\nContent-Length: {}\r\n\r\n",
                    body.content_type,
                    body.bytes.len()
                );
                let mut b = s.into_bytes();
                b.extend_from_slice(&body.bytes);
                b
            }
            None => {
                s.push_str("Content-Length: 0\r\n\r\n");
                s.into_bytes()
            }
        };
        let request = match parse(&bytes, Framing::Datagram) {
            Ok(Message::Request(r)) => r,
            // Only a caller-supplied piece (a display name, a PAI) can break it.
            _ => return Err(CallError::BadUri),
        };
        let route = Route {
            destination: out.destination,
            transport: out.transport,
        };
        let call = CallHandle(self.next_id());
        let tx = InviteClientTransaction::new(
            now,
            std::mem::take(&mut bytes),
            route,
            &self.config.timers,
        );
        self.send(route, tx.request().to_vec());
        self.outgoing.insert(
            branch.clone(),
            Outgoing {
                call,
                request,
                tx,
                cancel: Cancel::NotAsked,
                ack_2xx: None,
            },
        );
        self.outgoing_calls.insert(call, branch.clone());
        self.schedule_invite(&branch);
        Ok(call)
    }

    /// Cancels a call we placed that is not answered yet (RFC 3261 9.1). The final
    /// event is then [`Event::CallFailed`] (487, or whatever final response won the
    /// race), or, if the callee answered first, [`Event::CallEnded`] after our ACK and
    /// BYE.
    pub fn cancel(&mut self, now: Instant, call: CallHandle) -> Result<(), CallError> {
        let branch = self
            .outgoing_calls
            .get(&call)
            .cloned()
            .ok_or(CallError::UnknownCall)?;
        let Some(out) = self.outgoing.get_mut(&branch) else {
            return Err(CallError::UnknownCall);
        };
        if out.cancel != Cancel::NotAsked {
            return Ok(());
        }
        match out.tx.state {
            crate::transaction::InviteClientState::Proceeding => self.send_cancel(now, &branch),
            crate::transaction::InviteClientState::Calling => out.cancel = Cancel::Pending,
            _ => {}
        }
        Ok(())
    }

    /// Whether `call` is one we placed that has no final response yet.
    pub(super) fn is_unanswered_outgoing(&self, call: CallHandle) -> bool {
        self.outgoing_calls.contains_key(&call) && !self.calls.contains_key(&call)
    }

    fn send_cancel(&mut self, now: Instant, branch: &str) {
        let Some(out) = self.outgoing.get_mut(branch) else {
            return;
        };
        out.cancel = Cancel::Sent;
        let req = &out.request;
        // RFC 3261 9.1: the INVITE's Request-URI, top Via (so the same branch), From,
        // To, Call-ID and CSeq number.
        let mut s = String::with_capacity(400);
        let _ = write!(s, "CANCEL {} SIP/2.0\r\n", req.uri);
        for name in ["Via", "From", "To", "Call-ID"] {
            if let Some(v) = req.headers.first(name) {
                let _ = write!(s, "{name}: {v}\r\n");
            }
        }
        let _ = write!(
            s,
            "Max-Forwards: 70\r\nCSeq: {} CANCEL\r\nUser-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            req.cseq.seq, self.config.user_agent
        );
        let route = out.tx.route;
        let handle = RequestHandle(self.next_id());
        self.start_client(
            now,
            format!("{branch}|CANCEL"),
            s.into_bytes(),
            route,
            handle,
            ClientPurpose::Cancel,
        );
    }

    /// A response whose CSeq method is INVITE and whose branch is one of ours.
    pub(super) fn handle_invite_response(&mut self, now: Instant, branch: &str, resp: Response) {
        let timers = self.config.timers;
        let Some(out) = self.outgoing.get_mut(branch) else {
            return;
        };
        let call = out.call;
        match out.tx.on_response(now, resp.status, &timers) {
            InviteResponseAction::Absorb => {}
            InviteResponseAction::ResendAck => {
                if let Some(ack) = out.tx.ack() {
                    let (route, ack) = (out.tx.route, ack.to_vec());
                    self.send(route, ack);
                }
            }
            InviteResponseAction::Report if resp.status < 200 => {
                if out.cancel == Cancel::Pending {
                    self.send_cancel(now, branch);
                }
                if resp.status > 100 {
                    self.events.push_back(Event::CallProgress {
                        call,
                        status: resp.status,
                        body: response_body(&resp),
                    });
                }
            }
            InviteResponseAction::Report => self.on_2xx(now, branch, resp),
            InviteResponseAction::ReportAndAck => {
                let ack = non_2xx_ack(&out.request, &resp, &self.config.user_agent);
                out.tx.set_ack(ack.clone());
                let route = out.tx.route;
                self.send(route, ack);
                self.outgoing_calls.remove(&call);
                self.events.push_back(Event::CallFailed {
                    call,
                    status: resp.status,
                });
            }
        }
        self.schedule_invite(branch);
    }

    fn on_2xx(&mut self, now: Instant, branch: &str, resp: Response) {
        let Some(out) = self.outgoing.get_mut(branch) else {
            return;
        };
        if let Some(ack) = &out.ack_2xx {
            // A retransmitted 2xx: our ACK was lost (13.2.2.4).
            let (route, ack) = (out.tx.route, ack.clone());
            self.send(route, ack);
            return;
        }
        let (call, cancelled) = (out.call, out.cancel != Cancel::NotAsked);
        let peer = out.tx.route;
        let Some(dialog) = Dialog::from_2xx(&out.request, &resp, peer) else {
            // A 2xx without a To tag cannot start a dialog; its retransmissions and
            // Timer M end the transaction.
            return;
        };
        let ack_branch = self.new_branch();
        let via = self.via_value(peer.transport, &ack_branch);
        let ack = dialog.build_ack(dialog.local_cseq, &via, &self.config.user_agent);
        let Some(out) = self.outgoing.get_mut(branch) else {
            return;
        };
        out.ack_2xx = Some(ack.clone());
        let invite = out.request.clone();
        self.send(peer, ack);
        self.dialogs.insert(dialog.key.clone(), call);
        self.calls.insert(
            call,
            Call {
                handle: call,
                dialog,
                progress: InviteProgress::Idle,
                invite,
                invite_tx: String::new(),
                initial: false,
                hangup_after_ack: false,
                caller: None,
                call_id_owner: true,
            },
        );
        if cancelled {
            // The callee answered before our CANCEL took: end the session we did not
            // want with a BYE.
            self.send_bye(now, call, EndReason::LocalHangup);
        } else {
            self.events.push_back(Event::CallAnswered {
                call,
                body: response_body(&resp),
            });
        }
    }

    pub(super) fn schedule_invite(&mut self, branch: &str) {
        if let Some(at) = self.outgoing.get(branch).and_then(|o| o.tx.deadline()) {
            self.push_timer(at, TimerTarget::Invite(branch.to_string()));
        }
    }

    pub(super) fn fire_invite_timer(&mut self, now: Instant, branch: &str) {
        let timers = self.config.timers;
        let Some(out) = self.outgoing.get_mut(branch) else {
            return;
        };
        if out.tx.deadline().is_none_or(|d| d > now) {
            return;
        }
        let fired = out.tx.on_timer(now, &timers);
        let (route, call, terminated) = (out.tx.route, out.call, out.tx.is_terminated());
        if let Some(bytes) = fired.retransmit {
            self.send(route, bytes);
        }
        if fired.timed_out {
            // Timer B: nobody answered at all (RFC 3261 17.1.1.2: a 408 to the TU).
            self.outgoing_calls.remove(&call);
            self.events
                .push_back(Event::CallFailed { call, status: 408 });
        }
        if terminated {
            self.outgoing.remove(branch);
            if self.outgoing_calls.get(&call).is_some_and(|b| b == branch) {
                self.outgoing_calls.remove(&call);
            }
        } else {
            self.schedule_invite(branch);
        }
    }

    /// INVITEs we sent whose transactions are still alive (for tests and metrics).
    pub fn outgoing_count(&self) -> usize {
        self.outgoing.len()
    }
}

pub(super) fn response_body(resp: &Response) -> Option<Body> {
    (!resp.body.is_empty()).then(|| Body {
        content_type: resp
            .headers
            .first("Content-Type")
            .unwrap_or("application/octet-stream")
            .to_string(),
        bytes: resp.body.clone(),
    })
}

/// The ACK of a 300-699 (RFC 3261 17.1.1.3): the INVITE's Request-URI, top Via,
/// From, Call-ID and CSeq number, and the response's To (with its tag).
pub(super) fn non_2xx_ack(invite: &Request, resp: &Response, user_agent: &str) -> Vec<u8> {
    let mut s = String::with_capacity(400);
    let _ = write!(s, "ACK {} SIP/2.0\r\n", invite.uri);
    if let Some(v) = invite.headers.first("Via") {
        let _ = write!(s, "Via: {v}\r\n");
    }
    s.push_str("Max-Forwards: 70\r\n");
    if let Some(v) = invite.headers.first("From") {
        let _ = write!(s, "From: {v}\r\n");
    }
    if let Some(v) = resp.headers.first("To") {
        let _ = write!(s, "To: {v}\r\n");
    }
    let _ = write!(
        s,
        "Call-ID: {}\r\nCSeq: {} ACK\r\nUser-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n",
        invite.call_id, invite.cseq.seq
    );
    s.into_bytes()
}

/// A user part as RFC 3261 25.1 allows it unescaped (unreserved and user-unreserved
/// characters); anything else is percent-encoded.
fn escape_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
