//! The call layer: routes each incoming call by the dialplan, negotiates its media and
//! runs it in a task of its own, which owns the call's RTP sockets, its
//! [`sofia_media::MediaSession`] and its application (echo test, voice agent).
//!
//! The router never waits on a call task: events go to a call's bounded channel with
//! `try_send` (an INFO flood into a busy call is dropped; a re-INVITE that finds the
//! channel full gets 500 + Retry-After), and the one event that must never be lost,
//! the end of the call, travels on a oneshot of its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sofia_media::{CodecKind, MediaConfig, SdpSession, SessionConfig};
use sofia_sip::{Body, CallHandle, EndReason, Event, IncomingCall};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::agent::{Agent, AgentCall, AgentRequest, AgentSlot};
use crate::config::{Application, Codec, Profile};
use crate::media::{self, CallPorts, PortPool};
use crate::metrics::{ActiveCall, Metrics};
use crate::sip::{CallCommand, CallNotice, EndpointHandle};

pub(crate) const SDP: &str = "application/sdp";

/// What the call layer needs from start-up.
pub struct CallLayer {
    pub profile: Profile,
    pub endpoint: EndpointHandle,
    pub ports: PortPool,
    /// The address written in SDP `c=` lines.
    pub media_ip: IpAddr,
    /// The voice agent, for calls the dialplan routes to it.
    pub agent: AgentSlot,
    /// Concurrent agent calls beyond which a new one gets 486 + Retry-After.
    pub agent_max_calls: usize,
    pub metrics: Arc<Metrics>,
}

/// Agent calls in progress; each call task holds an [`AgentCallSlot`].
#[derive(Debug, Default)]
pub struct AgentCalls(AtomicUsize);

/// One agent call's place in [`AgentCalls`], given back on drop.
struct AgentCallSlot(Arc<AgentCalls>);

impl AgentCalls {
    fn admit(self: &Arc<Self>, max: usize) -> Option<AgentCallSlot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| AgentCallSlot(Arc::clone(self)))
    }
}

impl Drop for AgentCallSlot {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Events of a call still in progress; capacity kept free for the ones that matter.
const CALL_EVENTS: usize = 64;
/// INFO events are dropped once fewer than this many places are left, so that a
/// flood cannot crowd out an ACK's answer or a re-INVITE.
const CALL_EVENTS_RESERVED: usize = 8;

/// How the router reaches one call task.
struct CallRoute {
    events: mpsc::Sender<Event>,
    ended: Option<oneshot::Sender<Event>>,
}

/// What a call task receives: its events, and the end of the call, which has a
/// channel of its own and comes first.
pub(crate) struct CallEvents {
    events: mpsc::Receiver<Event>,
    ended: oneshot::Receiver<Event>,
    /// The end of the call has been received.
    end_seen: bool,
    over: bool,
}

impl CallEvents {
    /// The next event; `None` once the router has nothing more for this task: after
    /// the end of the call, or, when the task still has calls it placed (a transfer
    /// whose transferor was this call), after their ends too.
    pub(crate) async fn recv(&mut self) -> Option<Event> {
        if self.over {
            return None;
        }
        if self.end_seen {
            let event = self.events.recv().await;
            self.over = event.is_none();
            return event;
        }
        tokio::select! {
            biased;
            end = &mut self.ended => {
                self.end_seen = true;
                if end.is_err() {
                    self.over = true;
                }
                end.ok()
            }
            event = self.events.recv() => {
                if event.is_none() {
                    self.over = true;
                }
                event
            }
        }
    }
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
    mut notices: mpsc::UnboundedReceiver<CallNotice>,
    mut lifecycle: watch::Receiver<Lifecycle>,
) {
    let mut calls: HashMap<CallHandle, CallRoute> = HashMap::new();
    // Calls the switch placed (B2BUA legs) -> the inbound call whose task owns them.
    let mut legs: HashMap<CallHandle, CallHandle> = HashMap::new();
    let agent_calls = Arc::new(AgentCalls::default());
    let mut recheck = tokio::time::interval(Duration::from_millis(100));
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => match notice {
                Some(notice) => notice,
                None => return,
            },
            _ = lifecycle.changed() => continue,
            _ = recheck.tick() => {
                calls.retain(|_, route| !route.events.is_closed());
                if *lifecycle.borrow() != Lifecycle::Running && calls.is_empty() {
                    return;
                }
                continue;
            }
        };
        match notice {
            CallNotice::Incoming(incoming) => {
                calls.retain(|_, route| !route.events.is_closed());
                if let Some((call, route)) =
                    start_call(&layer, &agent_calls, incoming, lifecycle.clone()).await
                {
                    calls.insert(call, route);
                }
            }
            CallNotice::Legs {
                owner,
                legs: placed,
            } => {
                for leg in placed {
                    legs.insert(leg, owner);
                }
            }
            CallNotice::Event(event) => {
                let call = match &event {
                    Event::CallConfirmed { call, .. }
                    | Event::CallCancelled { call }
                    | Event::CallEnded { call, .. }
                    | Event::ReInvite { call, .. }
                    | Event::Info { call, .. }
                    | Event::CallProgress { call, .. }
                    | Event::CallAnswered { call, .. }
                    | Event::CallFailed { call, .. }
                    | Event::ReInviteAnswered { call, .. }
                    | Event::ReInviteFailed { call, .. }
                    | Event::Refer { call, .. } => *call,
                    _ => continue,
                };
                if let Some(owner) = legs.get(&call).copied() {
                    let last = matches!(event, Event::CallEnded { .. } | Event::CallFailed { .. });
                    if last {
                        legs.remove(&call);
                    }
                    // (A route whose task has finished counts as gone.)
                    match calls.get(&owner).filter(|r| !r.events.is_closed()) {
                        Some(route) => deliver(&layer, route, call, event),
                        // Its owner is gone (the caller hung up as this phone answered):
                        // nobody wants this leg.
                        None if !last => layer.endpoint.command(call, CallCommand::Hangup),
                        None => {}
                    }
                    // An owner that ended before its legs (transferred away) is done
                    // with its last leg.
                    let owner_ended = calls.get(&owner).is_some_and(|r| r.ended.is_none());
                    if last && owner_ended && !legs.values().any(|o| *o == owner) {
                        calls.remove(&owner);
                    }
                    continue;
                }
                let last = matches!(event, Event::CallCancelled { .. } | Event::CallEnded { .. });
                if last {
                    if let Some(ended) = calls.get_mut(&call).and_then(|r| r.ended.take()) {
                        let _ = ended.send(event);
                    }
                    // Calls it placed may go on (the caller transferred the phone it
                    // called): the task keeps getting their events until they end.
                    if !legs.values().any(|o| *o == call) {
                        calls.remove(&call);
                    }
                    continue;
                }
                if let Some(route) = calls.get(&call) {
                    deliver(&layer, route, call, event);
                }
            }
        }
    }
}

