//! The addon's runtime for waits ([`Engine::acquire`](crate::engine::Engine::acquire)): two
//! Tokio worker threads whose timers sleep for every waiting request at once, started on
//! first use. An attempt that asks Redis runs in place (`block_in_place`), moving the
//! runtime's other tasks to another thread meanwhile.

use std::future::Future;
use std::sync::OnceLock;

fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("floodwall-wait")
                .enable_time()
                .build()
                .ok()
        })
        .as_ref()
}

/// Runs `task` on the wait runtime; an error when the runtime could not start (no threads).
pub(crate) fn spawn(task: impl Future<Output = ()> + Send + 'static) -> napi::Result<()> {
    let runtime = runtime().ok_or_else(|| {
        napi::Error::from_reason("floodwall: the wait runtime could not start its threads")
    })?;
    runtime.spawn(task);
    Ok(())
}
