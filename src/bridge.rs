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

use sofia_media::{
    CodecKind, Direction, MediaConfig, MediaParams, MediaSession, NegotiationError, SdpSession,
    SessionConfig,
};
use sofia_sip::{Body, CallHandle, Event, Fork, ForkAction, OutgoingInvite, Transport};
use tokio::sync::watch;
use tracing::{debug, info, warn};

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
    pub(crate) srtp_policy: sofia_media::SrtpPolicy,
    /// For transfers (REFER): the ports for the new leg, and the users' extensions a
    /// transfer may go to.
    pub(crate) pool: crate::media::PortPool,
    pub(crate) users: Vec<String>,
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
        let config_b = MediaConfig::new(self.codecs.clone(), self.media_ip, self.ports_b.pair.rtp)
            .with_srtp(self.srtp_policy, media::srtp_key());
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
        let a = media::new_session(
            self.params_a.clone(),
            relay_session_config(self.rtp_timeout, params_b.clock_rate, self.call),
        );
        let b = media::new_session(
            params_b.clone(),
            relay_session_config(self.rtp_timeout, self.params_a.clock_rate, leg),
        );
        let srtp = (
            media::Srtp::for_params(&self.params_a),
            media::Srtp::for_params(&params_b),
        );
        let (mut a, mut b, mut srtp_a, mut srtp_b) = match (a, b, srtp) {
            (Ok(a), Ok(b), (Ok(sa), Ok(sb))) => (a, b, sa, sb),
            (a, b, _) => {
                warn!(
                    "call to {}: cannot start media or SRTP ({:?} / {:?})",
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
        let ends = |transfers| RelayEnds {
            endpoint: &self.endpoint,
            metrics: &self.metrics,
            extension: &self.extension,
            lifecycle: self.lifecycle.clone(),
            deadline,
            rtp_timeout: self.rtp_timeout,
            transfers,
        };
        // Until one side hangs up, or a transfer one side asked for connects the
        // other side elsewhere (a refused or failed one and the two talk on).
        loop {
            let ended = relay(
                ends(true),
                Leg {
                    call: self.call,
                    session: &mut a,
                    ports: &self.ports_a,
                    sdp: &mut self.sdp_a,
                    srtp: &mut srtp_a,
                },
                Leg {
                    call: leg,
                    session: &mut b,
                    ports: &self.ports_b,
                    sdp: &mut *sdp_b,
                    srtp: &mut srtp_b,
                },
                events,
            )
            .await;
            let Ended::Refer { by, refer_to } = ended else {
                ended.hang_up_the_rest(&self.endpoint, self.call, leg);
                return;
            };
            // RFC 3515 blind transfer: `by` (the transferor) asks that the other leg
            // (the transferee) be connected to the target.
            let target = crate::calls::uri_user(&refer_to);
            if !self.users.contains(&target) {
                info!(
                    "call to {}: REFER to {refer_to} refused, 403",
                    self.extension
                );
                self.metrics.transfer("refused");
                self.endpoint.command(by, CallCommand::NotifyRefer(403));
                continue;
            }
            self.metrics.transfer("accepted");
            self.endpoint.command(by, CallCommand::NotifyRefer(100));
            let (transferee, from_user) = if by == self.call {
                (leg, self.extension.clone())
            } else {
                (self.call, self.caller.clone())
            };
            info!(
                "call to {}: REFER from {by:?}: {transferee:?} to {target}",
                self.extension
            );
            let mut held = if transferee == leg {
                Leg {
                    call: leg,
                    session: &mut b,
                    ports: &self.ports_b,
                    sdp: &mut *sdp_b,
                    srtp: &mut srtp_b,
                }
            } else {
                Leg {
                    call: self.call,
                    session: &mut a,
                    ports: &self.ports_a,
                    sdp: &mut self.sdp_a,
                    srtp: &mut srtp_a,
                }
            };
            let through = put_through(
                PutThrough {
                    endpoint: &self.endpoint,
                    metrics: &self.metrics,
                    lifecycle: self.lifecycle.clone(),
                    owner: self.call,
                    extension: &self.extension,
                    pool: &self.pool,
                    codecs: &self.codecs,
                    media_ip: self.media_ip,
                    srtp_policy: self.srtp_policy,
                    ring: self.ring,
                    rtp_timeout: self.rtp_timeout,
                    from_user: &from_user,
                    authenticated: self.authenticated,
                },
                &mut held,
                events,
                &target,
            )
            .await;
            let mut person = match through {
                PutThroughResult::Answered(person) => person,
                PutThroughResult::Failed(status) => {
                    info!(
                        "call to {}: {target} did not take the transfer ({status})",
                        self.extension
                    );
                    self.metrics.transfer("failed");
                    self.endpoint.command(by, CallCommand::NotifyRefer(status));
                    continue;
                }
                PutThroughResult::Over => {
                    self.endpoint.command(by, CallCommand::NotifyRefer(487));
                    self.endpoint.command(by, CallCommand::Hangup);
                    return;
                }
            };
            self.metrics.transfer("connected");
            self.endpoint.command(by, CallCommand::NotifyRefer(200));
            // The transferor is done (phones hang up after the final NOTIFY anyway).
            self.endpoint.command(by, CallCommand::Hangup);
            let ended = relay(
                ends(false),
                held,
                Leg {
                    call: person.call,
                    session: &mut person.session,
                    ports: &person.ports,
                    sdp: &mut person.sdp,
                    srtp: &mut person.srtp,
                },
                events,
            )
            .await;
            ended.hang_up_the_rest(&self.endpoint, transferee, person.call);
            return;
        }
    }
}

/// A media session configured for relaying: its decoded audio comes out at the other
/// leg's clock rate, ready to be encoded there (the only resampling the relay does).
pub(crate) fn relay_session_config(
    rtp_timeout: Duration,
    other_rate: u32,
    call: CallHandle,
) -> SessionConfig {
    SessionConfig {
        seed: rand::random(),
        inactivity_timeout: Some(rtp_timeout),
        output_rate: Some(other_rate),
        cname: format!("sofia-phone-{}", call.0),
        ..SessionConfig::default()
    }
}

/// What a relayed call needs besides its two legs.
pub(crate) struct RelayEnds<'a> {
    pub endpoint: &'a EndpointHandle,
    pub metrics: &'a Metrics,
    pub extension: &'a str,
    pub lifecycle: watch::Receiver<Lifecycle>,
    pub deadline: tokio::time::Instant,
    pub rtp_timeout: Duration,
    /// Whether a REFER from either leg ends the relay for the caller to carry out
    /// ([`Ended::Refer`]); otherwise it gets a final NOTIFY 501.
    pub transfers: bool,
}