/// Hands an event of `call` to its task without waiting: an INFO is dropped when the
/// task is not keeping up, a re-INVITE that finds no room gets 500 + Retry-After.
fn deliver(layer: &CallLayer, route: &CallRoute, call: CallHandle, event: Event) {
    if matches!(event, Event::Info { .. }) && route.events.capacity() < CALL_EVENTS_RESERVED {
        warn!("call {call:?}: INFO dropped, the call is not keeping up");
        return;
    }
    let reinvite = matches!(event, Event::ReInvite { .. });
    if let Err(e) = route.events.try_send(event) {
        if reinvite {
            layer.endpoint.command(call, CallCommand::Reject(500));
        } else {
            warn!("call {call:?}: event dropped, the call is not keeping up: {e}");
        }
    }
}

/// The users' extensions: where a REFER may send a call.
fn user_extensions(profile: &Profile) -> Vec<String> {
    profile.users.iter().map(|u| u.extension.clone()).collect()
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
    agent_calls: &Arc<AgentCalls>,
    incoming: IncomingCall,
    lifecycle: watch::Receiver<Lifecycle>,
) -> Option<(CallHandle, CallRoute)> {
    let call = incoming.call;
    let extension = incoming.user.clone().unwrap_or_default();
    let reject = |status| {
        layer.metrics.rejected(status);
        layer.endpoint.command(call, CallCommand::Reject(status))
    };
    if *lifecycle.borrow() != Lifecycle::Running {
        // Service Unavailable: the phone may try another server, or later.
        info!("new call while shutting down: 503");
        reject(503);
        return None;
    }
    let Some(application) = layer.profile.route(&extension) else {
        info!("call to unknown extension {extension:?}: 404");
        reject(404);
        return None;
    };
    let (agent, agent_slot) = match application {
        Application::Agent => match layer.agent.get() {
            Ok(agent) => {
                // Admission: past what this CPU transcribes in time, a caller is told
                // "busy, retry later" rather than answered and failed mid-call.
                let Some(slot) = agent_calls.admit(layer.agent_max_calls) else {
                    info!(
                        "call to {extension} (agent): {} agent calls in progress, 486",
                        layer.agent_max_calls
                    );
                    layer.metrics.admission_reject("agent_max_calls");
                    reject(486);
                    return None;
                };
                // Memory loads while the call is set up, not after it is answered.
                agent.prefetch(&caller_id(&incoming));
                (Some(agent), Some(slot))
            }
            Err(why) => {
                // Refused honestly (Temporarily Unavailable) rather than answered with
                // silence.
                info!("call to {extension} (agent): {why}, 480");
                reject(480);
                return None;
            }
        },
        Application::Echo | Application::User => (None, None),
    };
    let Some(ports) = layer.ports.bind().await else {
        warn!("call to {extension}: no free RTP ports, 503");
        reject(503);
        return None;
    };
    let codecs = layer
        .profile
        .rtp
        .codecs
        .iter()
        .map(|c| codec_kind(*c))
        .collect();
    let config = MediaConfig::new(codecs, layer.media_ip, ports.pair.rtp)
        .with_srtp(layer.profile.rtp.srtp.policy(), media::srtp_key());
    let mut sdp = SdpSession::new(config, rand::random::<u32>().into());
    let offer = incoming.body.as_ref().filter(|b| is_sdp(b));
    let (answer, params) = match offer {
        Some(offer) => match sdp.negotiate(&offer.bytes) {
            Ok(negotiated) => (negotiated.answer_sdp, Some(negotiated.params)),
            Err(e) => {
                let status = if e.is_not_acceptable() { 488 } else { 400 };
                info!("call to {extension}: offer refused ({e}), {status}");
                reject(status);
                return None;
            }
        },
        // Late offer (RFC 3264 5): we offer in the 200, the answer comes in the ACK.
        None => (sdp.create_offer(), None),
    };
    let (tx, rx) = mpsc::channel(CALL_EVENTS);
    let (ended_tx, ended_rx) = oneshot::channel();
    let events = CallEvents {
        events: rx,
        ended: ended_rx,
        end_seen: false,
        over: false,
    };
    let route = CallRoute {
        events: tx,
        ended: Some(ended_tx),
    };
    if application == Application::User {
        let Some(ports_b) = layer.ports.bind().await else {
            warn!("call to {extension}: no free RTP ports for the second leg, 503");
            reject(503);
            return None;
        };
        let Some(params_a) = params else {
            // The caller must offer: our offer to the callee is made from what it
            // offered us. (A late-offer caller to a phone is rare; refuse it clearly.)
            info!("call to {extension}: INVITE without an offer to a phone, 488");
            reject(488);
            return None;
        };
        let bridge = crate::bridge::Bridge {
            call,
            extension: extension.clone(),
            caller: caller_id(&incoming),
            caller_display: incoming.from_display.clone(),
            authenticated: incoming.authenticated_user.is_some(),
            host: layer.media_ip.to_string(),
            endpoint: layer.endpoint.clone(),
            metrics: Arc::clone(&layer.metrics),
            lifecycle,
            ports_a: ports,
            sdp_a: sdp,
            answer_a: answer,
            params_a,
            ports_b,
            codecs: layer
                .profile
                .rtp
                .codecs
                .iter()
                .map(|c| codec_kind(*c))
                .collect(),
            media_ip: layer.media_ip,
            ring: Duration::from_secs(layer.profile.calls.ring_secs.into()),
            max_duration: Duration::from_secs(layer.profile.calls.max_duration_secs.into()),
            rtp_timeout: Duration::from_secs(layer.profile.calls.rtp_timeout_secs.into()),
            srtp_policy: layer.profile.rtp.srtp.policy(),
            pool: layer.ports.clone(),
            users: user_extensions(&layer.profile),
        };
        tokio::spawn(bridge.run(events));
        return Some((call, route));
    }
    let task = CallTask {
        _agent_slot: agent_slot,
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
        rejected_reported: 0,
        pool: layer.ports.clone(),
        codecs: layer
            .profile
            .rtp
            .codecs
            .iter()
            .map(|c| codec_kind(*c))
            .collect(),
        media_ip: layer.media_ip,
        ring: Duration::from_secs(layer.profile.calls.ring_secs.into()),
        authenticated: incoming.authenticated_user.is_some(),
        srtp_policy: layer.profile.rtp.srtp.policy(),
        srtp: None,
        users: user_extensions(&layer.profile),
    };
    let delay = Duration::from_millis(layer.profile.calls.answer_delay_ms.into());
    tokio::spawn(task.run(events, answer, params, delay));
    Some((call, route))
}

