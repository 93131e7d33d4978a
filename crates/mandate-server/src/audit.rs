//! The audit stream. The stream itself (events, filters, the memory and Redis backends) lives in
//! mandate-store; the services of mandate-core append to it.

pub use mandate_store::{
    AuditEvent, AuditFilter, AuditLog, AuditUnavailable, MemoryAuditLog, RedisAuditLog,
    AUDIT_STREAM_KEY, FILTER_SCAN_MAX,
};