/// One leg of a relayed call (its session may have been running already, as when the
/// agent hands a caller to a person).
pub(crate) struct Leg<'a> {
    pub call: CallHandle,
    pub session: &'a mut MediaSession,
    pub ports: &'a CallPorts,
    pub sdp: &'a mut SdpSession,
    pub srtp: &'a mut Option<media::Srtp>,
}

/// Relays audio (and DTMF) between the two legs until one ends; re-INVITEs on either
/// leg are answered from its own SDP session, and hold or unhold on one leg is
/// mirrored onto the other as a re-INVITE from the switch. Returns who ended it.
pub(crate) async fn relay(
    ends: RelayEnds<'_>,
    a: Leg<'_>,
    b: Leg<'_>,
    events: &mut CallEvents,
) -> Ended {
    let RelayEnds {
        endpoint,
        metrics,
        extension,
        mut lifecycle,
        deadline,
        rtp_timeout,
        transfers,
    } = ends;
    let (call, leg) = (a.call, b.call);
    let (sa, pa, sdp_a, srtp_a) = (a.session, a.ports, a.sdp, a.srtp);
    let (sb, pb, sdp_b, srtp_b) = (b.session, b.ports, b.sdp, b.srtp);
    let refused = |ok: bool| {
        if !ok {
            metrics.srtp_auth_failures.inc();
        }
    };
    let (mut buf_a, mut buf_b) = (vec![0u8; 2048], vec![0u8; 2048]);
    let (mut rtcp_a, mut rtcp_b) = (vec![0u8; 2048], vec![0u8; 2048]);
    // Either session may have run before (the agent's call, a relay before a transfer):
    // only what was refused during this relay is counted here.
    let before = (sa.stats(), sb.stats());
    // Hold on one leg is mirrored onto the other; a leg that holds may stop sending
    // RTP without that ending the call.
    let (mut mirror_a, mut mirror_b) = (Mirror::new(extension), Mirror::new(extension));
    let (mut holding_a, mut holding_b) = (false, false);
    let ended = loop {
        let wake = tokio::time::Instant::from_std(sa.poll_timeout().min(sb.poll_timeout()));
        tokio::select! {
            r = pa.rtp.recv_from(&mut buf_a) => if let Ok((n, from)) = r {
                refused(media::receive(sa, srtp_a, Instant::now(), from, &buf_a[..n]));
            },
            r = pa.rtcp.recv_from(&mut rtcp_a) => if let Ok((n, from)) = r {
                refused(media::receive(sa, srtp_a, Instant::now(), from, &rtcp_a[..n]));
            },
            r = pb.rtp.recv_from(&mut buf_b) => if let Ok((n, from)) = r {
                refused(media::receive(sb, srtp_b, Instant::now(), from, &buf_b[..n]));
            },
            r = pb.rtcp.recv_from(&mut rtcp_b) => if let Ok((n, from)) = r {
                refused(media::receive(sb, srtp_b, Instant::now(), from, &rtcp_b[..n]));
            },
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                sa.handle_timeout(now);
                sb.handle_timeout(now);
            }
            _ = tokio::time::sleep_until(deadline) => {
                info!("call to {extension}: maximum duration reached");
                break Ended::Neither;
            }
            _ = async { lifecycle.wait_for(|l| *l == Lifecycle::HangUp).await.map(|_| ()) } => {
                break Ended::Neither;
            }
            event = events.recv() => match event {
                None => break Ended::Neither,
                Some(Event::CallEnded { call: c, .. } | Event::CallCancelled { call: c }) if c == call => {
                    break Ended::Caller;
                }
                Some(Event::CallEnded { call: c, .. }) if c == leg => break Ended::Callee,
                Some(Event::ReInvite { call: c, body }) if c == call => {
                    let asked = asked_direction(&body);
                    if answer_reinvite(endpoint, c, extension, sdp_a, sa, srtp_a, body) {
                        if let Some(asked) = asked {
                            holding_a = is_hold(asked);
                            mirror_b.follow(asked, leg, sdp_b, endpoint, metrics);
                        }
                    }
                }
                Some(Event::ReInvite { call: c, body }) if c == leg => {
                    let asked = asked_direction(&body);
                    if answer_reinvite(endpoint, c, extension, sdp_b, sb, srtp_b, body) {
                        if let Some(asked) = asked {
                            holding_b = is_hold(asked);
                            mirror_a.follow(asked, call, sdp_a, endpoint, metrics);
                        }
                    }
                }
                Some(Event::ReInviteAnswered { call: c, body }) if c == call => {
                    take_answer(extension, sdp_a, sa, srtp_a, body);
                    mirror_a.settled(call, sdp_a, endpoint, metrics);
                }
                Some(Event::ReInviteAnswered { call: c, body }) if c == leg => {
                    take_answer(extension, sdp_b, sb, srtp_b, body);
                    mirror_b.settled(leg, sdp_b, endpoint, metrics);
                }
                Some(Event::ReInviteFailed { call: c, status }) if c == call || c == leg => {
                    info!("call to {extension}: the switch's re-INVITE of {c:?} got {status}");
                    if c == call {
                        mirror_a.settled(call, sdp_a, endpoint, metrics);
                    } else {
                        mirror_b.settled(leg, sdp_b, endpoint, metrics);
                    }
                }
                Some(Event::Refer { call: c, refer_to }) if transfers => {
                    break Ended::Refer { by: c, refer_to };
                }
                Some(Event::Refer { call: c, refer_to }) => {
                    // A second transfer of a call that was transferred already.
                    info!("call to {extension}: REFER from {c:?} to {refer_to} not supported, 501");
                    metrics.transfer("refused");
                    endpoint.command(c, CallCommand::NotifyRefer(501));
                }
                Some(Event::Info { call: c, body: Some(body) }) => {
                    // SIP INFO DTMF goes on as RFC 4733 on the other leg.
                    if let Some(digit) = info_dtmf(&body) {
                        let to = if c == call { &mut *sb } else { &mut *sa };
                        pass_dtmf(to, digit, extension);
                    }
                }
                Some(_) => {}
            },
        }
        let inactive_a = pump(sa, sb, extension) && !holding_a;
        let inactive_b = pump(sb, sa, extension) && !holding_b;
        if inactive_a || inactive_b {
            info!("call to {extension}: no RTP for {rtp_timeout:?}, hanging up");
            break Ended::Neither;
        }
        let now = Instant::now();
        media::send_transmits(sa, pa, srtp_a, now);
        media::send_transmits(sb, pb, srtp_b, now);
    };
    let (after, stats_b) = (sa.stats(), sb.stats());
    let rejected_since = |now: &sofia_media::Stats, then: &sofia_media::Stats| {
        (now.rtp_rejected + now.rtcp_rejected)
            .saturating_sub(then.rtp_rejected + then.rtcp_rejected)
    };
    metrics
        .rtp_rejected_packets
        .inc_by(rejected_since(&after, &before.0) + rejected_since(&stats_b, &before.1));
    // A transfer goes on with one of the legs; the call is over only otherwise.
    if !matches!(ended, Ended::Refer { .. }) {
        info!("call to {extension} over: caller {after:?}, callee {stats_b:?}");
    }
    ended
}

