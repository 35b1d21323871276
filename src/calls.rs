//! The call layer: routes each incoming call by the dialplan, negotiates its media and
//! runs it in a task of its own, which owns the call's RTP sockets, its
//! [`sofia_media::MediaSession`] and its application (echo test, voice agent).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sofia_media::{CodecKind, MediaConfig, SdpSession, SessionConfig};
use sofia_sip::{Body, CallHandle, EndReason, Event, IncomingCall};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::agent::{Agent, AgentCall, AgentSlot};
use crate::config::{Application, Codec, Profile};
use crate::media::{self, CallPorts, PortPool};
use crate::metrics::{ActiveCall, Metrics};
use crate::sip::{CallCommand, CallNotice, EndpointHandle};

const SDP: &str = "application/sdp";

/// What the call layer needs from start-up.
pub struct CallLayer {
    pub profile: Profile,
    pub endpoint: EndpointHandle,
    pub ports: PortPool,
    /// The address written in SDP `c=` lines.
    pub media_ip: IpAddr,
    /// The voice agent, for calls the dialplan routes to it.
    pub agent: AgentSlot,
    pub metrics: Arc<Metrics>,
}

/// Where the switch is in its life, as the call layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Running,
    /// Shutting down: new calls get 503, calls in progress go on.
    Draining,
    /// Every call task hangs up now.
    HangUp,
}

/// Routes call notices until the endpoint task stops, or, once `lifecycle` leaves
/// `Running`, until no call is left.
pub async fn run(
    layer: CallLayer,
    mut notices: mpsc::Receiver<CallNotice>,
    mut lifecycle: watch::Receiver<Lifecycle>,
) {
    let mut calls: HashMap<CallHandle, mpsc::Sender<Event>> = HashMap::new();
    let mut recheck = tokio::time::interval(Duration::from_millis(100));
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => match notice {
                Some(notice) => notice,
                None => return,
            },
            _ = lifecycle.changed() => continue,
            _ = recheck.tick() => {
                calls.retain(|_, tx| !tx.is_closed());
                if *lifecycle.borrow() != Lifecycle::Running && calls.is_empty() {
                    return;
                }
                continue;
            }
        };
        match notice {
            CallNotice::Incoming(incoming) => {
                calls.retain(|_, tx| !tx.is_closed());
                if let Some(tx) = start_call(&layer, incoming, lifecycle.clone()).await {
                    calls.insert(tx.0, tx.1);
                }
            }
            CallNotice::Event(event) => {
                let call = match &event {
                    Event::CallConfirmed { call, .. }
                    | Event::CallCancelled { call }
                    | Event::CallEnded { call, .. }
                    | Event::ReInvite { call, .. }
                    | Event::Info { call, .. } => *call,
                    _ => continue,
                };
                let last = matches!(event, Event::CallCancelled { .. } | Event::CallEnded { .. });
                if let Some(tx) = calls.get(&call) {
                    let _ = tx.send(event).await;
                }
                if last {
                    calls.remove(&call);
                }
            }
        }
    }
}

fn codec_kind(codec: Codec) -> CodecKind {
    match codec {
        Codec::Pcmu => CodecKind::Pcmu,
        Codec::Pcma => CodecKind::Pcma,
        Codec::Opus => CodecKind::Opus,
    }
}

