//! Calls between phones: the switch as a back-to-back user agent. The caller's call
//! (leg A, which the switch answers) and a call the switch places to each phone
//! registered as the dialled user (legs B, forked in parallel; the first to answer
//! wins, the others are cancelled) are two dialogs with two media sessions. Decoded
//! audio goes from one session into the other, so legs that chose different codecs
//! (PCMU, PCMA, Opus) are transcoded on the way, DTMF is passed on as RFC 4733 events,
//! and either side's BYE ends both.
//!
//! The caller hears 180 once a phone rings; nobody registered is 480, every phone busy
//! 486, no answer within `calls.ring_secs` 408 (see `sofia_sip::Fork` for the choice).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sofia_media::{CodecKind, MediaConfig, MediaParams, MediaSession, SdpSession, SessionConfig};
use sofia_sip::{Body, CallHandle, Event, Fork, ForkAction, OutgoingInvite, Transport};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::calls::{answer_reinvite, info_dtmf, is_sdp, CallEvents, Lifecycle, SDP};
use crate::config::Application;
use crate::media::{self, CallPorts};
use crate::metrics::{ActiveCall, Metrics};
use crate::sip::{CallCommand, EndpointHandle, ForkRequest};

/// Relayed audio waiting to be sent beyond this is dropped: the two legs' clocks drift
/// apart a little, and a growing queue would be growing delay.
const RELAY_MAX_QUEUED: Duration = Duration::from_millis(120);
/// Length of a DTMF tone passed on from the other leg.
const DTMF_LENGTH: Duration = Duration::from_millis(100);

/// One call from a phone to a user's phones, from routing to hang-up.
pub(crate) struct Bridge {
    pub(crate) call: CallHandle,
    pub(crate) extension: String,
    /// Who calls (the authenticated user, else the From user), and their display name.
    pub(crate) caller: String,
    pub(crate) caller_display: Option<String>,
    /// Whether the caller authenticated: only then does the switch assert the identity.
    pub(crate) authenticated: bool,
    /// Host for the URIs the switch writes (To, P-Asserted-Identity).
    pub(crate) host: String,
    pub(crate) endpoint: EndpointHandle,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) lifecycle: watch::Receiver<Lifecycle>,
    pub(crate) ports_a: CallPorts,
    /// Leg A's SDP session, its answer to the caller's offer, and the media it set.
    pub(crate) sdp_a: SdpSession,
    pub(crate) answer_a: Vec<u8>,
    pub(crate) params_a: MediaParams,
    pub(crate) ports_b: CallPorts,
    pub(crate) codecs: Vec<CodecKind>,
    pub(crate) media_ip: IpAddr,
    pub(crate) ring: Duration,
    pub(crate) max_duration: Duration,
    pub(crate) rtp_timeout: Duration,
}

/// What ringing came to.
enum Rang {
    Answered {
        leg: CallHandle,
        params: MediaParams,
    },
    Over,
}

impl Bridge {
    pub(crate) async fn run(mut self, mut events: CallEvents) {
        let config_b = MediaConfig::new(self.codecs.clone(), self.media_ip, self.ports_b.pair.rtp);
        let mut sdp_b = SdpSession::new(config_b, rand::random::<u32>().into());
        let template = OutgoingInvite {
            destination: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
            transport: Transport::Udp,
            request_uri: String::new(),
            to: format!("sip:{}@{}", self.extension, self.host),
            from_user: self.caller.clone(),
            from_display: self.caller_display.clone(),
            asserted_identity: self
                .authenticated
                .then(|| format!("<sip:{}@{}>", self.caller, self.host)),
            body: Some(Body {
                content_type: SDP.to_string(),
                bytes: sdp_b.create_offer(),
            }),
        };
        let placed = self.endpoint.fork(ForkRequest {
            owner: self.call,
            aor: self.extension.clone(),
            template,
        });
        let Ok(legs) = placed.await else { return };
        if legs.is_empty() {
            info!("call to {}: no phone registered, 480", self.extension);
            self.reject(480);
            return;
        }
        self.metrics.bridge_legs.inc_by(legs.len() as u64);
        info!(
            "call to {} from {}: ringing {} phone(s)",
            self.extension,
            self.caller,
            legs.len()
        );
        let mut fork = Fork::new(legs);
        let Rang::Answered { leg, params } = self.ring(&mut events, &mut fork, &mut sdp_b).await
        else {
            return;
        };
        self.endpoint.command(
            self.call,
            CallCommand::Answer(Body {
                content_type: SDP.to_string(),
                bytes: std::mem::take(&mut self.answer_a),
            }),
        );
        info!(
            "call to {} from {} answered: {:?} <-> {:?}",
            self.extension, self.caller, self.params_a.codec, params.codec
        );
        self.connected(&mut events, leg, params, &mut sdp_b).await;
    }