/// The direction a re-INVITE's offer asks for, from the phone's side; `None` without
/// a readable SDP offer (the answer to it says what is wrong).
fn asked_direction(body: &Option<Body>) -> Option<Direction> {
    let body = body.as_ref().filter(|b| is_sdp(b))?;
    sofia_media::offered_direction(&body.bytes).ok()
}

/// Whether a phone asking for `asked` puts the call on hold (RFC 3264 8.4: it offers
/// sendonly, or inactive when it holds a call that already holds it).
fn is_hold(asked: Direction) -> bool {
    matches!(asked, Direction::SendOnly | Direction::Inactive)
}

/// The answer to the switch's re-INVITE of one leg: its media follows.
fn take_answer(
    extension: &str,
    sdp: &mut SdpSession,
    session: &mut MediaSession,
    srtp: &mut Option<media::Srtp>,
    body: Option<Body>,
) {
    let Some(body) = body.filter(is_sdp) else {
        warn!("call to {extension}: the answer to our re-INVITE has no SDP");
        return;
    };
    match sdp.handle_answer(&body.bytes) {
        Ok(params) => {
            match media::Srtp::for_params(&params) {
                Ok(new) => *srtp = new,
                Err(e) => warn!("call to {extension}: re-INVITE answer SRTP keys unusable ({e})"),
            }
            if let Err(e) = session.update(Instant::now(), params) {
                warn!("call to {extension}: media update after our re-INVITE failed ({e})");
            }
        }
        // The phone's own offer crossed ours and was answered first, from the same
        // direction: that exchange already set the media.
        Err(NegotiationError::AnswerWithoutOffer) => {
            debug!("call to {extension}: answer to a superseded offer ignored");
        }
        Err(e) => warn!("call to {extension}: the answer to our re-INVITE is unusable ({e})"),
    }
}