/// Routes, allocates ports, negotiates and answers (or rejects) a new call. Returns
/// the channel of the call's task when the call goes on.
async fn start_call(
    layer: &CallLayer,
    incoming: IncomingCall,
    lifecycle: watch::Receiver<Lifecycle>,
) -> Option<(CallHandle, mpsc::Sender<Event>)> {
    let call = incoming.call;
    let extension = incoming.user.clone().unwrap_or_default();
    let reject = |status| {
        layer.metrics.rejected(status);
        layer.endpoint.command(call, CallCommand::Reject(status))
    };
    if *lifecycle.borrow() != Lifecycle::Running {
        // Service Unavailable: the phone may try another server, or later.
        info!("new call while shutting down: 503");
        reject(503).await;
        return None;
    }
    let Some(application) = layer.profile.route(&extension) else {
        info!("call to unknown extension {extension:?}: 404");
        reject(404).await;
        return None;
    };
    let agent = match application {
        Application::Agent => match layer.agent.get() {
            Ok(agent) => {
                // Memory loads while the call is set up, not after it is answered.
                agent.prefetch(&caller_id(&incoming));
                Some(agent)
            }
            Err(why) => {
                // Refused honestly (Temporarily Unavailable) rather than answered with
                // silence.
                info!("call to {extension} (agent): {why}, 480");
                reject(480).await;
                return None;
            }
        },
        Application::Echo => None,
    };
    let Some(ports) = layer.ports.bind().await else {
        warn!("call to {extension}: no free RTP ports, 503");
        reject(503).await;
        return None;
    };
    let codecs = layer
        .profile
        .rtp
        .codecs
        .iter()
        .map(|c| codec_kind(*c))
        .collect();
    let config = MediaConfig::new(codecs, layer.media_ip, ports.pair.rtp);
    let mut sdp = SdpSession::new(config, rand::random::<u32>().into());
    let offer = incoming
        .body
        .as_ref()
        .filter(|b| b.content_type.eq_ignore_ascii_case(SDP));
    let (answer, params) = match offer {
        Some(offer) => match sdp.negotiate(&offer.bytes) {
            Ok(negotiated) => (negotiated.answer_sdp, Some(negotiated.params)),
            Err(e) => {
                let status = if e.is_not_acceptable() { 488 } else { 400 };
                info!("call to {extension}: offer refused ({e}), {status}");
                reject(status).await;
                return None;
            }
        },
        // Late offer (RFC 3264 5): we offer in the 200, the answer comes in the ACK.
        None => (sdp.create_offer(), None),
    };
    let (tx, rx) = mpsc::channel(16);
    let task = CallTask {
        call,
        extension,
        application,
        caller: caller_id(&incoming),
        call_id: incoming.call_id.to_string(),
        agent,
        metrics: Arc::clone(&layer.metrics),
        lifecycle,
        endpoint: layer.endpoint.clone(),
        ports,
        sdp,
        max_duration: Duration::from_secs(layer.profile.calls.max_duration_secs.into()),
        rtp_timeout: Duration::from_secs(layer.profile.calls.rtp_timeout_secs.into()),
    };
    let delay = Duration::from_millis(layer.profile.calls.answer_delay_ms.into());
    tokio::spawn(task.run(rx, answer, params, delay));
    Some((call, tx))
}

/// Who is calling, as memory keys it: the user that authenticated the INVITE, else the
/// user part of the From URI (never the display name, which the caller chooses freely).
fn caller_id(incoming: &IncomingCall) -> String {
    if let Some(user) = &incoming.authenticated_user {
        return user.clone();
    }
    let uri = incoming.from.trim_start_matches('<');
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .unwrap_or(uri);
    match rest.split_once('@') {
        Some((user, _)) => user.to_string(),
        None => rest.trim_end_matches('>').to_string(),
    }
}

/// The key of a SIP INFO DTMF request (the endpoint has answered it 200): the
/// `application/dtmf-relay` body (`Signal=5`, as Cisco and most phones send) or an
/// `application/dtmf` body (the bare key).
fn info_dtmf(body: &Body) -> Option<char> {
    let text = std::str::from_utf8(&body.bytes).ok()?;
    let content_type = body.content_type.to_ascii_lowercase();
    let key = if content_type == "application/dtmf-relay" {
        text.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("signal")
                .then(|| value.trim())
        })?
    } else if content_type == "application/dtmf" {
        text.trim()
    } else {
        return None;
    };
    let mut chars = key.chars();
    let digit = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && matches!(digit, '0'..='9' | '*' | '#' | 'A'..='D')).then_some(digit)
}

struct CallTask {
    call: CallHandle,
    extension: String,
    application: Application,
    caller: String,
    call_id: String,
    agent: Option<Arc<Agent>>,
    metrics: Arc<Metrics>,
    lifecycle: watch::Receiver<Lifecycle>,
    endpoint: EndpointHandle,
    ports: CallPorts,
    sdp: SdpSession,
    max_duration: Duration,
    rtp_timeout: Duration,
}

