//! A small, bounded pool of OS threads for CPU-bound inference (Whisper, Piper).
//!
//! Jobs are closures; the result comes back on a oneshot channel that a tokio task can
//! `.await` or a plain thread can `blocking_recv`. The queue is bounded: when it is full,
//! [`WorkerPool::try_run`] refuses with [`StageError::Busy`] instead of letting work pile
//! up (back-pressure; the controller's breaker and fallbacks take it from there). Tokio
//! workers never run inference.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sofia_voice::StageError;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct WorkerPool {
    name: String,
    sender: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// `threads` workers sharing a queue of at most `queue` waiting jobs.
    pub fn new(name: &str, threads: usize, queue: usize) -> std::io::Result<Self> {
        let (sender, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    // Hold the lock only while taking a job, not while running it.
                    let job = match receiver.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return, // a worker panicked while holding the lock
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return, // the pool was dropped
                    }
                })?;
            workers.push(handle);
        }
        Ok(Self {
            name: name.to_string(),
            sender: Some(sender),
            workers,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Queues `job`; its result arrives on the returned receiver. A panicking job drops
    /// its sender, which the receiver sees as an error.
    pub fn try_run<T, F>(&self, job: F) -> Result<oneshot::Receiver<T>, StageError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let boxed: Job = Box::new(move || {
            let _ = tx.send(job());
        });
        let sender = self.sender.as_ref().expect("the sender lives until drop");
        match sender.try_send(boxed) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(StageError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(StageError::Unreachable(format!(
                "worker pool {} has stopped",
                self.name
            ))),
        }
    }

    /// Runs `job` on the pool and waits for it (for callers that are not async).
    pub fn run_blocking<T, F>(&self, job: F) -> Result<T, StageError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.try_run(job)?
            .blocking_recv()
            .map_err(|_| StageError::Inference(format!("a {} job panicked", self.name)))
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.sender.take();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
