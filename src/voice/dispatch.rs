//! Carries out a `Conversation`'s actions with the real stages, for the per-call tokio
//! task: inference goes to the bounded worker pools, the language model streams in a
//! tokio task, memory writes happen in the background, and results come back as
//! [`StageResult`]s on the call's channel. What concerns the media path (play, flush,
//! hang up) is handed back as a [`MediaCommand`].
//!
//! The call task owns the `Conversation`; nothing here holds it.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sofia_voice::{
    Action, Audio, ClipId, Conversation, HangUpReason, Memory, Recollection, ReplyChunk,
    StageError, Stt, Transcript, Tts, TurnCheckId, TurnId,
};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;

use crate::voice::{OpenAiLlm, PromptCache, SmartTurn, WorkerPool};

/// A stage's answer, to be fed back into the call's `Conversation`.
#[derive(Debug)]
pub enum StageResult {
    Transcript {
        turn: TurnId,
        result: Result<Transcript, StageError>,
    },
    Reply {
        turn: TurnId,
        chunk: ReplyChunk,
    },
    Audio {
        clip: ClipId,
        result: Result<Audio, StageError>,
    },
    /// The end-of-turn model's verdict, and how long its inference took (`None` when it
    /// did not run).
    TurnPrediction {
        check: TurnCheckId,
        result: Result<f32, StageError>,
        took: Option<Duration>,
    },
    /// A transcript, with what memory recalled for its words (None: not in time).
    Recalled {
        turn: TurnId,
        transcript: Transcript,
        recollection: Option<Recollection>,
    },
}

impl StageResult {
    pub fn apply(self, conversation: &mut Conversation, now: Instant) {
        match self {
            StageResult::Transcript { turn, result } => {
                conversation.handle_transcript(now, turn, result)
            }
            StageResult::Reply { turn, chunk } => conversation.handle_reply_text(now, turn, chunk),
            StageResult::Audio { clip, result } => conversation.handle_tts_audio(now, clip, result),
            StageResult::TurnPrediction { check, result, .. } => {
                conversation.handle_turn_prediction(now, check, result)
            }
            StageResult::Recalled {
                turn,
                transcript,
                recollection,
            } => {
                if let Some(r) = recollection {
                    conversation.set_recollection(r);
                }
                conversation.handle_transcript(now, turn, Ok(transcript))
            }
        }
    }
}

/// What the media side of the call must do.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaCommand {
    /// Queue this audio (at its own rate: resample and encode for the call's codec) and
    /// report progress for `clip`. Empty audio: report it finished at once.
    Play {
        clip: ClipId,
        audio: Audio,
    },
    /// Drop everything queued, now.
    Flush,
    HangUp(HangUpReason),
    /// Connect the caller to this extension (the agent has said so).
    Transfer(String),
}

/// The loaded stages, shared by every call.
pub struct Stages {
    pub stt: Arc<dyn Stt>,
    pub tts: Arc<dyn Tts>,
    pub llm: Option<Arc<OpenAiLlm>>,
    pub memory: Arc<dyn Memory>,
    pub prompts: Arc<PromptCache>,
    pub stt_pool: Arc<WorkerPool>,
    pub tts_pool: Arc<WorkerPool>,
    /// The end-of-turn model, when the profile uses it, and the pool it runs on (its own
    /// thread, so a verdict never waits behind a transcription).
    pub turn_model: Option<Arc<SmartTurn>>,
    pub turn_pool: Arc<WorkerPool>,
}

/// Per-call bookkeeping for work that can be stopped.
#[derive(Default)]
pub struct InFlight {
    generations: HashMap<TurnId, AbortHandle>,
    /// Transcriptions not yet finished, by turn: set to drop one. In model mode every
    /// short pause starts an early transcription, so stale ones must not hold the STT
    /// workers (they used to run to completion, queued behind each other).
    transcriptions: HashMap<TurnId, Arc<AtomicBool>>,
}

