//! The voice agent application (dialplan `agent`, extension 5555 by default).
//!
//! [`Agent`] holds what every call shares: the loaded models, the memory, the worker
//! pools and the cached prompts. [`AgentCall`] is one call's driver: the call task feeds
//! it the decoded 16 kHz caller audio and DTMF from the media session, and it feeds them
//! (with the voice activity detector's verdict) into a `sofia_voice::Conversation`, then
//! carries out what the conversation asks: stage work through
//! [`crate::voice::Stages::dispatch`], playback and flushes on the media session, and
//! the hang-up. Decisions are the conversation's; this is plumbing.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sofia_media::MediaSession;
use sofia_voice::{
    Action, BreakerConfig, BreakerState, CallInfo, ClipId, Conversation, Event, HangUpReason,
    Memory, PlaybackProgress, Recollection, StageHealth, Stt, Tts, TurnRecord,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{EndOfTurnMode, Profile};
use crate::memory::service::{MemoryConfig, MemoryService};
use crate::metrics::{AgentState, Metrics};
use crate::models::catalog::whisper_ggml;
use crate::voice::echo::EchoCheck;
use crate::voice::{
    InFlight, MediaCommand, OpenAiConfig, OpenAiLlm, PiperTts, PromptCache, SileroVad, SmartTurn,
    StageResult, Stages, VadStream, VoiceModels, WhisperConfig, WhisperStt, WorkerPool,
};

/// How long the start of a call waits for the caller's memory (already loaded at INVITE
/// by [`Agent::prefetch`]; a first-time caller's is empty). Past it, the caller is
/// greeted as new rather than kept waiting.
const OPEN_BUDGET: Duration = Duration::from_millis(400);

/// The voice agent's shared, loaded parts.
pub struct Agent {
    stages: Stages,
    vad: Arc<SileroVad>,
    config: sofia_voice::Config,
    /// The stages' circuit breakers, shared by every call: once a stage has failed
    /// `agent.breaker_failures` times in a row, every call falls back at once.
    health: Arc<StageHealth>,
    /// `<data_dir>/transcripts`: one text file per call.
    transcripts: PathBuf,
    /// Appends transcript lines off the call tasks.
    transcript_writer: TranscriptWriter,
    /// How long a turn's reply waits for recall by the meaning of the caller's words
    /// (embedding plus search, tens of ms). Past it, the reply goes without.
    recall_budget: Duration,
    metrics: Arc<Metrics>,
    /// `agent.echo_suppression`: the caller's speech that is the agent's own echo does
    /// not interrupt it.
    echo_suppression: bool,
}

/// Whom the agent may hand callers to: `agent.handoff_extension` for "a person", and
/// `agent.handoff_allowed` (default: every configured user) by number. `None` when
/// neither names anybody.
pub fn handoff_config(profile: &crate::config::Profile) -> Option<sofia_voice::HandoffConfig> {
    let settings = &profile.agent;
    let allowed: Vec<String> = if settings.handoff_allowed.is_empty() {
        profile.users.iter().map(|u| u.extension.clone()).collect()
    } else {
        settings.handoff_allowed.clone()
    };
    let default_target = settings.handoff_extension.clone();
    (default_target.is_some() || !allowed.is_empty()).then_some(sofia_voice::HandoffConfig {
        default_target,
        allowed,
    })
}

/// The memory's behaviour from the profile's `[memory]` section.
pub fn memory_config(settings: &crate::config::MemorySettings) -> MemoryConfig {
    let mut config = MemoryConfig::default();
    config.forget.retention_days = settings.retention_days;
    config.forget.keep_recent = settings.keep_recent_turns as usize;
    config
}

impl Agent {
    /// Loads every model, opens the memory and synthesizes the fixed prompts. Blocking
    /// (seconds): run it off the async runtime.
    pub fn load(profile: &Profile, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let mut models = VoiceModels::under(&profile.models_dir);
        models.whisper = profile.models_dir.join(whisper_ggml(profile.whisper_model));
        models.require_all()?;
        let vad = SileroVad::load(&models.silero_vad, &models.onnxruntime)?;
        let settings = &profile.agent;
        // Only model mode needs Smart Turn; a missing file is reported like any other
        // missing model ("run `sofia-phone models fetch`").
        let (end_of_turn, turn_model) = match settings.end_of_turn {
            EndOfTurnMode::Silence => (sofia_voice::EndOfTurn::Silence, None),
            EndOfTurnMode::Model => (
                sofia_voice::EndOfTurn::Model(sofia_voice::ModelTurn {
                    check_silence: Duration::from_millis(settings.turn_check_ms.into()),
                    fallback_silence: Duration::from_millis(
                        settings.end_of_turn_fallback_ms.into(),
                    ),
                    ..sofia_voice::ModelTurn::default()
                }),
                Some(Arc::new(SmartTurn::load(
                    &models.smart_turn,
                    &models.onnxruntime,
                )?)),
            ),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stt = WhisperStt::load(
            &models.whisper,
            WhisperConfig {
                threads: cores.min(4),
                ..WhisperConfig::default()
            },
        )?;
        let tts = PiperTts::load(
            &models.piper_model,
            &models.piper_config,
            &models.onnxruntime,
        )?;
        let prompts = PromptCache::synthesize(&tts).context("synthesizing the fixed prompts")?;
        let memory = MemoryService::open(
            &profile.data_dir.join("memory"),
            &models.minilm_dir,
            memory_config(&profile.memory),
        )
        .context("opening the memory")?;
        let transcripts = profile.data_dir.join("transcripts");
        std::fs::create_dir_all(&transcripts)
            .with_context(|| format!("creating {}", transcripts.display()))?;
        let llm_timeout = Duration::from_secs(settings.llm_timeout_secs.into());
        let llm_first_text_timeout =
            Duration::from_millis(settings.llm_first_text_timeout_ms.into());
        let llm = match &settings.llm_url {
            Some(url) => Some(Arc::new(
                OpenAiLlm::new(OpenAiConfig {
                    base_url: url.clone(),
                    model: settings.llm_model.clone(),
                    api_key: settings.llm_api_key.clone(),
                    first_text_timeout: llm_first_text_timeout,
                    timeout: llm_timeout,
                    ..OpenAiConfig::default()
                })
                .context("setting up the language model client")?,
            )),
            None => None,
        };
        let breaker = BreakerConfig {
            failure_threshold: settings.breaker_failures,
            cool_down: Duration::from_secs(settings.breaker_open_secs.into()),
        };
        let health = Arc::new(StageHealth::new(breaker, breaker, breaker));
        metrics.set_stage_health(Arc::clone(&health));
        let config = sofia_voice::Config {
            end_of_turn,
            end_of_turn_silence: Duration::from_millis(settings.end_of_turn_ms.into()),
            min_speech: Duration::from_millis(settings.min_speech_ms.into()),
            max_utterance: Duration::from_secs(settings.max_utterance_secs.into()),
            silence_timeout: Duration::from_secs(settings.silence_timeout_secs.into()),
            max_call: Duration::from_secs(profile.calls.max_duration_secs.into()),
            llm_first_text_timeout,
            llm_timeout,
            use_llm: llm.is_some(),
            stt_breaker: breaker,
            llm_breaker: breaker,
            tts_breaker: breaker,
            handoff: handoff_config(profile),
            ..sofia_voice::Config::default()
        };
        // One transcription at a time uses every core (whisper.cpp threads inside);
        // synthesis is serialised by Piper itself. Queues are short on purpose: a turn
        // that would wait longer than its timeout is better refused (the breaker and the
        // fallbacks take over) than left to pile up.
        let stt_pool = WorkerPool::new("stt", 1, 8).context("starting the STT workers")?;
        let tts_pool = WorkerPool::new("tts", 1, 16).context("starting the TTS workers")?;
        // One verdict at a time (tens of ms each); a full queue answers "busy" and the
        // turn falls back to the silence rule.
        let turn_pool = WorkerPool::new("turn", 1, 8).context("starting the end-of-turn worker")?;
        Ok(Self {
            stages: Stages {
                stt: Arc::new(stt) as Arc<dyn Stt>,
                tts: Arc::new(tts) as Arc<dyn Tts>,
                llm,
                memory: Arc::new(memory) as Arc<dyn Memory>,
                prompts: Arc::new(prompts),
                stt_pool: Arc::new(stt_pool),
                tts_pool: Arc::new(tts_pool),
                turn_model,
                turn_pool: Arc::new(turn_pool),
            },
            vad: Arc::new(vad),
            config,
            health,
            transcripts,
            transcript_writer: TranscriptWriter::start()?,
            recall_budget: Duration::from_millis(profile.memory.recall_budget_ms.into()),
            metrics,
            echo_suppression: profile.agent.echo_suppression,
        })
    }

    /// What the agent answers with, for the start-up log.
    pub fn describe(&self) -> String {
        match &self.stages.llm {
            Some(llm) => format!(
                "language model {} at {}",
                llm.config().model,
                llm.config().base_url
            ),
            None => "built-in responder".to_string(),
        }
    }

    /// Waits until memory has written everything queued (shutdown). Blocking.
    pub fn flush_memory(&self) {
        self.stages.memory.flush();
    }

    /// Loads the caller's memory in the background, ahead of answering their call.
    pub fn prefetch(&self, caller: &str) {
        let memory = Arc::clone(&self.stages.memory);
        let caller = caller.to_string();
        tokio::task::spawn_blocking(move || memory.prefetch(&caller));
    }

    /// Starts the conversation of an answered call: recalls the caller's facts and the
    /// episode to greet them with (within [`OPEN_BUDGET`]), and queues the greeting.
    pub async fn start_call(self: &Arc<Self>, caller: &str, call_id: &str) -> AgentCall {
        let unix_ms = unix_ms_now();
        let memory = Arc::clone(&self.stages.memory);
        let (who, call) = (caller.to_string(), call_id.to_string());
        let asked = Instant::now();
        let opened = tokio::time::timeout(
            OPEN_BUDGET,
            tokio::task::spawn_blocking(move || memory.open_call(&who, &call, unix_ms)),
        )
        .await;
        let m = &self.metrics;
        let remembered = match opened {
            Ok(Ok(Ok(r))) => {
                m.memory_recall("ok", Some(asked.elapsed()));
                r
            }
            Ok(Ok(Err(e))) => {
                // A call without memory is better than no call.
                m.memory_recall("error", None);
                warn!(error = %e, "could not recall {caller}'s earlier calls");
                Recollection::default()
            }
            Ok(Err(e)) => {
                m.memory_recall("error", None);
                warn!(error = %e, "memory recall panicked");
                Recollection::default()
            }
            Err(_) => {
                m.memory_recall("late", None);
                warn!("{caller}'s memory was not ready within {OPEN_BUDGET:?}; greeting as new");
                Recollection::default()
            }
        };
        let info = CallInfo {
            caller: caller.to_string(),
            call_id: call_id.to_string(),
            started: Instant::now(),
            started_unix_ms: unix_ms,
        };
        if !remembered.is_empty() {
            info!(
                "agent call from {caller}: returning caller ({} facts remembered)",
                remembered.facts.len()
            );
        }
        let (results_tx, results) = mpsc::unbounded_channel();
        AgentCall {
            transcript: self.transcripts.join(format!(
                "{unix_ms}-{}-{}.txt",
                file_safe(caller),
                file_safe(call_id)
            )),
            agent: Arc::clone(self),
            caller: caller.to_string(),
            call_id: call_id.to_string(),
            conversation: Conversation::with_health(
                self.config.clone(),
                info,
                remembered,
                Arc::clone(&self.health),
            ),
            vad: VadStream::new(),
            in_flight: InFlight::default(),
            results_tx,
            results,
            playback: Playback::default(),
            echo: self.echo_suppression.then(EchoCheck::new),
        }
    }
}

/// The agent as start-up left it: still loading, loaded, or failed (and why). Loading
/// takes seconds, so the switch serves registrations and other calls meanwhile.
#[derive(Clone, Default)]
pub struct AgentSlot(Arc<OnceLock<Result<Arc<Agent>, String>>>);

impl AgentSlot {
    /// Loads the agent on a blocking thread and logs the outcome.
    pub fn load_in_background(profile: Profile, metrics: Arc<Metrics>) -> Self {
        let slot = Self::default();
        let cell = Arc::clone(&slot.0);
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = Agent::load(&profile, Arc::clone(&metrics))
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"));
            match &result {
                Ok(agent) => {
                    metrics.set_agent_state(AgentState::Ready);
                    info!(
                        "voice agent ready in {:.1?} ({})",
                        started.elapsed(),
                        agent.describe()
                    )
                }
                Err(why) => {
                    metrics.set_agent_state(AgentState::Unavailable);
                    warn!("voice agent unavailable, its calls get 480: {why}")
                }
            }
            let _ = cell.set(result);
        });
        slot
    }

    /// The agent, or why there is none.
    pub fn get(&self) -> Result<Arc<Agent>, String> {
        match self.0.get() {
            Some(Ok(agent)) => Ok(Arc::clone(agent)),
            Some(Err(why)) => Err(why.clone()),
            None => Err("the voice agent is still loading".to_string()),
        }
    }
}