impl CallTask {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        answer: Vec<u8>,
        mut params: Option<sofia_media::MediaParams>,
        delay: Duration,
    ) {
        if !delay.is_zero() {
            self.endpoint.command(self.call, CallCommand::Ring).await;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                event = events.recv() => {
                    // Cancelled (or otherwise ended) while ringing.
                    info!("call to {} ended while ringing: {event:?}", self.extension);
                    return;
                }
            }
        }
        let body = Body {
            content_type: SDP.to_string(),
            bytes: answer,
        };
        self.endpoint
            .command(self.call, CallCommand::Answer(body))
            .await;
        let _active = ActiveCall::start(&self.metrics, self.application);
        info!(
            "call to {} ({}) from {} answered",
            self.extension, self.application, self.caller
        );

        // With a late offer, media starts once the ACK brings the answer.
        if params.is_none() {
            loop {
                match events.recv().await {
                    Some(Event::CallConfirmed {
                        body: Some(body), ..
                    }) => match self.sdp.handle_answer(&body.bytes) {
                        Ok(p) => {
                            params = Some(p);
                            break;
                        }
                        Err(e) => {
                            info!("call to {}: unusable answer in ACK ({e})", self.extension);
                            self.endpoint.command(self.call, CallCommand::Hangup).await;
                            return;
                        }
                    },
                    Some(Event::CallConfirmed { body: None, .. }) => {
                        info!("call to {}: ACK without the answer", self.extension);
                        self.endpoint.command(self.call, CallCommand::Hangup).await;
                        return;
                    }
                    Some(Event::CallEnded { .. } | Event::CallCancelled { .. }) | None => return,
                    Some(_) => {}
                }
            }
        }
        let Some(params) = params else { return };
        let config = SessionConfig {
            seed: rand::random(),
            inactivity_timeout: Some(self.rtp_timeout),
            echo: self.application == Application::Echo,
            // The echo test needs no 16 kHz copy; the agent's recogniser does.
            output_rate: (self.application != Application::Echo).then_some(16_000),
            cname: format!("sofia-phone-{}", self.call.0),
            ..SessionConfig::default()
        };
        let mut session = match media::new_session(params, config) {
            Ok(s) => s,
            Err(e) => {
                warn!("call to {}: cannot start media ({e})", self.extension);
                self.endpoint.command(self.call, CallCommand::Hangup).await;
                return;
            }
        };
        let mut agent = match &self.agent {
            Some(agent) => Some(agent.start_call(&self.caller, &self.call_id).await),
            None => None,
        };
        let ended = self
            .media_loop(&mut session, &mut events, agent.as_mut())
            .await;
        if let Some(agent) = agent.as_mut() {
            agent.finish(Instant::now());
        }
        if !ended {
            self.endpoint.command(self.call, CallCommand::Hangup).await;
        }
        let stats = session.stats();
        info!("call to {} over: {stats:?}", self.extension);
    }

    /// Runs media (and the agent, on an agent call) until the call ends. Returns true
    /// when the far end ended it.
    async fn media_loop(
        &mut self,
        session: &mut sofia_media::MediaSession,
        events: &mut mpsc::Receiver<Event>,
        mut agent: Option<&mut AgentCall>,
    ) -> bool {
        // The agent says goodbye at the limit itself; give it time to be heard.
        let grace = if agent.is_some() {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        };
        let deadline = tokio::time::Instant::now() + self.max_duration + grace;
        let mut rtp_buf = vec![0u8; 2048];
        let mut rtcp_buf = vec![0u8; 2048];
        let mut lifecycle = self.lifecycle.clone();
        loop {
            let mut wake = session.poll_timeout();
            if let Some(t) = agent.as_ref().and_then(|a| a.poll_timeout()) {
                wake = wake.min(t);
            }
            let wake = tokio::time::Instant::from_std(wake);
            tokio::select! {
                Some(result) = async {
                    match agent.as_mut() {
                        Some(a) => a.next_result().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(a) = agent.as_mut() {
                        a.handle_result(Instant::now(), result);
                    }
                }
                r = self.ports.rtp.recv_from(&mut rtp_buf) => {
                    if let Ok((n, from)) = r {
                        session.handle_datagram(Instant::now(), from, &rtp_buf[..n]);
                    }
                }
                r = self.ports.rtcp.recv_from(&mut rtcp_buf) => {
                    if let Ok((n, from)) = r {
                        session.handle_datagram(Instant::now(), from, &rtcp_buf[..n]);
                    }
                }
                _ = tokio::time::sleep_until(wake) => session.handle_timeout(Instant::now()),
                _ = tokio::time::sleep_until(deadline) => {
                    info!("call to {}: maximum duration reached", self.extension);
                    return false;
                }
                // (The guard `wait_for` returns is dropped at once: it is not `Send`.)
                _ = async { lifecycle.wait_for(|l| *l == Lifecycle::HangUp).await.map(|_| ()) } => {
                    info!("call to {}: hanging up, the switch is stopping", self.extension);
                    return false;
                }
                event = events.recv() => match event {
                    None | Some(Event::CallEnded { .. } | Event::CallCancelled { .. }) => {
                        if let Some(Event::CallEnded { reason, .. }) = &event {
                            if *reason != EndReason::RemoteBye {
                                info!("call to {} ended: {reason:?}", self.extension);
                            }
                        }
                        return true;
                    }
                    Some(Event::ReInvite { body, .. }) => self.handle_reinvite(session, body).await,
                    Some(Event::Info { body: Some(body), .. }) => {
                        if let Some(digit) = info_dtmf(&body) {
                            info!("call to {}: DTMF digit {digit} (SIP INFO)", self.extension);
                            if let Some(a) = agent.as_mut() {
                                a.handle_dtmf(Instant::now(), digit);
                            }
                        }
                    }
                    Some(_) => {}
                },
            }
            let now = Instant::now();
            while let Some(event) = session.poll_event() {
                match event {
                    sofia_media::Event::Inactive => {
                        info!(
                            "call to {}: no RTP for {:?}, hanging up",
                            self.extension, self.rtp_timeout
                        );
                        return false;
                    }
                    sofia_media::Event::Dtmf { digit, .. } => {
                        info!("call to {}: DTMF digit {digit}", self.extension);
                        if let Some(a) = agent.as_mut() {
                            a.handle_dtmf(now, digit);
                        }
                    }
                    sofia_media::Event::Latched { destination } => {
                        info!("call to {}: sending RTP to {destination}", self.extension);
                    }
                    sofia_media::Event::Audio(frame) => {
                        if let Some(a) = agent.as_mut() {
                            a.handle_audio(now, &frame.samples);
                        }
                    }
                }
            }
            if let Some(a) = agent.as_mut() {
                if let Some(reason) = a.drive(now, session) {
                    // The conversation asks only once its goodbye has played out.
                    info!(
                        "call to {}: the agent hangs up ({reason:?})",
                        self.extension
                    );
                    return false;
                }
            }
            // After the events and the agent: audio the agent queued (or flushed, on a
            // barge-in) just now is already reflected in what goes out.
            media::send_transmits(session, &self.ports, now);
        }
    }

    /// A re-INVITE (hold, unhold, session refresh): answer from the same SDP session.
    async fn handle_reinvite(
        &mut self,
        session: &mut sofia_media::MediaSession,
        body: Option<Body>,
    ) {
        let Some(body) = body.filter(|b| b.content_type.eq_ignore_ascii_case(SDP)) else {
            // An offerless re-INVITE: offer our current session (RFC 3264 8.1).
            let offer = self.sdp.create_offer();
            let body = Body {
                content_type: SDP.to_string(),
                bytes: offer,
            };
            self.endpoint
                .command(self.call, CallCommand::Answer(body))
                .await;
            return;
        };
        match self.sdp.negotiate(&body.bytes) {
            Ok(negotiated) => {
                if let Err(e) = session.update(Instant::now(), negotiated.params) {
                    warn!(
                        "call to {}: re-INVITE media update failed ({e})",
                        self.extension
                    );
                    self.endpoint
                        .command(self.call, CallCommand::Reject(488))
                        .await;
                    return;
                }
                let body = Body {
                    content_type: SDP.to_string(),
                    bytes: negotiated.answer_sdp,
                };
                self.endpoint
                    .command(self.call, CallCommand::Answer(body))
                    .await;
            }
            Err(e) => {
                let status = if e.is_not_acceptable() { 488 } else { 400 };
                info!(
                    "call to {}: re-INVITE offer refused ({e}), {status}",
                    self.extension
                );
                self.endpoint
                    .command(self.call, CallCommand::Reject(status))
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(content_type: &str, text: &str) -> Body {
        Body {
            content_type: content_type.to_string(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn sip_info_dtmf_bodies_give_their_key() {
        let relay = body("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n");
        assert_eq!(info_dtmf(&relay), Some('5'));
        let relay = body("Application/DTMF-Relay", "signal= #\r\nDuration=250");
        assert_eq!(info_dtmf(&relay), Some('#'));
        assert_eq!(info_dtmf(&body("application/dtmf", "9\r\n")), Some('9'));
        assert_eq!(info_dtmf(&body("application/dtmf", "d")), Some('D'));
    }

    #[test]
    fn other_info_bodies_are_not_dtmf() {
        assert_eq!(
            info_dtmf(&body("application/dtmf-relay", "Duration=160")),
            None
        );
        assert_eq!(
            info_dtmf(&body("application/dtmf-relay", "Signal=12")),
            None
        );
        assert_eq!(info_dtmf(&body("application/dtmf", "x")), None);
        assert_eq!(info_dtmf(&body("application/media_control+xml", "5")), None);
        let binary = Body {
            content_type: "application/dtmf".into(),
            bytes: vec![0xff, 0xfe],
        };
        assert_eq!(info_dtmf(&binary), None);
    }
}