/// Hold and unhold mirrored onto one leg: the direction the switch offers that leg
/// follows what the other leg's phone asked for, one re-INVITE at a time (RFC 3261
/// 14.1); a change asked for while one is under way goes once it is settled.
struct Mirror<'a> {
    extension: &'a str,
    /// The direction last offered to this leg (the call starts sendrecv).
    offered: Direction,
    in_flight: bool,
}

impl<'a> Mirror<'a> {
    fn new(extension: &'a str) -> Self {
        Self {
            extension,
            offered: Direction::SendRecv,
            in_flight: false,
        }
    }

    /// The other leg's phone asked for `asked`: offer this leg the same hold state.
    fn follow(
        &mut self,
        asked: Direction,
        call: CallHandle,
        sdp: &mut SdpSession,
        endpoint: &EndpointHandle,
        metrics: &Metrics,
    ) {
        // The held phone is offered what the holder sends it: sendonly (music on hold
        // still flows) or inactive; anything else is no hold.
        let wanted = if is_hold(asked) {
            asked
        } else {
            Direction::SendRecv
        };
        // Set now, so an offer this leg's phone makes meanwhile is answered the same way.
        sdp.set_direction(wanted);
        self.send(call, sdp, endpoint, metrics);
    }

    /// The re-INVITE under way got its final response.
    fn settled(
        &mut self,
        call: CallHandle,
        sdp: &mut SdpSession,
        endpoint: &EndpointHandle,
        metrics: &Metrics,
    ) {
        self.in_flight = false;
        self.send(call, sdp, endpoint, metrics);
    }