/// What the agent wants done with its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRequest {
    /// End it (its goodbye has played).
    HangUp(HangUpReason),
    /// Connect the caller to this extension (it has said so).
    Transfer(String),
}

/// One call's conversation and the plumbing around it.
pub struct AgentCall {
    agent: Arc<Agent>,
    caller: String,
    call_id: String,
    /// The call's transcript file, appended to as turns are committed to memory.
    transcript: PathBuf,
    conversation: Conversation,
    vad: VadStream,
    in_flight: InFlight,
    results_tx: mpsc::UnboundedSender<StageResult>,
    results: mpsc::UnboundedReceiver<StageResult>,
    playback: Playback,
    /// What was sent to the phone, to tell the agent's echo from the caller's speech
    /// (`None` with `agent.echo_suppression = false`).
    echo: Option<EchoCheck>,
}

impl AgentCall {
    /// The next stage result (a transcript, reply text, synthesized audio).
    pub async fn next_result(&mut self) -> Option<StageResult> {
        self.results.recv().await
    }

    /// A stage result. A transcript with words first goes to memory: recall by their
    /// meaning runs off the call task, and the transcript reaches the conversation with
    /// what was recalled, or without it after the profile's `memory.recall_budget_ms`.
    pub fn handle_result(&mut self, now: Instant, result: StageResult) {
        match result {
            StageResult::Transcript {
                turn,
                result: Ok(transcript),
            } if !transcript.text.trim().is_empty() => {
                let memory = Arc::clone(&self.agent.stages.memory);
                let tx = self.results_tx.clone();
                let caller = self.caller.clone();
                let query = transcript.text.clone();
                let now_ms = unix_ms_now();
                let budget = self.agent.recall_budget;
                let metrics = Arc::clone(&self.agent.metrics);
                tokio::spawn(async move {
                    let asked = Instant::now();
                    let recalled = tokio::time::timeout(
                        budget,
                        tokio::task::spawn_blocking(move || memory.recall(&caller, &query, now_ms)),
                    )
                    .await;
                    let recollection = match recalled {
                        Ok(Ok(Ok(r))) => {
                            metrics.memory_recall("ok", Some(asked.elapsed()));
                            Some(r)
                        }
                        Ok(Ok(Err(e))) => {
                            metrics.memory_recall("error", None);
                            warn!(error = %e, "recall failed; answering without it");
                            None
                        }
                        Ok(Err(_)) => {
                            metrics.memory_recall("error", None);
                            None
                        }
                        Err(_) => {
                            metrics.memory_recall("late", None);
                            debug!("recall missed its {budget:?} budget; answering without it");
                            None
                        }
                    };
                    let _ = tx.send(StageResult::Recalled {
                        turn,
                        transcript,
                        recollection,
                    });
                });
            }
            StageResult::TurnPrediction {
                took: Some(took), ..
            } => {
                self.agent
                    .metrics
                    .agent_turn_model_latency
                    .observe(took.as_secs_f64());
                result.apply(&mut self.conversation, now)
            }
            other => other.apply(&mut self.conversation, now),
        }
    }