/// Whether a body is SDP: the media type without its parameters
/// (`application/sdp; charset=utf-8` is SDP too), case-insensitively.
pub(crate) fn is_sdp(body: &Body) -> bool {
    body.content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(SDP))
}

/// Who is calling, as memory keys it: the user that authenticated the INVITE, else the
/// user part of the From URI (never the display name, which the caller chooses freely).
fn caller_id(incoming: &IncomingCall) -> String {
    if let Some(user) = &incoming.authenticated_user {
        return user.clone();
    }
    uri_user(&incoming.from)
}

/// The user part of a SIP URI (`sip:1001@host` -> `1001`).
pub(crate) fn uri_user(uri: &str) -> String {
    let uri = uri.trim_start_matches('<');
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
pub(crate) fn info_dtmf(body: &Body) -> Option<char> {
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
    /// This call's place among the agent calls (none for other applications).
    _agent_slot: Option<AgentCallSlot>,
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
    /// Refused media packets already counted in the metrics.
    rejected_reported: u64,
    /// For handing the caller to a person: ports for the second call, its codecs and
    /// address, how long it rings, and whether the caller's identity may be asserted.
    pool: PortPool,
    codecs: Vec<CodecKind>,
    media_ip: IpAddr,
    ring: Duration,
    authenticated: bool,
    srtp_policy: sofia_media::SrtpPolicy,
    /// The caller's SRTP, once media runs with agreed keys.
    srtp: Option<media::Srtp>,
    /// The users' extensions: where a caller's REFER may send it.
    users: Vec<String>,
}

/// How handing the caller to a person came out.
enum HandOff {
    /// The call is over (the person and the caller talked, or the caller hung up);
    /// every leg has been hung up as needed.
    Over,
    /// Nobody took it (the status the phones gave): back to the agent.
    Failed(u16),
}

impl CallTask {
    async fn run(
        mut self,
        mut events: CallEvents,
        answer: Vec<u8>,
        mut params: Option<sofia_media::MediaParams>,
        delay: Duration,
    ) {
        if !delay.is_zero() {
            self.endpoint.command(self.call, CallCommand::Ring);
            let answer_at = tokio::time::sleep(delay);
            tokio::pin!(answer_at);
            // Only the end of the call stops the ringing; anything else in the early
            // dialog (an INFO, say) is taken in and the phone still gets its answer.
            loop {
                tokio::select! {
                    _ = &mut answer_at => break,
                    event = events.recv() => match event {
                        Some(Event::CallEnded { .. } | Event::CallCancelled { .. }) | None => {
                            info!("call to {} ended while ringing: {event:?}", self.extension);
                            return;
                        }
                        Some(other) => debug!("call to {}: while ringing: {other:?}", self.extension),
                    },
                }
            }
        }
        let body = Body {
            content_type: SDP.to_string(),
            bytes: answer,
        };
        self.endpoint.command(self.call, CallCommand::Answer(body));
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
                            self.endpoint.command(self.call, CallCommand::Hangup);
                            return;
                        }
                    },
                    Some(Event::CallConfirmed { body: None, .. }) => {
                        info!("call to {}: ACK without the answer", self.extension);
                        self.endpoint.command(self.call, CallCommand::Hangup);
                        return;
                    }
                    Some(Event::CallEnded { .. } | Event::CallCancelled { .. }) | None => return,
                    Some(_) => {}
                }
            }
        }
        let Some(params) = params else { return };
        self.srtp = match media::Srtp::for_params(&params) {
            Ok(srtp) => srtp,
            Err(e) => {
                warn!("call to {}: cannot start SRTP ({e})", self.extension);
                self.endpoint.command(self.call, CallCommand::Hangup);
                return;
            }
        };
        if self.srtp.is_some() {
            info!("call to {}: media encrypted (SRTP)", self.extension);
        }
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
                self.endpoint.command(self.call, CallCommand::Hangup);
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
        // BYE first: finishing may wait for the caller's last words to be transcribed,
        // and the phone must not hold a dead call meanwhile.
        if !ended {
            self.endpoint.command(self.call, CallCommand::Hangup);
        }
        if let Some(agent) = agent.as_mut() {
            agent.finish(Instant::now()).await;
        }
        let stats = session.stats();
        self.report_rejected(&stats);
        info!("call to {} over: {stats:?}", self.extension);
    }

    /// Adds the media packets refused since the last report (foreign source or SSRC:
    /// injection attempts, or a phone that moved) to the metrics.
    fn report_rejected(&mut self, stats: &sofia_media::Stats) {
        let rejected = stats.rtp_rejected + stats.rtcp_rejected;
        if rejected > self.rejected_reported {
            if self.rejected_reported == 0 {
                warn!(
                    "call to {}: media from a foreign source or SSRC refused",
                    self.extension
                );
            }
            self.metrics
                .rtp_rejected_packets
                .inc_by(rejected - self.rejected_reported);
            self.rejected_reported = rejected;
        }
    }

    /// Runs media (and the agent, on an agent call) until the call ends. Returns true
    /// when the far end ended it.
    async fn media_loop(
        &mut self,
        session: &mut sofia_media::MediaSession,
        events: &mut CallEvents,
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
            // A REFER from the caller, handled once the select below has let go.
            let mut refer = None;
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
                        let now = Instant::now();
                        if !media::receive(session, &mut self.srtp, now, from, &rtp_buf[..n]) {
                            self.metrics.srtp_auth_failures.inc();
                        }
                    }
                }
                r = self.ports.rtcp.recv_from(&mut rtcp_buf) => {
                    if let Ok((n, from)) = r {
                        let now = Instant::now();
                        if !media::receive(session, &mut self.srtp, now, from, &rtcp_buf[..n]) {
                            self.metrics.srtp_auth_failures.inc();
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {
                    session.handle_timeout(Instant::now());
                    let stats = session.stats();
                    self.report_rejected(&stats);
                }
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
                    Some(Event::ReInvite { body, .. }) => self.handle_reinvite(session, body),
                    Some(Event::Refer { refer_to, .. }) => refer = Some(refer_to),
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
            if let Some(refer_to) = refer {
                if self
                    .refer(session, events, agent.as_deref_mut(), &refer_to)
                    .await
                {
                    return true;
                }
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
                match a.drive(now, session) {
                    Some(AgentRequest::HangUp(reason)) => {
                        // The conversation asks only once its goodbye has played out.
                        info!(
                            "call to {}: the agent hangs up ({reason:?})",
                            self.extension
                        );
                        return false;
                    }
                    Some(AgentRequest::Transfer(target)) => {
                        match self.hand_off(session, events, &target, false).await {
                            HandOff::Over => {
                                self.metrics.agent_transfer("connected");
                                return true;
                            }
                            HandOff::Failed(status) => {
                                self.metrics.agent_transfer("failed");
                                info!(
                                    "call to {}: {target} did not take the caller ({status}); back to the agent",
                                    self.extension
                                );
                                a.transfer_failed(Instant::now(), &target, status);
                            }
                        }
                    }
                    None => {}
                }
            }
            // After the events and the agent: audio the agent queued (or flushed, on a
            // barge-in) just now is already reflected in what goes out.
            media::send_transmits(session, &self.ports, &mut self.srtp, now);
        }
    }

    /// A blind transfer the caller asked for (RFC 3515 REFER, already answered 202):
    /// on an agent call to a user's extension, the caller is handed to that user's
    /// phones as the agent's own hand-off does, and the NOTIFYs say how it goes (100,
    /// then 200 once a phone answers, or the failure, and the caller is back with the
    /// agent). Anything else is refused with a final NOTIFY 403. Returns true when the
    /// call is over.
    async fn refer(
        &mut self,
        session: &mut sofia_media::MediaSession,
        events: &mut CallEvents,
        agent: Option<&mut AgentCall>,
        refer_to: &str,
    ) -> bool {
        let target = uri_user(refer_to);
        let Some(agent) = agent.filter(|_| self.users.contains(&target)) else {
            info!(
                "call to {}: REFER to {refer_to} refused, 403",
                self.extension
            );
            self.metrics.transfer("refused");
            self.endpoint
                .command(self.call, CallCommand::NotifyRefer(403));
            return false;
        };
        info!(
            "call to {}: REFER from {} to {target} accepted",
            self.extension, self.caller
        );
        self.metrics.transfer("accepted");
        self.endpoint
            .command(self.call, CallCommand::NotifyRefer(100));
        // The agent stops talking: the caller asked to go elsewhere.
        session.flush_playback();
        match self.hand_off(session, events, &target, true).await {
            HandOff::Over => {
                self.metrics.transfer("connected");
                true
            }
            HandOff::Failed(status) => {
                self.metrics.transfer("failed");
                info!(
                    "call to {}: {target} did not take the transfer ({status}); back to the agent",
                    self.extension
                );
                self.endpoint
                    .command(self.call, CallCommand::NotifyRefer(status));
                agent.transfer_failed(Instant::now(), &target, status);
                false
            }
        }
    }

    /// Hands the caller to `target`'s phones (as a call between phones does), keeping
    /// the caller's media going while they ring; once one answers (reported to the
    /// caller's REFER subscription when `referred`), relays the two until either hangs
    /// up.
    async fn hand_off(
        &mut self,
        session: &mut sofia_media::MediaSession,
        events: &mut CallEvents,
        target: &str,
        referred: bool,
    ) -> HandOff {
        let through = crate::bridge::put_through(
            crate::bridge::PutThrough {
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
                from_user: &self.caller,
                authenticated: self.authenticated,
            },
            &mut crate::bridge::Leg {
                call: self.call,
                session: &mut *session,
                ports: &self.ports,
                sdp: &mut self.sdp,
                srtp: &mut self.srtp,
            },
            events,
            target,
        )
        .await;
        let mut person = match through {
            crate::bridge::PutThroughResult::Answered(person) => person,
            crate::bridge::PutThroughResult::Failed(status) => return HandOff::Failed(status),
            crate::bridge::PutThroughResult::Over => return HandOff::Over,
        };
        if referred {
            self.endpoint
                .command(self.call, CallCommand::NotifyRefer(200));
        }
        let ended = crate::bridge::relay(
            crate::bridge::RelayEnds {
                endpoint: &self.endpoint,
                metrics: &self.metrics,
                extension: &self.extension,
                lifecycle: self.lifecycle.clone(),
                deadline: tokio::time::Instant::now() + self.max_duration,
                rtp_timeout: self.rtp_timeout,
                transfers: false,
            },
            crate::bridge::Leg {
                call: self.call,
                session,
                ports: &self.ports,
                sdp: &mut self.sdp,
                srtp: &mut self.srtp,
            },
            crate::bridge::Leg {
                call: person.call,
                session: &mut person.session,
                ports: &person.ports,
                sdp: &mut person.sdp,
                srtp: &mut person.srtp,
            },
            events,
        )
        .await;
        ended.hang_up_the_rest(&self.endpoint, self.call, person.call);
        HandOff::Over
    }

    fn handle_reinvite(&mut self, session: &mut sofia_media::MediaSession, body: Option<Body>) {
        answer_reinvite(
            &self.endpoint,
            self.call,
            &self.extension,
            &mut self.sdp,
            session,
            &mut self.srtp,
            body,
        );
    }
}