    fn send(
        &mut self,
        call: CallHandle,
        sdp: &mut SdpSession,
        endpoint: &EndpointHandle,
        metrics: &Metrics,
    ) {
        let wanted = sdp.config().direction;
        if self.in_flight || wanted == self.offered {
            return;
        }
        self.offered = wanted;
        self.in_flight = true;
        metrics.reinvites_sent.inc();
        info!(
            "call to {}: re-INVITE of {call:?} with a={}, as the other leg asked",
            self.extension,
            wanted.attribute()
        );
        let body = Body {
            content_type: SDP.to_string(),
            bytes: sdp.create_offer(),
        };
        endpoint.command(call, CallCommand::ReInvite(body));
    }
}

/// Which side ended a relayed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    Caller,
    Callee,
    /// The switch did (limit, shutdown, media timeout): both legs get BYE.
    Neither,
    /// Leg `by` sent REFER (already answered 202): the other leg is to be put
    /// through to `refer_to`.
    Refer {
        by: CallHandle,
        refer_to: String,
    },
}

impl Ended {
    /// Hangs up the leg (or legs) that did not end the call themselves.
    pub(crate) fn hang_up_the_rest(
        self,
        endpoint: &EndpointHandle,
        caller: CallHandle,
        callee: CallHandle,
    ) {
        let rest: &[CallHandle] = match self {
            Ended::Caller => &[callee],
            Ended::Callee => &[caller],
            Ended::Neither | Ended::Refer { .. } => &[caller, callee],
        };
        for call in rest {
            endpoint.command(*call, CallCommand::Hangup);
        }
    }
}

/// Moves what `from` decoded into `to`'s send queue. Returns true when `from` reports
/// its RTP has stopped.
fn pump(from: &mut MediaSession, to: &mut MediaSession, extension: &str) -> bool {
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

pub(crate) fn pass_dtmf(to: &mut MediaSession, digit: char, extension: &str) {
    if let Err(e) = to.send_dtmf(Instant::now(), digit, DTMF_LENGTH) {
        info!("call to {extension}: DTMF {digit} not passed on ({e})");
    }
}

/// What putting a held party through to another user needs (see [`put_through`]).
pub(crate) struct PutThrough<'a> {
    pub endpoint: &'a EndpointHandle,
    pub metrics: &'a Metrics,
    pub lifecycle: watch::Receiver<Lifecycle>,
    /// The task's own call: the new legs' events go to its task.
    pub owner: CallHandle,
    /// For log lines: the extension the task's call was made to.
    pub extension: &'a str,
    pub pool: &'a crate::media::PortPool,
    pub codecs: &'a [CodecKind],
    pub media_ip: IpAddr,
    pub srtp_policy: sofia_media::SrtpPolicy,
    pub ring: Duration,
    pub rtp_timeout: Duration,
    /// Who the target's phones see calling, and whether the switch vouches for it.
    pub from_user: &'a str,
    pub authenticated: bool,
}

