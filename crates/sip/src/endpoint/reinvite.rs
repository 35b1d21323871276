//! Re-INVITEs the endpoint sends in a confirmed dialog (RFC 3261 14.1), e.g. to put the
//! other leg of a bridged call on hold: an INVITE client transaction inside the dialog
//! (the dialog's CSeq, route set and remote target, our Contact), the ACK of its 2xx
//! (13.2.2.4, resent for each 2xx retransmission) or of its failure (17.1.1.3).
//!
//! Glare: while our re-INVITE is under way, a re-INVITE from the peer gets 491 Request
//! Pending (14.2), and a 491 to ours is retried after a random wait (14.1: 2.1-4 s when
//! we chose the Call-ID, 0-2 s otherwise, in 10 ms steps), so the two sides do not
//! collide again. A re-INVITE from the peer that arrives during that wait is answered
//! and replaces ours, which is then reported failed with 491: the answer to the peer's
//! offer carries our session state just as well, and our older offer must not follow
//! it. One re-INVITE of ours per call at a time; an offer asked for while the peer's
//! own INVITE transaction is still open waits until it is over.

use std::time::{Duration, Instant};

use super::outgoing::{non_2xx_ack, response_body};
use super::{Body, CallError, Endpoint, Event, TimerTarget};
use crate::dialog::{Dialog, DialogState, InviteProgress};
use crate::ids::CallHandle;
use crate::message::{parse, Framing, Message, Method, Request, Response};
use crate::transaction::{InviteClientTransaction, InviteResponseAction};

/// Our re-INVITE of one call, from [`Endpoint::reinvite`] to its final response.
pub(super) struct ReInvite {
    body: Body,
    /// Branch of the client transaction in flight; `None` while waiting for the peer's
    /// INVITE transaction to end or for the glare timer.
    branch: Option<String>,
    /// When the wait after a 491 ends.
    retry_at: Option<Instant>,
}

/// One re-INVITE client transaction, alive until it terminates (Timer M keeps it for
/// 2xx retransmissions, which are ACKed again).
pub(super) struct ReInviteTx {
    call: CallHandle,
    tx: InviteClientTransaction,
    /// The request as sent, for the ACK of a non-2xx.
    request: Request,
    /// The dialog as the request left: the ACK of the 2xx is built from it, even if the
    /// call has ended meanwhile (RFC 3261 15: ACK, then BYE).
    dialog: Dialog,
    ack_2xx: Option<Vec<u8>>,
}

/// RFC 3261 14.1: the wait before retrying a re-INVITE that got 491, from a random
/// `draw`: 2.1-4 s in 10 ms units for the Call-ID's owner, 0-2 s for the other side.
pub fn glare_wait(call_id_owner: bool, draw: u32) -> Duration {
    let ticks = if call_id_owner {
        210 + draw % 191
    } else {
        draw % 201
    };
    Duration::from_millis(u64::from(ticks) * 10)
}

