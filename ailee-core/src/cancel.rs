//! Cooperative cancellation: SIGINT/SIGTERM set a flag that long loops poll,
//! so a tool stops between writes and its cleanup (temporary files) runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

fn flag() -> &'static Arc<AtomicBool> {
    static F: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    F.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Routes SIGINT, SIGTERM and SIGHUP to the flag. A second signal of the same
/// kind while the first is pending terminates at once (exit 130).
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(flag()))?;
        signal_hook::flag::register(sig, Arc::clone(flag()))?;
    }
    // A file-size limit (`ulimit -f`) must surface as an EFBIG write error that
    // cleans up, not as a SIGXFSZ that kills the process mid-write.
    signal_hook::flag::register(signal_hook::consts::SIGXFSZ, Arc::new(AtomicBool::new(false)))?;
    Ok(())
}

/// True once a termination signal arrived.
pub fn requested() -> bool {
    flag().load(Ordering::Relaxed)
}

/// `Err(Error::Interrupted)` once a termination signal arrived.
pub fn check() -> Result<(), crate::Error> {
    if requested() {
        Err(crate::Error::Interrupted)
    } else {
        Ok(())
    }
}
