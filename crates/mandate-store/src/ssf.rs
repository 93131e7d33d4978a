//! Shared Signals streams (SSF 1.0) that mandate transmits to, and the durable queue of Security
//! Event Tokens waiting for each: an event is queued before the revocation that raised it
//! answers, and leaves the queue only when its receiver acknowledged it (at least once).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use mandate_model::ClientId;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// RFC 8935 push delivery.
pub const DELIVERY_PUSH: &str = "urn:ietf:rfc:8935";
/// RFC 8936 poll delivery.
pub const DELIVERY_POLL: &str = "urn:ietf:rfc:8936";

/// How a stream's SETs reach its receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method")]
pub enum Delivery {
    /// mandate POSTs each SET to the receiver's endpoint.
    #[serde(rename = "urn:ietf:rfc:8935")]
    Push {
        /// The receiver's endpoint.
        endpoint_url: String,
        /// The `Authorization` header value mandate sends, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authorization_header: Option<String>,
    },
    /// The receiver polls mandate's endpoint for the stream.
    #[serde(rename = "urn:ietf:rfc:8936")]
    Poll {
        /// mandate's poll endpoint for the stream.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint_url: Option<String>,
    },
}

/// A stream's status (SSF 1.0 §8.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamStatus {
    /// Events are queued and delivered.
    Enabled,
    /// Events are queued and held until the stream is enabled again.
    Paused,
    /// Events are neither queued nor delivered.
    Disabled,
}

/// A stream, owned by the resource server that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsfStream {
    /// Its id.
    pub stream_id: String,
    /// The resource server that owns it; it receives events about tokens of its audiences only.
    pub owner: ClientId,
    /// The receiver's audience (the SETs' `aud`).
    pub aud: Vec<String>,
    /// The event types the receiver asked for.
    pub events_requested: Vec<String>,
    /// How SETs reach it.
    pub delivery: Delivery,
    /// Enabled, paused or disabled.
    pub status: StreamStatus,
    /// Why it is in that status, if said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The receiver's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it was created (seconds).
    pub created_at: i64,
    /// Users the receiver removed from the stream (SSF 1.0 §8.1.3.3), as mandate's tokens name
    /// them (`sub`): nothing is sent about them until they are added again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_subjects: Vec<String>,
}

/// A SET waiting for its receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedSet {
    /// Its `jti`: what the receiver acknowledges.
    pub jti: String,
    /// The signed SET.
    pub set: String,
}

/// A stream's queue as an operator sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// SETs waiting.
    pub pending: u64,
    /// SETs dropped because the queue was full (oldest first), since the stream was created.
    pub dropped: u64,
}

/// The streams and their queues.
#[async_trait]
pub trait SsfStreamStore: Send + Sync + std::fmt::Debug {
    /// Stores `stream` under its id, creating or replacing it.
    async fn put(&self, stream: &SsfStream) -> Result<(), StoreError>;
    /// The stream with this id.
    async fn get(&self, stream_id: &str) -> Result<Option<SsfStream>, StoreError>;
    /// Every stream, ordered by id.
    async fn all(&self) -> Result<Vec<SsfStream>, StoreError>;
    /// Deletes the stream and its queue; returns whether it existed.
    async fn delete(&self, stream_id: &str) -> Result<bool, StoreError>;
    /// Appends `sets` to the stream's queue, in order, keeping at most `cap` (the oldest are
    /// dropped and counted).
    async fn enqueue(
        &self,
        stream_id: &str,
        sets: &[QueuedSet],
        cap: u64,
    ) -> Result<(), StoreError>;
    /// The oldest `max` SETs waiting, oldest first; they stay queued until acknowledged.
    async fn pending(&self, stream_id: &str, max: u64) -> Result<Vec<QueuedSet>, StoreError>;
    /// Removes the acknowledged SETs; returns how many were waiting.
    async fn ack(&self, stream_id: &str, jtis: &[String]) -> Result<u64, StoreError>;
    /// The queue's depth.
    async fn depth(&self, stream_id: &str) -> Result<QueueDepth, StoreError>;
}

/// The in-memory streams: one process, lost on restart like the rest of the memory store.
#[derive(Debug, Default)]
pub struct MemorySsfStreams {
    inner: Mutex<BTreeMap<String, Held>>,
}

/// A stream, its queue, and how many SETs its cap has dropped.
type Held = (SsfStream, VecDeque<QueuedSet>, u64);

impl MemorySsfStreams {
    /// No streams.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Held>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SsfStreamStore for MemorySsfStreams {
    async fn put(&self, stream: &SsfStream) -> Result<(), StoreError> {
        let mut streams = self.lock();
        match streams.get_mut(&stream.stream_id) {
            Some(entry) => entry.0 = stream.clone(),
            None => {
                streams.insert(
                    stream.stream_id.clone(),
                    (stream.clone(), VecDeque::new(), 0),
                );
            }
        }
        Ok(())
    }

    async fn get(&self, stream_id: &str) -> Result<Option<SsfStream>, StoreError> {
        Ok(self.lock().get(stream_id).map(|entry| entry.0.clone()))
    }

    async fn all(&self) -> Result<Vec<SsfStream>, StoreError> {
        Ok(self.lock().values().map(|entry| entry.0.clone()).collect())
    }

    async fn delete(&self, stream_id: &str) -> Result<bool, StoreError> {
        Ok(self.lock().remove(stream_id).is_some())
    }

    async fn enqueue(
        &self,
        stream_id: &str,
        sets: &[QueuedSet],
        cap: u64,
    ) -> Result<(), StoreError> {
        let mut streams = self.lock();
        let Some((_, queue, dropped)) = streams.get_mut(stream_id) else {
            return Ok(());
        };
        for queued in sets {
            if !queue.iter().any(|q| q.jti == queued.jti) {
                queue.push_back(queued.clone());
            }
        }
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        while queue.len() > cap {
            queue.pop_front();
            *dropped += 1;
        }
        Ok(())
    }

    async fn pending(&self, stream_id: &str, max: u64) -> Result<Vec<QueuedSet>, StoreError> {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        Ok(self
            .lock()
            .get(stream_id)
            .map(|(_, queue, _)| queue.iter().take(max).cloned().collect())
            .unwrap_or_default())
    }

    async fn ack(&self, stream_id: &str, jtis: &[String]) -> Result<u64, StoreError> {
        let mut streams = self.lock();
        let Some((_, queue, _)) = streams.get_mut(stream_id) else {
            return Ok(0);
        };
        let before = queue.len();
        queue.retain(|queued| !jtis.contains(&queued.jti));
        Ok((before - queue.len()) as u64)
    }

    async fn depth(&self, stream_id: &str) -> Result<QueueDepth, StoreError> {
        Ok(self
            .lock()
            .get(stream_id)
            .map(|(_, queue, dropped)| QueueDepth {
                pending: queue.len() as u64,
                dropped: *dropped,
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_streams_meet_the_contract() {
        crate::contract::ssf_streams(&MemorySsfStreams::new()).await;
    }
}