    /// One frame of decoded caller audio at 16 kHz.
    pub fn handle_audio(&mut self, now: Instant, samples: &[f32]) {
        let speech = match self.vad.push_frame(&self.agent.vad, samples) {
            Ok(speech) => speech,
            Err(e) => {
                // Treat the frame as silence: a broken detector must not keep a turn open.
                debug!(error = %e, "voice activity detection failed");
                false
            }
        };
        // Speech the playout explains is the agent hearing itself: not the caller
        // talking, so it neither interrupts the agent nor starts a turn.
        let speech = match self.echo.as_mut() {
            Some(echo) => {
                let caller = echo.caller_speech(samples, speech);
                if speech && !caller {
                    self.agent.metrics.agent_echo_frames.inc();
                }
                caller
            }
            None => speech,
        };
        self.conversation.handle_audio(now, samples, speech);
    }

    pub fn handle_dtmf(&mut self, now: Instant, digit: char) {
        self.conversation.handle_dtmf(now, digit);
    }

    /// The call is over, however it ended (their BYE, ours, shutdown, RTP timeout, the
    /// time limit): what was played is remembered, and so is a caller turn still being
    /// transcribed (waited for, as long as a transcription may take); then memory
    /// closes the call.
    pub async fn finish(&mut self, now: Instant) {
        self.conversation.handle_hangup(now);
        self.drain_actions(now, None);
        let deadline = tokio::time::Instant::now() + self.agent.config.stt_timeout;
        while self.conversation.awaiting_transcript() {
            match tokio::time::timeout_at(deadline, self.results.recv()).await {
                Ok(Some(result)) => {
                    self.handle_result(Instant::now(), result);
                    self.drain_actions(Instant::now(), None);
                }
                _ => {
                    warn!("the caller's last words were not transcribed in time; not remembered");
                    break;
                }
            }
        }
        // The turn cut short by the end is logged and counted like any other.
        while let Some(event) = self.conversation.poll_event() {
            log_event(&event);
            self.count(&event);
        }
        if let Err(e) = self
            .agent
            .stages
            .memory
            .close_call(&self.caller, &self.call_id)
        {
            warn!(error = %e, "could not close the call in memory");
        }
    }

