//! The revocation stream as readers see it: positions (`<ms>-<seq>`, ordered as Redis orders
//! stream ids) and events (an entry written, or a node's heartbeat). Both backends hand these out
//! through [`RevocationStore::read_after`](crate::RevocationStore::read_after).

use std::fmt;
use std::str::FromStr;

use crate::RevocationRecord;

/// A stream position: the id of a stream record (`<ms>-<seq>`), ordered as Redis orders them.
/// `0-0` is the position before any record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamPosition {
    /// The millisecond part.
    pub ms: u64,
    /// The sequence number within that millisecond.
    pub seq: u64,
}

impl StreamPosition {
    /// The position before any record.
    pub const START: Self = Self { ms: 0, seq: 0 };

    /// The position right after `self` within the same millisecond, or the first of `now_ms`
    /// when that is later: how both backends number a new record (ids only grow).
    pub fn next(self, now_ms: u64) -> Self {
        if now_ms > self.ms {
            Self { ms: now_ms, seq: 0 }
        } else {
            Self {
                ms: self.ms,
                seq: self.seq.saturating_add(1),
            }
        }
    }
}

/// Not a stream position.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a stream position (expected <ms>-<seq>)")]
pub struct InvalidPosition;

impl FromStr for StreamPosition {
    type Err = InvalidPosition;

    /// `<ms>-<seq>`, or `<ms>` alone (sequence 0), as Redis accepts them.
    fn from_str(id: &str) -> Result<Self, InvalidPosition> {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(InvalidPosition);
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| InvalidPosition)?,
            seq: seq.parse().map_err(|_| InvalidPosition)?,
        })
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One record of the revocation stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// A revocation entry was written (or its T moved forward).
    Revocation {
        /// Its stream id.
        id: StreamPosition,
        /// The entry, as stored.
        record: RevocationRecord,
    },
    /// A mandate node is alive and writing to the stream (every node, each second).
    Heartbeat {
        /// Its stream id.
        id: StreamPosition,
        /// The node's name.
        node: String,
        /// When it was written, by the store's clock (ms).
        at: i64,
    },
}

impl StreamEvent {
    /// Its stream id.
    pub fn id(&self) -> StreamPosition {
        match self {
            Self::Revocation { id, .. } | Self::Heartbeat { id, .. } => *id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_like_redis() {
        let parse = |id: &str| id.parse::<StreamPosition>().ok();
        assert_eq!(parse("0-0"), Some(StreamPosition::START));
        assert_eq!(parse("17-3"), Some(StreamPosition { ms: 17, seq: 3 }));
        assert_eq!(parse("17"), Some(StreamPosition { ms: 17, seq: 0 }));
        for bad in ["x-1", "", "-", "1-", "-1", "+1-2", "1-2-3", " 1-2", "$"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert!(parse("9-99") < parse("10-0"));
        assert!(parse("10-1") > parse("10-0"));
        assert_eq!(StreamPosition { ms: 5, seq: 2 }.to_string(), "5-2");
    }

    #[test]
    fn new_ids_only_grow() {
        let last = StreamPosition { ms: 100, seq: 4 };
        assert_eq!(last.next(101), StreamPosition { ms: 101, seq: 0 });
        assert_eq!(last.next(100), StreamPosition { ms: 100, seq: 5 });
        // A clock that went back never produces an older id.
        assert_eq!(last.next(50), StreamPosition { ms: 100, seq: 5 });
    }
}