impl Stages {
    /// Starts `action`. Must be called inside a tokio runtime. Results go to `results`
    /// (unbounded, but bounded in practice: the controller has at most a few requests
    /// outstanding per call).
    pub fn dispatch(
        &self,
        action: Action,
        results: &UnboundedSender<StageResult>,
        in_flight: &mut InFlight,
    ) -> Option<MediaCommand> {
        match action {
            Action::Transcribe {
                turn,
                audio,
                speech,
            } => {
                let stt = Arc::clone(&self.stt);
                // Forget the flags of finished jobs (a job holds its clone until done).
                in_flight
                    .transcriptions
                    .retain(|_, flag| Arc::strong_count(flag) > 1);
                let cancelled = Arc::new(AtomicBool::new(false));
                in_flight
                    .transcriptions
                    .insert(turn, Arc::clone(&cancelled));
                let job = self
                    .stt_pool
                    .try_run(move || stt.transcribe_cancellable(&audio, speech, &cancelled));
                let tx = results.clone();
                match job {
                    Ok(rx) => {
                        tokio::spawn(async move {
                            let result = rx.await.unwrap_or_else(|_| {
                                Err(StageError::Inference(
                                    "the transcription job panicked".into(),
                                ))
                            });
                            let _ = tx.send(StageResult::Transcript { turn, result });
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(StageResult::Transcript {
                            turn,
                            result: Err(e),
                        });
                    }
                }
                None
            }
            Action::PredictTurnEnd { check, audio } => {
                self.predict_turn_end(check, audio, results);
                None
            }
            Action::Generate { turn, request } => {
                let tx = results.clone();
                let Some(llm) = self.llm.clone() else {
                    // The controller only asks when configured to; answer as a failure so
                    // the built-in responder takes over.
                    let failed = StageError::Unreachable("no language model configured".into());
                    let _ = tx.send(StageResult::Reply {
                        turn,
                        chunk: ReplyChunk::Failed(failed),
                    });
                    return None;
                };
                let task = tokio::spawn(async move {
                    let text_tx = tx.clone();
                    let mut on_text = move |t: &str| {
                        let chunk = ReplyChunk::Text(t.to_string());
                        match text_tx.send(StageResult::Reply { turn, chunk }) {
                            Ok(()) => ControlFlow::Continue(()),
                            Err(_) => ControlFlow::Break(()), // the call is gone
                        }
                    };
                    let chunk = match llm.stream(&request, &mut on_text).await {
                        Ok(()) => ReplyChunk::End,
                        Err(e) => ReplyChunk::Failed(e),
                    };
                    let _ = tx.send(StageResult::Reply { turn, chunk });
                });
                in_flight.generations.insert(turn, task.abort_handle());
                None
            }
            Action::CancelGenerate { turn } | Action::Cancel { turn } => {
                if let Some(task) = in_flight.generations.remove(&turn) {
                    task.abort();
                }
                // A transcription still queued is skipped, one running stops early (where
                // the stage can); the controller ignores what comes back either way.
                // Synthesis jobs run to completion: they are short, one sentence each.
                if let Some(flag) = in_flight.transcriptions.remove(&turn) {
                    flag.store(true, Ordering::Relaxed);
                }
                None
            }
            Action::Synthesize { clip, text } => {
                let tts = Arc::clone(&self.tts);
                let tx = results.clone();
                match self.tts_pool.try_run(move || tts.synthesize(&text)) {
                    Ok(rx) => {
                        tokio::spawn(async move {
                            let result = rx.await.unwrap_or_else(|_| {
                                Err(StageError::Inference("the synthesis job panicked".into()))
                            });
                            let _ = tx.send(StageResult::Audio { clip, result });
                        });
                    }
                    Err(e) => {
                        let _ = tx.send(StageResult::Audio {
                            clip,
                            result: Err(e),
                        });
                    }
                }
                None
            }
            Action::Play { clip, audio } => Some(MediaCommand::Play { clip, audio }),
            Action::PlayPrompt { clip, prompt } => {
                let audio = self.prompts.get(prompt).cloned().unwrap_or(Audio {
                    samples: Vec::new(),
                    sample_rate: 8_000,
                });
                Some(MediaCommand::Play { clip, audio })
            }
            Action::FlushPlayback => Some(MediaCommand::Flush),
            Action::Remember(turn) => {
                // Queues the turn to the memory's writer thread; never blocks.
                if let Err(e) = self.memory.remember(&turn) {
                    tracing::warn!(error = %e, "could not store a turn in memory");
                }
                None
            }
            Action::HangUp { reason } => Some(MediaCommand::HangUp(reason)),
            Action::Transfer { target } => Some(MediaCommand::Transfer(target)),
        }
    }

    /// Runs the end-of-turn model on the turn pool; without a model, or with the pool
    /// full, the answer is an error and the conversation falls back to its silence rule.
    fn predict_turn_end(
        &self,
        check: TurnCheckId,
        audio: Vec<f32>,
        results: &UnboundedSender<StageResult>,
    ) {
        let tx = results.clone();
        let Some(model) = self.turn_model.clone() else {
            let _ = tx.send(StageResult::TurnPrediction {
                check,
                result: Err(StageError::Unreachable(
                    "no end-of-turn model loaded".into(),
                )),
                took: None,
            });
            return;
        };
        let job = self.turn_pool.try_run(move || {
            let started = Instant::now();
            (model.predict(&audio), started.elapsed())
        });
        match job {
            Ok(rx) => {
                tokio::spawn(async move {
                    let (result, took) = match rx.await {
                        Ok((result, took)) => (result, Some(took)),
                        Err(_) => (
                            Err(StageError::Inference("the end-of-turn job panicked".into())),
                            None,
                        ),
                    };
                    let _ = tx.send(StageResult::TurnPrediction {
                        check,
                        result,
                        took,
                    });
                });
            }
            Err(e) => {
                let _ = tx.send(StageResult::TurnPrediction {
                    check,
                    result: Err(e),
                    took: None,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The cancellation bookkeeping, with stand-in stages (the real Whisper is tested
    //! through calls; what is checked here is which jobs reach the stage at all).
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use sofia_voice::{Recollection, SpeechStats, TurnRecord};

    /// Takes 300 ms per transcription and counts the ones it was asked to do.
    struct SlowStt(AtomicUsize);
    impl Stt for SlowStt {
        fn transcribe(&self, _: &[f32], _: SpeechStats) -> Result<Transcript, StageError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            Ok(Transcript::heard("words"))
        }
    }
    struct Silent;
    impl Tts for Silent {
        fn synthesize(&self, _: &str) -> Result<Audio, StageError> {
            Ok(Audio {
                samples: Vec::new(),
                sample_rate: 16_000,
            })
        }
    }
    struct Forgetful;
    impl Memory for Forgetful {
        fn open_call(&self, _: &str, _: &str, _: i64) -> Result<Recollection, StageError> {
            Ok(Recollection::default())
        }
        fn recall(&self, _: &str, _: &str, _: i64) -> Result<Recollection, StageError> {
            Ok(Recollection::default())
        }
        fn remember(&self, _: &TurnRecord) -> Result<(), StageError> {
            Ok(())
        }
        fn close_call(&self, _: &str, _: &str) -> Result<(), StageError> {
            Ok(())
        }
    }

    fn transcribe(turn: u64) -> Action {
        Action::Transcribe {
            turn: TurnId(turn),
            audio: vec![0.0; 16_000],
            speech: SpeechStats {
                voiced: Duration::from_secs(1),
                total: Duration::from_secs(1),
            },
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_transcription_waiting_in_the_queue_never_reaches_the_stage() {
        let stt = Arc::new(SlowStt(AtomicUsize::new(0)));
        let stages = Stages {
            stt: Arc::clone(&stt) as Arc<dyn Stt>,
            tts: Arc::new(Silent),
            llm: None,
            memory: Arc::new(Forgetful),
            prompts: Arc::new(PromptCache::synthesize(&Silent).expect("prompts")),
            stt_pool: Arc::new(WorkerPool::new("stt", 1, 8).expect("pool")),
            tts_pool: Arc::new(WorkerPool::new("tts", 1, 8).expect("pool")),
            turn_model: None,
            turn_pool: Arc::new(WorkerPool::new("turn", 1, 8).expect("pool")),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut in_flight = InFlight::default();
        // Three early transcriptions on one worker; the caller talks over the last two.
        for turn in 1..=3 {
            stages.dispatch(transcribe(turn), &tx, &mut in_flight);
        }
        for turn in 2..=3 {
            stages.dispatch(Action::Cancel { turn: TurnId(turn) }, &tx, &mut in_flight);
        }
        let mut results = HashMap::new();
        for _ in 0..3 {
            match rx.recv().await.expect("a result per transcription") {
                StageResult::Transcript { turn, result } => {
                    results.insert(turn.0, result);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(results[&1].is_ok(), "{:?}", results[&1]);
        assert_eq!(results[&2], Err(StageError::Cancelled));
        assert_eq!(results[&3], Err(StageError::Cancelled));
        assert_eq!(
            stt.0.load(Ordering::SeqCst),
            1,
            "the stage ran only the transcription still wanted"
        );
        assert!(
            !in_flight.transcriptions.contains_key(&TurnId(2))
                && !in_flight.transcriptions.contains_key(&TurnId(3)),
            "a cancelled turn's flag is not kept"
        );
    }
}
