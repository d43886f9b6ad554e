//! Test support compiled only behind features: fuzz harnesses over the real room and store
//! (`fuzzing`), a room driven directly for the benches (`bench`), and crash fault injection for
//! the crash tests (`fault`). None of it is in a release build.

#[cfg(feature = "bench-internals")]
pub mod bench;
#[cfg(feature = "bench-internals")]
pub mod bench_history;
#[cfg(feature = "fault-injection")]
pub(crate) mod fault;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
