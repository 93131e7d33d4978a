//! The tamper-evident journal of mandate's ledger (docs/EVIDENCE.md): every ledger record (hops,
//! revocations, audit events) becomes an [`Entry`] that commits to the entry before it by hash,
//! so that altering, removing or reordering any entry breaks the chain of hashes; signed
//! [`checkpoint`]s pin the head from time to time, so that even a history rewritten consistently
//! (every hash recomputed) is caught. The [`Verifier`] reads entries one at a time in bounded
//! memory and names each finding; [`ocsf`] maps entries to OCSF 1.8 events for a SIEM.
//!
//! Pure logic: no HTTP, no Redis, no clock (times are given).

pub mod checkpoint;
mod entry;
pub mod export;
pub mod ocsf;
mod verify;

pub use checkpoint::{
    sign_checkpoint, verify_checkpoint, Checkpoint, CheckpointClaims, CheckpointError,
    TYP_CHECKPOINT,
};
pub use entry::{canonical_json, entry_hash, Entry, Head, GENESIS};
pub use export::{
    verify_export, CheckpointKeys, ExportEnd, ExportError, ExportHeader, ExportLine, ExportReport,
    InRange, Selection, EXPORT_FORMAT,
};
pub use verify::{Finding, Report, Verifier, REORDER_WINDOW};