    /// When [`AgentCall::drive`] has timer work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conversation.poll_timeout()
    }

    /// Fires due timers, reports playback progress, and carries out every action the
    /// conversation has queued. Returns what the agent wants done with the call, if
    /// anything: ended, or handed to a person.
    pub fn drive(&mut self, now: Instant, session: &mut MediaSession) -> Option<AgentRequest> {
        if let Some(echo) = self.echo.as_mut() {
            echo.handle_sent(session);
        }
        if self.conversation.poll_timeout().is_some_and(|t| t <= now) {
            self.conversation.handle_timeout(now);
        }
        for progress in self.playback.progress(session.queued_playback()) {
            self.conversation.handle_playback_progress(now, progress);
        }
        let hang_up = self.drain_actions(now, Some(session));
        while let Some(event) = self.conversation.poll_event() {
            log_event(&event);
            self.count(&event);
        }
        hang_up
    }

    /// The transfer the agent asked for did not connect: it tells the caller.
    pub fn transfer_failed(&mut self, now: Instant, target: &str, status: u16) {
        self.conversation
            .handle_transfer_failed(now, target, status);
    }

    fn drain_actions(
        &mut self,
        now: Instant,
        mut session: Option<&mut MediaSession>,
    ) -> Option<AgentRequest> {
        let mut hang_up = None;
        while let Some(action) = self.conversation.poll_action() {
            if let Action::Remember(turn) = &action {
                debug!("{} said: {}", turn.role.as_str(), turn.text);
                self.append_transcript(turn);
            }
            let command = self
                .agent
                .stages
                .dispatch(action, &self.results_tx, &mut self.in_flight);
            let (Some(command), Some(session)) = (command, session.as_deref_mut()) else {
                continue;
            };
            match command {
                MediaCommand::Play { clip, audio } => {
                    let before = session.queued_playback();
                    if audio.samples.is_empty() {
                        self.playback.push(clip, Duration::ZERO);
                    } else if let Err(e) = session.queue_playback(&audio.samples, audio.sample_rate)
                    {
                        warn!(error = %e, "agent audio could not be queued; skipped");
                        self.playback.push(clip, Duration::ZERO);
                    } else {
                        let queued = session.queued_playback().saturating_sub(before);
                        self.playback.push(clip, queued);
                        if let Some(echo) = self.echo.as_mut() {
                            echo.queued(session, &audio.samples, audio.sample_rate);
                        }
                    }
                }
                MediaCommand::Flush => {
                    // Barge-in: nothing queued goes out after the frame on the wire now.
                    session.flush_playback();
                    self.playback.flush();
                    if let Some(echo) = self.echo.as_mut() {
                        echo.flushed();
                    }
                }
                MediaCommand::HangUp(reason) => hang_up = Some(AgentRequest::HangUp(reason)),
                MediaCommand::Transfer(target) => hang_up = Some(AgentRequest::Transfer(target)),
            }
        }
        // Empty clips finish at once.
        if let Some(session) = session {
            for progress in self.playback.progress(session.queued_playback()) {
                self.conversation.handle_playback_progress(now, progress);
            }
        }
        hang_up
    }
}