    fn reject(&self, status: u16) {
        self.metrics.rejected(status);
        self.endpoint
            .command(self.call, CallCommand::Reject(status));
    }

    fn hang_up(&self, call: CallHandle) {
        self.endpoint.command(call, CallCommand::Hangup);
    }

    /// Rings the phones until one answers (then the others are cancelled), all fail,
    /// the ring time is up, or the caller gives up.
    async fn ring(
        &mut self,
        events: &mut CallEvents,
        fork: &mut Fork,
        sdp_b: &mut SdpSession,
    ) -> Rang {
        let deadline = tokio::time::Instant::now() + self.ring;
        let mut rang = false;
        let mut lifecycle = self.lifecycle.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    info!("call to {}: no answer within {:?}, 408", self.extension, self.ring);
                    fork.give_up().into_iter().for_each(|l| self.hang_up(l));
                    self.reject(408);
                    return Rang::Over;
                }
                _ = async { lifecycle.wait_for(|l| *l == Lifecycle::HangUp).await.map(|_| ()) } => {
                    fork.give_up().into_iter().for_each(|l| self.hang_up(l));
                    self.reject(503);
                    return Rang::Over;
                }
                event = events.recv() => match event {
                    None => {
                        fork.give_up().into_iter().for_each(|l| self.hang_up(l));
                        return Rang::Over;
                    }
                    Some(Event::CallEnded { call, .. } | Event::CallCancelled { call })
                        if call == self.call =>
                    {
                        info!("call to {}: the caller hung up while ringing", self.extension);
                        fork.give_up().into_iter().for_each(|l| self.hang_up(l));
                        return Rang::Over;
                    }
                    Some(Event::CallProgress { call, status, .. }) if fork.contains(call) => {
                        if !rang && (180..=183).contains(&status) {
                            rang = true;
                            self.endpoint.command(self.call, CallCommand::Ring);
                        }
                    }
                    Some(Event::CallAnswered { call, body }) => match fork.answered(call) {
                        ForkAction::Connect { winner, cancel } => {
                            cancel.into_iter().for_each(|l| self.hang_up(l));
                            let params = body
                                .filter(is_sdp)
                                .map(|b| sdp_b.handle_answer(&b.bytes));
                            match params {
                                Some(Ok(params)) => return Rang::Answered { leg: winner, params },
                                other => {
                                    warn!(
                                        "call to {}: the phone answered without usable SDP ({:?}), 488",
                                        self.extension,
                                        other.map(|r| r.err())
                                    );
                                    self.hang_up(winner);
                                    self.reject(488);
                                    return Rang::Over;
                                }
                            }
                        }
                        ForkAction::HangUp(late) => self.hang_up(late),
                        _ => {}
                    },
                    Some(Event::CallFailed { call, status }) => {
                        if let ForkAction::Fail(code) = fork.failed(call, status) {
                            // Every phone said no; a CANCEL's 487 means nothing to
                            // the caller.
                            let code = if code == 487 { 480 } else { code };
                            info!("call to {}: no phone took it, {code}", self.extension);
                            self.reject(code);
                            return Rang::Over;
                        }
                    }
                    Some(_) => {}
                },
            }
        }
    }

    /// The connected call: audio both ways until either side hangs up.
    async fn connected(
        &mut self,
        events: &mut CallEvents,
        leg: CallHandle,
        params_b: MediaParams,
        sdp_b: &mut SdpSession,
    ) {
        let session_config = |output_rate: u32, cname: String| SessionConfig {
            seed: rand::random(),
            inactivity_timeout: Some(self.rtp_timeout),
            // Each leg's decoded audio comes out at the other leg's rate, ready to be
            // encoded there: the only resampling the relay does.
            output_rate: Some(output_rate),
            cname,
            ..SessionConfig::default()
        };
        let a = media::new_session(
            self.params_a.clone(),
            session_config(params_b.clock_rate, format!("sofia-phone-{}", self.call.0)),
        );
        let b = media::new_session(
            params_b.clone(),
            session_config(self.params_a.clock_rate, format!("sofia-phone-{}", leg.0)),
        );
        let (mut a, mut b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                warn!(
                    "call to {}: cannot start media ({:?} / {:?})",
                    self.extension,
                    a.err(),
                    b.err()
                );
                self.hang_up(self.call);
                self.hang_up(leg);
                return;
            }
        };
        let _active = ActiveCall::start(&self.metrics, Application::User);
        let deadline = tokio::time::Instant::now() + self.max_duration;
        let mut lifecycle = self.lifecycle.clone();
        let (mut buf_a, mut buf_b) = (vec![0u8; 2048], vec![0u8; 2048]);
        let (mut rtcp_a, mut rtcp_b) = (vec![0u8; 2048], vec![0u8; 2048]);
        let ended = loop {
            let wake = tokio::time::Instant::from_std(a.poll_timeout().min(b.poll_timeout()));
            tokio::select! {
                r = self.ports_a.rtp.recv_from(&mut buf_a) => if let Ok((n, from)) = r {
                    a.handle_datagram(Instant::now(), from, &buf_a[..n]);
                },
                r = self.ports_a.rtcp.recv_from(&mut rtcp_a) => if let Ok((n, from)) = r {
                    a.handle_datagram(Instant::now(), from, &rtcp_a[..n]);
                },
                r = self.ports_b.rtp.recv_from(&mut buf_b) => if let Ok((n, from)) = r {
                    b.handle_datagram(Instant::now(), from, &buf_b[..n]);
                },
                r = self.ports_b.rtcp.recv_from(&mut rtcp_b) => if let Ok((n, from)) = r {
                    b.handle_datagram(Instant::now(), from, &rtcp_b[..n]);
                },
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    a.handle_timeout(now);
                    b.handle_timeout(now);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    info!("call to {}: maximum duration reached", self.extension);
                    break Ended::Neither;
                }
                _ = async { lifecycle.wait_for(|l| *l == Lifecycle::HangUp).await.map(|_| ()) } => {
                    break Ended::Neither;
                }
                event = events.recv() => match event {
                    None => break Ended::Neither,
                    Some(Event::CallEnded { call, .. } | Event::CallCancelled { call }) if call == self.call => {
                        break Ended::Caller;
                    }
                    Some(Event::CallEnded { call, .. }) if call == leg => break Ended::Callee,
                    Some(Event::ReInvite { call, body }) if call == self.call => {
                        answer_reinvite(&self.endpoint, call, &self.extension, &mut self.sdp_a, &mut a, body);
                    }
                    Some(Event::ReInvite { call, body }) if call == leg => {
                        answer_reinvite(&self.endpoint, call, &self.extension, sdp_b, &mut b, body);
                    }
                    Some(Event::Info { call, body: Some(body) }) => {
                        // SIP INFO DTMF goes on as RFC 4733 on the other leg.
                        if let Some(digit) = info_dtmf(&body) {
                            let to = if call == self.call { &mut b } else { &mut a };
                            pass_dtmf(to, digit, &self.extension);
                        }
                    }
                    Some(_) => {}
                },
            }
            let inactive_a = relay(&mut a, &mut b, &self.extension);
            let inactive_b = relay(&mut b, &mut a, &self.extension);
            if inactive_a || inactive_b {
                info!(
                    "call to {}: no RTP for {:?}, hanging up",
                    self.extension, self.rtp_timeout
                );
                break Ended::Neither;
            }
            let now = Instant::now();
            media::send_transmits(&mut a, &self.ports_a, now);
            media::send_transmits(&mut b, &self.ports_b, now);
        };
        match ended {
            Ended::Caller => self.hang_up(leg),
            Ended::Callee => self.hang_up(self.call),
            Ended::Neither => {
                self.hang_up(self.call);
                self.hang_up(leg);
            }
        }
        let (sa, sb) = (a.stats(), b.stats());
        let rejected = sa.rtp_rejected + sa.rtcp_rejected + sb.rtp_rejected + sb.rtcp_rejected;
        self.metrics.rtp_rejected_packets.inc_by(rejected);
        info!(
            "call to {} over: caller {sa:?}, callee {sb:?}",
            self.extension
        );
    }
}

/// Which side ended a connected call.
enum Ended {
    Caller,
    Callee,
    /// The switch did (limit, shutdown, media timeout): both legs get BYE.
    Neither,
}

/// Moves what `from` decoded into `to`'s send queue. Returns true when `from` reports
/// its RTP has stopped.
fn relay(from: &mut MediaSession, to: &mut MediaSession, extension: &str) -> bool {
    let mut inactive = false;
    while let Some(event) = from.poll_event() {
        match event {
            sofia_media::Event::Audio(frame) => {
                if to.queued_playback() > RELAY_MAX_QUEUED {
                    to.flush_playback();
                }
                let _ = to.queue_playback(&frame.samples, frame.sample_rate);
            }
            sofia_media::Event::Dtmf { digit, .. } => pass_dtmf(to, digit, extension),
            sofia_media::Event::Inactive => inactive = true,
            sofia_media::Event::Latched { .. } => {}
        }
    }
    inactive
}

fn pass_dtmf(to: &mut MediaSession, digit: char, extension: &str) {
    if let Err(e) = to.send_dtmf(Instant::now(), digit, DTMF_LENGTH) {
        info!("call to {extension}: DTMF {digit} not passed on ({e})");
    }
}
