//! Blind transfer (RFC 3515): a REFER in a call's dialog and the NOTIFYs of the
//! implicit `refer` subscription it creates.
//!
//! A REFER with exactly one Refer-To naming a SIP URI is answered 202 Accepted and
//! reported as [`Event::Refer`]; the application then reports progress with
//! [`Endpoint::notify_refer`]: NOTIFY requests of the dialog (its CSeq, route set and
//! remote target) carrying `Event: refer`, `Subscription-State` and a `message/sipfrag`
//! body with the status line of the call it placed ("SIP/2.0 100 Trying", then the
//! final "SIP/2.0 200 OK" or the failure). Each NOTIFY is a non-INVITE client
//! transaction (Timers E and F); its outcome arrives as [`Event::RequestCompleted`].
//! A REFER without exactly one SIP Refer-To gets 400 (RFC 3515 2.4.1). The endpoint
//! keeps one transfer per call: a REFER while the previous one's subscription is still
//! active, or before the call is answered, gets 403. Whether the target is allowed is the application's decision: it
//! reports a refusal as a final NOTIFY ("SIP/2.0 403 Forbidden").

use std::time::Instant;

use super::{Body, CallError, Endpoint, Event};
use crate::ids::{CallHandle, RequestHandle};
use crate::message::{reason_phrase, Method, Request};
use crate::transaction::ClientPurpose;
use crate::uri::Uri;

/// The `message/sipfrag` body of a NOTIFY: the status line of the referred call.
pub fn sipfrag(status: u16) -> Vec<u8> {
    format!("SIP/2.0 {status} {}\r\n", reason_phrase(status)).into_bytes()
}

impl Endpoint {
    /// An in-dialog REFER (RFC 3515 2.4): answered here, 202 or 400/403.
    pub(super) fn handle_refer(
        &mut self,
        now: Instant,
        key: &str,
        req: &Request,
        call: CallHandle,
    ) {
        let targets = req.headers.list("Refer-To");
        let target = match targets.as_slice() {
            [one] => parse_refer_to(one),
            _ => None,
        };
        let Some(refer_to) = target else {
            self.respond(now, key, req, 400, None, &[], None);
            return;
        };
        let confirmed = self
            .calls
            .get(&call)
            .is_some_and(|c| c.dialog.state == crate::dialog::DialogState::Confirmed);
        if !confirmed {
            // Before the call is answered there is nothing to transfer.
            self.respond(now, key, req, 403, None, &[], None);
            return;
        }
        if self.refers.contains(&call) {
            // One transfer at a time per call: its subscription is still reporting.
            self.respond(now, key, req, 403, None, &[], None);
            return;
        }
        self.refers.insert(call);
        let transport = self
            .calls
            .get(&call)
            .map_or(crate::ids::Transport::Udp, |c| c.dialog.peer.transport);
        let contact = self.contact_header(transport);
        self.respond(now, key, req, 202, None, &[("Contact", contact)], None);
        self.events.push_back(Event::Refer { call, refer_to });
    }

    /// Sends a NOTIFY of the call's `refer` subscription with the referred call's
    /// `status` as sipfrag. A final status (200 and up) terminates the subscription.
    pub fn notify_refer(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
    ) -> Result<RequestHandle, CallError> {
        if !self.refers.contains(&call) {
            return Err(CallError::NoSubscription);
        }
        let Some(c) = self.calls.get(&call) else {
            return Err(CallError::UnknownCall);
        };
        let transport = c.dialog.peer.transport;
        let state = if status >= 200 {
            "terminated;reason=noresource".to_string()
        } else {
            "active;expires=60".to_string()
        };
        let branch = self.new_branch();
        let via = self.via_value(transport, &branch);
        let contact = self.contact_header(transport);
        let ua = self.config.user_agent.clone();
        let body = Body {
            content_type: "message/sipfrag;version=2.0".to_string(),
            bytes: sipfrag(status),
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return Err(CallError::UnknownCall);
        };
        let bytes = c.dialog.build_request_with(
            Method::Notify,
            &via,
            &ua,
            &[
                ("Event", "refer".to_string()),
                ("Subscription-State", state),
                ("Contact", contact),
            ],
            Some((&body.content_type, &body.bytes)),
        );
        let route = c.dialog.peer;
        if status >= 200 {
            self.refers.remove(&call);
        }
        let handle = RequestHandle(self.next_id());
        self.start_client(now, branch, bytes, route, handle, ClientPurpose::InDialog);
        Ok(handle)
    }
}

/// The URI of a Refer-To value (`<sip:1001@host>` or a bare URI), if it is SIP.
fn parse_refer_to(value: &str) -> Option<String> {
    let value = value.trim();
    let inner = match (value.find('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value),
    };
    let uri = Uri::parse(inner.trim()).ok()?;
    uri.as_sip()?;
    Some(uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_to_values_give_their_sip_uri() {
        assert_eq!(
            parse_refer_to("<sip:1001@192.0.2.1>").as_deref(),
            Some("sip:1001@192.0.2.1")
        );
        assert_eq!(
            parse_refer_to(" \"Bob\" <sip:1001@192.0.2.1;transport=udp> ").as_deref(),
            Some("sip:1001@192.0.2.1;transport=udp")
        );
        assert_eq!(
            parse_refer_to("sip:1001@192.0.2.1").as_deref(),
            Some("sip:1001@192.0.2.1")
        );
        assert_eq!(parse_refer_to("<tel:+15551234>"), None);
        assert_eq!(parse_refer_to("<garbage"), None);
    }

    #[test]
    fn sipfrag_is_a_status_line() {
        assert_eq!(sipfrag(100), b"SIP/2.0 100 Trying\r\n");
        assert_eq!(sipfrag(200), b"SIP/2.0 200 OK\r\n");
    }
}