impl AgentCall {
    fn count(&self, event: &Event) {
        let m = &self.agent.metrics;
        match event {
            Event::TurnFinished(t) => {
                if let (Some(end), Some(play)) = (t.end_of_speech, t.first_play) {
                    m.agent_turns.inc();
                    m.agent_turn_latency
                        .observe(play.saturating_duration_since(end).as_secs_f64());
                }
            }
            Event::BargeIn { .. } => {
                m.agent_barge_ins.inc();
            }
            Event::FallbackReply { .. } => {
                m.agent_fallback_replies.inc();
            }
            Event::TurnVerdict { verdict, .. } => m.agent_turn_verdict(*verdict),
            // The breakers are shared: this call's outcome opened it, for every call.
            Event::Breaker {
                stage,
                state: BreakerState::Open { .. },
            } => m.stage_breaker_tripped(*stage),
            _ => {}
        }
    }

    /// One line per turn, as memory stores it (what was actually played, after a
    /// barge-in), handed to the writer thread: a slow disk must not stall the call's
    /// media.
    fn append_transcript(&self, turn: &TurnRecord) {
        let line = format!("{} {}: {}\n", turn.unix_ms, turn.role.as_str(), turn.text);
        self.agent
            .transcript_writer
            .append(self.transcript.clone(), line);
    }
}

