//! The call layer: routes each incoming call by the dialplan, negotiates its media and
//! runs it in a task of its own, which owns the call's RTP sockets, its
//! [`sofia_media::MediaSession`] and its application (echo test, voice agent).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use sofia_media::{CodecKind, MediaConfig, SdpSession, SessionConfig};
use sofia_sip::{Body, CallHandle, EndReason, Event, IncomingCall};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::config::{Application, Codec, Profile};
use crate::media::{self, CallPorts, PortPool};
use crate::sip::{CallCommand, CallNotice, EndpointHandle};

const SDP: &str = "application/sdp";

/// What the call layer needs from start-up.
pub struct CallLayer {
    pub profile: Profile,
    pub endpoint: EndpointHandle,
    pub ports: PortPool,
    /// The address written in SDP `c=` lines.
    pub media_ip: IpAddr,
}

/// Routes call notices until the endpoint task stops.
pub async fn run(layer: CallLayer, mut notices: mpsc::Receiver<CallNotice>) {
    let mut calls: HashMap<CallHandle, mpsc::Sender<Event>> = HashMap::new();
    while let Some(notice) = notices.recv().await {
        match notice {
            CallNotice::Incoming(incoming) => {
                calls.retain(|_, tx| !tx.is_closed());
                if let Some(tx) = start_call(&layer, incoming).await {
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
) -> Option<(CallHandle, mpsc::Sender<Event>)> {
    let call = incoming.call;
    let extension = incoming.user.clone().unwrap_or_default();
    let reject = |status| layer.endpoint.command(call, CallCommand::Reject(status));
    let Some(application) = layer.profile.route(&extension) else {
        info!("call to unknown extension {extension:?}: 404");
        reject(404).await;
        return None;
    };
    if application == Application::Agent {
        // The voice agent is wired in with the voice pipeline; until then the call is
        // refused honestly rather than answered with silence.
        info!("call to {extension} (agent): voice pipeline not available, 480");
        reject(480).await;
        return None;
    }
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
        caller: incoming
            .authenticated_user
            .clone()
            .unwrap_or(incoming.from.clone()),
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

struct CallTask {
    call: CallHandle,
    extension: String,
    application: Application,
    caller: String,
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
        let ended = self.media_loop(&mut session, &mut events).await;
        if !ended {
            self.endpoint.command(self.call, CallCommand::Hangup).await;
        }
        let stats = session.stats();
        info!("call to {} over: {stats:?}", self.extension);
    }

    /// Runs media until the call ends. Returns true when the far end ended it.
    async fn media_loop(
        &mut self,
        session: &mut sofia_media::MediaSession,
        events: &mut mpsc::Receiver<Event>,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + self.max_duration;
        let mut rtp_buf = vec![0u8; 2048];
        let mut rtcp_buf = vec![0u8; 2048];
        loop {
            let wake = tokio::time::Instant::from_std(session.poll_timeout());
            tokio::select! {
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
                    Some(_) => {}
                },
            }
            let now = Instant::now();
            media::send_transmits(session, &self.ports, now);
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
                    }
                    sofia_media::Event::Latched { destination } => {
                        info!("call to {}: sending RTP to {destination}", self.extension);
                    }
                    sofia_media::Event::Audio(_) => {}
                }
            }
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
