//! A private tokio runtime for the blocking side of an async stage (LanceDB, the HTTP
//! client), safe to drop anywhere.
//!
//! Dropping a `tokio::runtime::Runtime` from inside another runtime panics ("cannot drop
//! a runtime in a context where blocking is not allowed"), and the stages are shared by
//! call tasks, so the last reference may well go on a tokio worker. This wrapper shuts
//! the runtime down in the background instead.

use std::future::Future;

use tokio::runtime::Runtime;

pub struct PrivateRuntime(Option<Runtime>);

impl PrivateRuntime {
    pub fn new(runtime: Runtime) -> Self {
        Self(Some(runtime))
    }

    /// Runs `future` to completion on this runtime. Not from inside an async task.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.0
            .as_ref()
            .expect("the runtime is only taken on drop")
            .block_on(future)
    }
}

impl Drop for PrivateRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