/// Appends transcript lines on a thread of its own, in the order they were queued.
/// The queue is unbounded but small by nature (a line per turn, a turn every few
/// seconds per agent call, and agent calls are admission-controlled): while a disk
/// stalls, lines wait in memory rather than being dropped.
struct TranscriptWriter {
    lines: std::sync::mpsc::Sender<(PathBuf, String)>,
}

impl TranscriptWriter {
    fn start() -> anyhow::Result<Self> {
        let (lines, queued) = std::sync::mpsc::channel::<(PathBuf, String)>();
        std::thread::Builder::new()
            .name("transcripts".into())
            .spawn(move || {
                use std::io::Write;
                for (path, line) in queued {
                    let written = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .and_then(|mut f| f.write_all(line.as_bytes()));
                    if let Err(e) = written {
                        warn!(error = %e, "cannot write {}", path.display());
                    }
                }
            })
            .context("starting the transcript writer")?;
        Ok(Self { lines })
    }

    fn append(&self, path: PathBuf, line: String) {
        if self.lines.send((path, line)).is_err() {
            warn!("the transcript writer has stopped; a transcript line is lost");
        }
    }
}

/// `text` with anything but ASCII letters, digits, `-`, `_` and `.` replaced by `_`:
/// Call-IDs and user names come from the network.
pub fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Wall-clock time in Unix milliseconds.
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn log_event(event: &Event) {
    match event {
        Event::TurnFinished(t) => {
            let since = |later: Option<Instant>| {
                t.end_of_speech
                    .zip(later)
                    .map(|(a, b)| format!("{}ms", b.saturating_duration_since(a).as_millis()))
                    .unwrap_or_else(|| "-".into())
            };
            // Times from the end of the caller's speech; bench/turn.sh reads this line.
            info!(
                "agent turn {}: stt {} first text {} first audio {} first play {}{}",
                t.turn.0,
                since(t.stt_done),
                since(t.first_text),
                since(t.first_audio),
                since(t.first_play),
                if t.barged_in { " (barged in)" } else { "" }
            );
        }
        Event::BargeIn { turn } => info!("agent turn {}: caller barged in", turn.0),
        Event::Breaker { stage, state } => {
            warn!("agent {stage:?} breaker {} (for every call)", state.name())
        }
        Event::FallbackReply { turn } => info!("agent turn {}: built-in responder", turn.0),
        Event::Dtmf(digit) => info!("agent: DTMF {digit}"),
        Event::EmptyTranscript { turn } => info!("agent turn {}: nothing heard", turn.0),
        // bench/turn.sh and the end-of-turn tests read these lines.
        Event::EndOfTurn { silence } => info!(
            "agent end of turn after {} ms of silence",
            silence.as_millis()
        ),
        Event::TurnVerdict {
            verdict,
            probability,
        } => match probability {
            Some(p) => info!("agent end of turn: {verdict:?} (p={p:.3})"),
            None => info!("agent end of turn: {verdict:?}"),
        },
        Event::StateChanged(state) => debug!("agent {state:?}"),
    }
}

