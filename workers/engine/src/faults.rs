//! Test-only fault injection: lets the tests drive the failure paths of the pipeline (a model
//! error on one item, a panic, an out-of-memory that depends on the batch, a lost device, a
//! panic while preprocessing, an abort of the whole process) through the real worker, end to
//! end.
//!
//! Off unless the worker runs with `FUSIONSTREAM_TEST_FAULTS=1` (read once into
//! [`Settings::test_faults`](super::Settings), which in-process tests set directly); then an
//! event whose id contains `@fault:<kind>` triggers the fault at the stage it names. With it
//! off, `fault_for` answers `None` for every event.

/// Environment variable that turns fault injection on.
pub const ENV: &str = "FUSIONSTREAM_TEST_FAULTS";

/// Whether the environment turns fault injection on.
pub fn from_env() -> bool {
    std::env::var(ENV).as_deref() == Ok("1")
}

/// A fault an event can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The model fails on any batch that holds the item (`model-error`).
    ModelError,
    /// The model call panics on any batch that holds the item (`model-panic`).
    ModelPanic,
    /// The model runs out of memory on any batch of more than one item that holds it
    /// (`oom`): the item is fine alone.
    OutOfMemory,
    /// The device is lost on the batch that holds the item (`device-lost`): not the item's
    /// doing, fatal for the worker.
    DeviceLost,
    /// Preprocessing panics (`preprocess-panic`).
    PreprocessPanic,
    /// The model's output for the item holds a NaN (`nan-output`).
    NanOutput,
    /// The process aborts when the model runs a batch that holds the item (`abort`): no
    /// unwinding, nothing caught (the crash-loop guard's case).
    Abort,
    /// A generation batch that holds the item takes this many more seconds
    /// (`slow-generate-<seconds>`): the encode lane's outputs go out first.
    SlowGenerate(u64),
}

/// The fault the event `id` asks for, when injection is `on`.
pub(crate) fn fault_for(on: bool, id: &str) -> Option<Fault> {
    if !on {
        return None;
    }
    let (_, kind) = id.split_once("@fault:")?;
    Some(match kind {
        k if k.starts_with("model-error") => Fault::ModelError,
        k if k.starts_with("model-panic") => Fault::ModelPanic,
        k if k.starts_with("oom") => Fault::OutOfMemory,
        k if k.starts_with("device-lost") => Fault::DeviceLost,
        k if k.starts_with("preprocess-panic") => Fault::PreprocessPanic,
        k if k.starts_with("nan-output") => Fault::NanOutput,
        k if k.starts_with("abort") => Fault::Abort,
        k if k.starts_with("slow-generate-") => {
            let secs = k["slow-generate-".len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())?;
            Fault::SlowGenerate(secs)
        }
        _ => return None,
    })
}
