//! The panic boundary every entry point runs behind: no unwind crosses into C.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Failure, failure, fw_result, record};

/// Runs `body` behind a panic boundary: `FW_OK`, or the failure's code with its message
/// recorded for this thread (`FW_PANIC` when `body` panicked).
pub(crate) fn guard(body: impl FnOnce() -> Result<(), Failure>) -> fw_result {
    let outcome = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
        Err(failure(
            fw_result::FW_PANIC,
            "floodwall panicked (a bug; please report it)",
        ))
    });
    match outcome {
        Ok(()) => fw_result::FW_OK,
        Err(f) => record(f),
    }
}