/// A re-INVITE (hold, unhold, session refresh) on `call`: answered from its SDP session,
/// and the media session follows. Returns whether the offer was accepted.
pub(crate) fn answer_reinvite(
    endpoint: &EndpointHandle,
    call: CallHandle,
    extension: &str,
    sdp: &mut SdpSession,
    session: &mut sofia_media::MediaSession,
    srtp: &mut Option<media::Srtp>,
    body: Option<Body>,
) -> bool {
    let Some(body) = body.filter(is_sdp) else {
        // An offerless re-INVITE: offer our current session (RFC 3264 8.1).
        let body = Body {
            content_type: SDP.to_string(),
            bytes: sdp.create_offer(),
        };
        endpoint.command(call, CallCommand::Answer(body));
        return true;
    };
    match sdp.negotiate(&body.bytes) {
        Ok(negotiated) => {
            // A re-offer may bring new keys (or drop SRTP): the next packets use them.
            match media::Srtp::for_params(&negotiated.params) {
                Ok(new) => *srtp = new,
                Err(e) => {
                    warn!("call to {extension}: re-INVITE SRTP keys unusable ({e})");
                    endpoint.command(call, CallCommand::Reject(488));
                    return false;
                }
            }
            if let Err(e) = session.update(Instant::now(), negotiated.params) {
                warn!("call to {extension}: re-INVITE media update failed ({e})");
                endpoint.command(call, CallCommand::Reject(488));
                return false;
            }
            let body = Body {
                content_type: SDP.to_string(),
                bytes: negotiated.answer_sdp,
            };
            endpoint.command(call, CallCommand::Answer(body));
            true
        }
        Err(e) => {
            let status = if e.is_not_acceptable() { 488 } else { 400 };
            info!("call to {extension}: re-INVITE offer refused ({e}), {status}");
            endpoint.command(call, CallCommand::Reject(status));
            false
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
