//! rayon's pool over Web Workers, in the module built with wasm threads (`+atomics`: shared
//! memory; web/build.sh builds it beside the single-threaded one, and the npm worker loads it
//! only on a cross-origin-isolated page, where `SharedArrayBuffer` exists).
//!
//! std cannot spawn threads in the browser, so the pool's threads are Web Workers the npm worker
//! starts (`web/npm/thread.js`): each instantiates this module on the same memory and calls
//! [`run_pool_thread`], which blocks until [`build_thread_pool`] hands it one of rayon's threads
//! to run. The workers are started and waiting before the pool exists, so a worker that fails
//! to start leaves no pool thread that never runs (a job queued on it would hang the engine):
//! the npm worker then falls back to the single-threaded module.

use std::sync::{Condvar, Mutex};

use wasm_bindgen::prelude::*;

/// rayon's threads, built and not yet taken by a worker.
static PENDING: Mutex<Vec<rayon::ThreadBuilder>> = Mutex::new(Vec::new());
static HANDED_OUT: Condvar = Condvar::new();

/// What a thread worker needs to instantiate this module on this module's memory:
/// `[WebAssembly.Module, WebAssembly.Memory]`.
#[wasm_bindgen(js_name = threadPoolParts)]
pub fn thread_pool_parts() -> js_sys::Array {
    js_sys::Array::of2(&wasm_bindgen::module(), &wasm_bindgen::memory())
}

/// Builds rayon's global pool with `threads` threads, each run by a worker blocked in
/// [`run_pool_thread`]. Call once, after `threads` workers reported ready, before any parallel
/// work (rayon's first use fixes its global pool).
#[wasm_bindgen(js_name = buildThreadPool)]
pub fn build_thread_pool(threads: usize) -> Result<(), JsError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("transmamba-{i}"))
        .spawn_handler(|thread| {
            PENDING
                .lock()
                .map_err(|_| std::io::Error::other("the pool's queue is poisoned"))?
                .push(thread);
            HANDED_OUT.notify_all();
            Ok(())
        })
        .build_global()
        .map_err(|e| JsError::new(&format!("cannot build the thread pool: {e}")))
}

/// Runs one of rayon's threads on the calling worker; returns only when the pool ends (never,
/// for the global pool). Blocks (Atomics.wait) until [`build_thread_pool`] made one.
#[wasm_bindgen(js_name = runPoolThread)]
pub fn run_pool_thread() -> Result<(), JsError> {
    let thread = {
        let mut pending = PENDING
            .lock()
            .map_err(|_| JsError::new("the pool's queue is poisoned"))?;
        loop {
            if let Some(t) = pending.pop() {
                break t;
            }
            pending = HANDED_OUT
                .wait(pending)
                .map_err(|_| JsError::new("the pool's queue is poisoned"))?;
        }
    };
    thread.run();
    Ok(())
}