impl Endpoint {
    /// Sends a re-INVITE with `body` (an SDP offer) in the call's confirmed dialog. The
    /// outcome arrives as [`Event::ReInviteAnswered`] (the ACK is sent) or
    /// [`Event::ReInviteFailed`]; a 491 is retried first (see the module docs).
    pub fn reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        body: Body,
    ) -> Result<(), CallError> {
        let c = self.calls.get(&call).ok_or(CallError::UnknownCall)?;
        if c.dialog.state != DialogState::Confirmed {
            return Err(CallError::NotConfirmed);
        }
        if self.reinvites.contains_key(&call) {
            return Err(CallError::InviteInProgress);
        }
        self.reinvites.insert(
            call,
            ReInvite {
                body,
                branch: None,
                retry_at: None,
            },
        );
        self.send_reinvite(now, call);
        Ok(())
    }

    /// Sends our waiting re-INVITE of `call` unless the peer's INVITE transaction is
    /// still open or the glare wait is not over. Called again when either ends.
    pub(super) fn send_reinvite(&mut self, now: Instant, call: CallHandle) {
        let Some(ours) = self.reinvites.get(&call) else {
            return;
        };
        if ours.branch.is_some() || ours.retry_at.is_some_and(|at| at > now) {
            return;
        }
        let body = ours.body.clone();
        let Some(c) = self.calls.get(&call) else {
            self.reinvites.remove(&call);
            return;
        };
        if c.progress != InviteProgress::Idle {
            return;
        }
        let transport = c.dialog.peer.transport;
        let branch = self.new_branch();
        let via = self.via_value(transport, &branch);
        let contact = self.contact_header(transport);
        let (ua, allow) = (self.config.user_agent.clone(), super::ALLOW.to_string());
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let bytes = c.dialog.build_request_with(
            Method::Invite,
            &via,
            &ua,
            &[("Contact", contact), ("Allow", allow)],
            Some((&body.content_type, &body.bytes)),
        );
        let Ok(Message::Request(request)) = parse(&bytes, Framing::Datagram) else {
            // Only a body type with a line break could break it: report, do not send.
            self.reinvites.remove(&call);
            self.events
                .push_back(Event::ReInviteFailed { call, status: 400 });
            return;
        };
        let route = c.dialog.peer;
        let dialog = c.dialog.clone();
        let tx = InviteClientTransaction::new(now, bytes, route, &self.config.timers);
        self.send(route, tx.request().to_vec());
        self.reinvite_txs.insert(
            branch.clone(),
            ReInviteTx {
                call,
                tx,
                request,
                dialog,
                ack_2xx: None,
            },
        );
        if let Some(ours) = self.reinvites.get_mut(&call) {
            ours.branch = Some(branch.clone());
            ours.retry_at = None;
        }
        self.schedule_reinvite(&branch);
        // A provisional stops Timer B, and nothing would end a re-INVITE the peer never
        // answers: give it as long as an unanswered INVITE gets.
        self.push_timer(
            now + self.config.max_ringing,
            TimerTarget::ReInviteExpiry(branch),
        );
    }

    /// Our re-INVITE `branch` has had no final response for `max_ringing`: it is
    /// dropped and reported 408, so the call can re-INVITE again (a 2xx arriving after
    /// this finds no transaction and goes unanswered; the peer then ends the call).
    pub(super) fn expire_reinvite(&mut self, now: Instant, branch: &str) {
        let Some(rt) = self.reinvite_txs.get(branch) else {
            return;
        };
        let pending = matches!(
            rt.tx.state,
            crate::transaction::InviteClientState::Calling
                | crate::transaction::InviteClientState::Proceeding
        );
        if !pending {
            return;
        }
        let call = rt.call;
        self.reinvite_txs.remove(branch);
        self.on_reinvite_failure(now, call, 408);
    }

    /// Whether our re-INVITE of `call` is in flight (a re-INVITE from the peer then
    /// gets 491, RFC 3261 14.2).
    pub(super) fn reinvite_in_flight(&self, call: CallHandle) -> bool {
        self.reinvites
            .get(&call)
            .is_some_and(|r| r.branch.is_some())
    }

    /// The peer's re-INVITE arrived while ours waits (after a 491, or for the peer's
    /// transaction): the peer's offer is answered instead, and ours is dropped.
    pub(super) fn supersede_reinvite(&mut self, call: CallHandle) {
        if self.reinvites.remove(&call).is_some() {
            self.events
                .push_back(Event::ReInviteFailed { call, status: 491 });
        }
    }

    /// Whether `branch` is one of our re-INVITEs.
    pub(super) fn is_reinvite_branch(&self, branch: &str) -> bool {
        self.reinvite_txs.contains_key(branch)
    }

    pub(super) fn handle_reinvite_response(&mut self, now: Instant, branch: &str, resp: Response) {
        let timers = self.config.timers;
        let Some(rt) = self.reinvite_txs.get_mut(branch) else {
            return;
        };
        let call = rt.call;
        match rt.tx.on_response(now, resp.status, &timers) {
            InviteResponseAction::Absorb => {}
            InviteResponseAction::ResendAck => {
                if let Some(ack) = rt.tx.ack() {
                    let (route, ack) = (rt.tx.route, ack.to_vec());
                    self.send(route, ack);
                }
            }
            InviteResponseAction::Report if resp.status < 200 => {}
            InviteResponseAction::Report => {
                if let Some(ack) = &rt.ack_2xx {
                    // A retransmitted 2xx: our ACK was lost.
                    let (route, ack) = (rt.tx.route, ack.clone());
                    self.send(route, ack);
                } else {
                    self.on_reinvite_2xx(branch, &resp);
                }
            }
            InviteResponseAction::ReportAndAck => {
                let ack = non_2xx_ack(&rt.request, &resp, &self.config.user_agent);
                rt.tx.set_ack(ack.clone());
                let route = rt.tx.route;
                self.send(route, ack);
                self.on_reinvite_failure(now, call, resp.status);
            }
        }
        self.schedule_reinvite(branch);
    }

    fn on_reinvite_2xx(&mut self, branch: &str, resp: &Response) {
        let ack_branch = self.new_branch();
        let Some(transport) = self.reinvite_txs.get(branch).map(|r| r.tx.route.transport) else {
            return;
        };
        let via = self.via_value(transport, &ack_branch);
        let Some(rt) = self.reinvite_txs.get_mut(branch) else {
            return;
        };
        // RFC 3261 13.2.2.4: the ACK has the INVITE's CSeq number.
        let ack = rt
            .dialog
            .build_ack(rt.request.cseq.seq, &via, &self.config.user_agent);
        rt.ack_2xx = Some(ack.clone());
        let (call, route) = (rt.call, rt.tx.route);
        self.send(route, ack);
        if self.reinvites.remove(&call).is_none() {
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        // A re-INVITE is a target refresh request (12.2.1.2): its 2xx's Contact is the
        // new remote target.
        if let Ok(Some(crate::uri::ContactList::Addresses(list))) =
            crate::message::parse_contacts(&resp.headers)
        {
            if let Some(first) = list.first() {
                c.dialog.remote_target = first.uri.clone();
            }
        }
        self.events.push_back(Event::ReInviteAnswered {
            call,
            body: response_body(resp),
        });
    }

    /// A final 300-699 (or Timer B's 408) for our re-INVITE: a 491 waits and retries,
    /// anything else is reported. The dialog goes on either way (RFC 3261 14.1).
    fn on_reinvite_failure(&mut self, now: Instant, call: CallHandle, status: u16) {
        let owner = self.calls.get(&call).map(|c| c.call_id_owner);
        let (Some(ours), Some(owner)) = (self.reinvites.get_mut(&call), owner) else {
            self.reinvites.remove(&call);
            return;
        };
        ours.branch = None;
        if status == 491 {
            let draw = u32::from_str_radix(&self.tokens.next_hex("glare", 8), 16).unwrap_or(0);
            let at = now + glare_wait(owner, draw);
            if let Some(ours) = self.reinvites.get_mut(&call) {
                ours.retry_at = Some(at);
            }
            self.push_timer(at, TimerTarget::ReInviteRetry(call));
            return;
        }
        self.reinvites.remove(&call);
        self.events
            .push_back(Event::ReInviteFailed { call, status });
    }

    fn schedule_reinvite(&mut self, branch: &str) {
        if let Some(at) = self.reinvite_txs.get(branch).and_then(|r| r.tx.deadline()) {
            self.push_timer(at, TimerTarget::ReInvite(branch.to_string()));
        }
    }

    pub(super) fn fire_reinvite_timer(&mut self, now: Instant, branch: &str) {
        let timers = self.config.timers;
        let Some(rt) = self.reinvite_txs.get_mut(branch) else {
            return;
        };
        if rt.tx.deadline().is_none_or(|d| d > now) {
            return;
        }
        let fired = rt.tx.on_timer(now, &timers);
        let (route, call, terminated) = (rt.tx.route, rt.call, rt.tx.is_terminated());
        if let Some(bytes) = fired.retransmit {
            self.send(route, bytes);
        }
        if fired.timed_out {
            // Timer B: no response at all (RFC 3261 17.1.1.2: 408 to the TU).
            self.on_reinvite_failure(now, call, 408);
        }
        if terminated {
            self.reinvite_txs.remove(branch);
        } else {
            self.schedule_reinvite(branch);
        }
    }

    /// Re-INVITE client transactions still alive (for tests).
    pub fn reinvite_count(&self) -> usize {
        self.reinvite_txs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glare_waits_stay_in_the_rfc_3261_ranges() {
        for draw in [0, 1, 190, 191, 200, 201, 12_345, u32::MAX] {
            let owner = glare_wait(true, draw);
            assert!(owner >= Duration::from_millis(2100), "{owner:?}");
            assert!(owner <= Duration::from_millis(4000), "{owner:?}");
            assert_eq!(owner.as_millis() % 10, 0);
            let other = glare_wait(false, draw);
            assert!(other <= Duration::from_millis(2000), "{other:?}");
            assert_eq!(other.as_millis() % 10, 0);
        }
        assert_eq!(glare_wait(true, 190), Duration::from_millis(4000));
        assert_eq!(glare_wait(false, 200), Duration::from_millis(2000));
    }
}