/// The answered party of [`put_through`], ready for [`relay`].
pub(crate) struct Person {
    pub call: CallHandle,
    pub session: MediaSession,
    pub ports: CallPorts,
    pub sdp: SdpSession,
    pub srtp: Option<media::Srtp>,
}

/// How [`put_through`] came out.
pub(crate) enum PutThroughResult {
    Answered(Box<Person>),
    /// Nobody took it: the status the phones gave (480 nobody registered, 408 no
    /// answer within the ring time, ...).
    Failed(u16),
    /// The held leg ended (or the switch is stopping); nothing is left ringing.
    Over,
}

/// Rings every phone of `target` (as a call between phones does) while `held`'s media
/// keeps going (its audio is not relayed anywhere meanwhile) and its re-INVITEs are
/// answered; returns the first phone to answer, with its media session started.
pub(crate) async fn put_through(
    t: PutThrough<'_>,
    held: &mut Leg<'_>,
    events: &mut CallEvents,
    target: &str,
) -> PutThroughResult {
    let held_call = held.call;
    let Leg {
        session,
        ports,
        sdp,
        srtp,
        ..
    } = held;
    let extension = t.extension;
    let Some(ports_t) = t.pool.bind().await else {
        warn!("call to {extension}: no free RTP ports to put the call through");
        return PutThroughResult::Failed(503);
    };
    let config = MediaConfig::new(t.codecs.to_vec(), t.media_ip, ports_t.pair.rtp)
        .with_srtp(t.srtp_policy, media::srtp_key());
    let mut sdp_t = SdpSession::new(config, rand::random::<u32>().into());
    let host = t.media_ip.to_string();
    let template = OutgoingInvite {
        destination: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        transport: Transport::Udp,
        request_uri: String::new(),
        to: format!("sip:{target}@{host}"),
        from_user: t.from_user.to_string(),
        from_display: None,
        asserted_identity: t
            .authenticated
            .then(|| format!("<sip:{}@{host}>", t.from_user)),
        body: Some(Body {
            content_type: SDP.to_string(),
            bytes: sdp_t.create_offer(),
        }),
    };
    info!("call to {extension}: handing {} to {target}", t.from_user);
    let mut placed = Some(t.endpoint.fork(ForkRequest {
        owner: t.owner,
        aor: target.to_string(),
        template,
    }));
    let mut fork: Option<Fork> = None;
    let give_up = |fork: &mut Option<Fork>| {
        for leg in fork.as_mut().map(|f| f.give_up()).unwrap_or_default() {
            t.endpoint.command(leg, CallCommand::Hangup);
        }
    };
    let deadline = tokio::time::Instant::now() + t.ring;
    let mut lifecycle = t.lifecycle.clone();
    let (mut rtp_buf, mut rtcp_buf) = (vec![0u8; 2048], vec![0u8; 2048]);
    let refused = |ok: bool| {
        if !ok {
            t.metrics.srtp_auth_failures.inc();
        }
    };
    let (winner, params) = loop {
        let wake = tokio::time::Instant::from_std(session.poll_timeout());
        tokio::select! {
            legs = async { placed.as_mut().expect("guarded").await }, if placed.is_some() => {
                placed = None;
                match legs {
                    Ok(legs) if !legs.is_empty() => {
                        t.metrics.bridge_legs.inc_by(legs.len() as u64);
                        fork = Some(Fork::new(legs));
                    }
                    _ => return PutThroughResult::Failed(480),
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                give_up(&mut fork);
                return PutThroughResult::Failed(408);
            }
            r = ports.rtp.recv_from(&mut rtp_buf) => if let Ok((n, from)) = r {
                refused(media::receive(session, srtp, Instant::now(), from, &rtp_buf[..n]));
            },
            r = ports.rtcp.recv_from(&mut rtcp_buf) => if let Ok((n, from)) = r {
                refused(media::receive(session, srtp, Instant::now(), from, &rtcp_buf[..n]));
            },
            _ = tokio::time::sleep_until(wake) => session.handle_timeout(Instant::now()),
            _ = async { lifecycle.wait_for(|l| *l == Lifecycle::HangUp).await.map(|_| ()) } => {
                give_up(&mut fork);
                t.endpoint.command(held_call, CallCommand::Hangup);
                return PutThroughResult::Over;
            }
            event = events.recv() => match event {
                None => {
                    give_up(&mut fork);
                    return PutThroughResult::Over;
                }
                Some(Event::CallEnded { call, .. } | Event::CallCancelled { call }) if call == held_call => {
                    info!("call to {extension}: {held_call:?} hung up while {target} rang");
                    give_up(&mut fork);
                    return PutThroughResult::Over;
                }
                Some(Event::CallAnswered { call, body }) => {
                    let Some(f) = fork.as_mut() else { continue };
                    match f.answered(call) {
                        ForkAction::Connect { winner, cancel } => {
                            for leg in cancel {
                                t.endpoint.command(leg, CallCommand::Hangup);
                            }
                            match body.filter(is_sdp).map(|b| sdp_t.handle_answer(&b.bytes)) {
                                Some(Ok(params)) => break (winner, params),
                                _ => {
                                    t.endpoint.command(winner, CallCommand::Hangup);
                                    return PutThroughResult::Failed(488);
                                }
                            }
                        }
                        ForkAction::HangUp(late) => t.endpoint.command(late, CallCommand::Hangup),
                        _ => {}
                    }
                }
                Some(Event::CallFailed { call, status }) => {
                    if let Some(ForkAction::Fail(code)) = fork.as_mut().map(|f| f.failed(call, status)) {
                        return PutThroughResult::Failed(code);
                    }
                }
                Some(Event::ReInvite { call, body }) if call == held_call => {
                    answer_reinvite(t.endpoint, call, extension, sdp, session, srtp, body);
                }
                // One transfer at a time: another one asked for while this rings is
                // refused over its own subscription.
                Some(Event::Refer { call, .. }) => {
                    t.metrics.transfer("refused");
                    t.endpoint.command(call, CallCommand::NotifyRefer(491));
                }
                Some(_) => {}
            },
        }
        while let Some(event) = session.poll_event() {
            if matches!(event, sofia_media::Event::Inactive) {
                give_up(&mut fork);
                t.endpoint.command(held_call, CallCommand::Hangup);
                return PutThroughResult::Over;
            }
        }
        media::send_transmits(session, ports, srtp, Instant::now());
    };
    info!("call to {extension}: {target} answered; {held_call:?} is connected");
    let srtp_t = media::Srtp::for_params(&params);
    let session_t = media::new_session(
        params,
        relay_session_config(t.rtp_timeout, session.params().clock_rate, winner),
    );
    match (srtp_t, session_t) {
        (Ok(srtp), Ok(session)) => PutThroughResult::Answered(Box::new(Person {
            call: winner,
            session,
            ports: ports_t,
            sdp: sdp_t,
            srtp,
        })),
        (srtp, session) => {
            warn!(
                "call to {extension}: cannot start {target}'s media or SRTP ({:?} / {:?})",
                srtp.err(),
                session.err()
            );
            t.endpoint.command(winner, CallCommand::Hangup);
            PutThroughResult::Failed(500)
        }
    }
}