/// Which clips are in the media session's playback queue, in order, and how much of
/// each is left; progress is worked out from how much the queue has drained.
#[derive(Debug, Default)]
struct Playback {
    clips: VecDeque<QueuedClip>,
}

#[derive(Debug)]
struct QueuedClip {
    id: ClipId,
    total: Duration,
    left: Duration,
}

impl Playback {
    fn push(&mut self, id: ClipId, total: Duration) {
        self.clips.push_back(QueuedClip {
            id,
            total,
            left: total,
        });
    }

    fn flush(&mut self) {
        self.clips.clear();
    }

    /// Progress of every clip that advanced, given what is still queued.
    fn progress(&mut self, queued: Duration) -> Vec<PlaybackProgress> {
        let left: Duration = self.clips.iter().map(|c| c.left).sum();
        let mut drained = left.saturating_sub(queued);
        let mut out = Vec::new();
        while let Some(clip) = self.clips.front_mut() {
            let step = drained.min(clip.left);
            if step.is_zero() && !clip.left.is_zero() {
                break;
            }
            drained -= step;
            clip.left -= step;
            out.push(PlaybackProgress {
                clip: clip.id,
                played: clip.total - clip.left,
                total: clip.total,
            });
            if clip.left.is_zero() {
                self.clips.pop_front();
            } else {
                break;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn playback_progress_follows_the_draining_queue_clip_by_clip() {
        let mut p = Playback::default();
        p.push(ClipId(1), MS(100));
        p.push(ClipId(2), MS(60));
        assert!(p.progress(MS(160)).is_empty());
        let step = p.progress(MS(120));
        assert_eq!(step.len(), 1);
        assert_eq!((step[0].clip, step[0].played), (ClipId(1), MS(40)));
        // Across the boundary: clip 1 finishes, clip 2 has played 20 ms.
        let step = p.progress(MS(40));
        assert_eq!(step.len(), 2);
        assert_eq!(
            (step[0].clip, step[0].played, step[0].total),
            (ClipId(1), MS(100), MS(100))
        );
        assert_eq!((step[1].clip, step[1].played), (ClipId(2), MS(20)));
        let step = p.progress(Duration::ZERO);
        assert_eq!((step[0].clip, step[0].played), (ClipId(2), MS(60)));
        assert!(p.progress(Duration::ZERO).is_empty());
    }

    #[test]
    fn empty_clips_finish_at_once_and_flush_forgets_everything() {
        let mut p = Playback::default();
        p.push(ClipId(1), Duration::ZERO);
        let step = p.progress(Duration::ZERO);
        assert_eq!(step.len(), 1);
        assert_eq!(step[0].played, step[0].total);
        p.push(ClipId(2), MS(100));
        p.flush();
        assert!(p.progress(Duration::ZERO).is_empty());
    }
}
