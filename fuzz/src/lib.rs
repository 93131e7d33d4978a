//! The harness functions the fuzz targets call. They live in `harness.rs` so that the workspace
//! test suite can compile and replay them too (see that file's header).

mod harness;

pub use harness::*;
