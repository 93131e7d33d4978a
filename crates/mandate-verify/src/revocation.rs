//! Where a verifier learns whether anything on a token's chain is revoked.

use std::fmt::Debug;

use async_trait::async_trait;
use mandate_revocation::{RevocationList, TokenFacts, Verdict};

use crate::VerifyError;

/// A view of mandate's revocation list (DESIGN.md section 6).
///
/// Given the facts of a token (its hop, its ancestors, its chain, every agent on it, its
/// subject and `iat`), say whether an entry covers it. An implementation that cannot tell must
/// return [`VerifyError::RevocationUnavailable`], never [`Verdict::Live`]: the verifier then
/// refuses the token (fail closed).
#[async_trait]
pub trait RevocationSource: Send + Sync + Debug {
    /// The verdict for `facts`.
    async fn verdict(&self, facts: &TokenFacts) -> Result<Verdict, VerifyError>;

    /// How this source follows revocations, as participation reports name it: `followed`,
    /// `direct` or `feed`.
    fn mode(&self) -> &'static str {
        "direct"
    }

    /// The age of its view of the revocation list, for sources that keep a copy.
    fn view_age(&self) -> Option<std::time::Duration> {
        None
    }
}

/// `Direct` mode: every verification asks the revocation store itself, in one round trip
/// (for Redis: `TIME` and one `MGET` of every key the token's facts name, on the one shard of the
/// `{mandate:rev}` hash tag), so a revocation is seen by the very next verification.
///
/// Wraps any [`RevocationList`] (the stream is not needed: every check reads the list); in production, mandate's Redis through
/// [`RedisRevocations`](mandate_revocation::RedisRevocations) over a reconnecting connection
/// (see `Direct::redis`, feature `redis`), connected as the read-only ACL user that
/// `mandate redis acl` prints. A store error is [`VerifyError::RevocationUnavailable`].
#[derive(Debug, Clone)]
pub struct Direct<S>(pub S);

#[async_trait]
impl<S: RevocationList> RevocationSource for Direct<S> {
    async fn verdict(&self, facts: &TokenFacts) -> Result<Verdict, VerifyError> {
        self.0
            .check(facts)
            .await
            .map(|checked| checked.verdict)
            .map_err(|e| VerifyError::RevocationUnavailable(e.0))
    }
}

#[cfg(feature = "redis")]
mod redis_direct {
    use std::time::Duration;

    use mandate_revocation::RedisRevocations;
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};

    use super::Direct;
    use crate::VerifyError;

    /// How long connecting may take: an unreachable store should fail verifications quickly.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// How long one check may wait for its reply.
    const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
    /// Reconnection attempts per failed connection before waiting commands fail; each later
    /// command starts a new round, so a Redis that comes back is picked up without a restart.
    const RECONNECT_RETRIES: usize = 2;
    /// The longest pause between reconnection attempts.
    const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

    /// Opens a reconnecting connection whose replies may take `response_timeout`.
    pub(crate) async fn connection(
        url: &str,
        response_timeout: Duration,
    ) -> Result<ConnectionManager, VerifyError> {
        let client = redis::Client::open(url)
            .map_err(|e| VerifyError::RevocationUnavailable(format!("invalid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY);
        ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| VerifyError::RevocationUnavailable(e.to_string()))
    }

    impl Direct<RedisRevocations<ConnectionManager>> {
        /// Connects to mandate's Redis (`redis://` or `rediss://`, with the read-only ACL user's
        /// credentials in the URL) through a `ConnectionManager`, which reconnects by itself.
        /// Connecting and each check time out after two seconds.
        pub async fn redis(url: &str) -> Result<Self, VerifyError> {
            let connection = connection(url, RESPONSE_TIMEOUT).await?;
            Ok(Direct(RedisRevocations::new(connection)))
        }
    }
}

/// `Followed` mode (the default for apps that can reach Redis): a background task keeps an
/// in-process copy of the live revocation entries current by following mandate's revocation
/// stream (snapshot, then `XREAD`; a new snapshot when the stream was trimmed past it or after an
/// error), so a verification costs no I/O. It fails closed: once the newest server heartbeat it
/// has received is older than the configured bound, every verification is refused with
/// [`VerifyError::RevocationUnavailable`] until the stream is followed again.
#[cfg(feature = "redis")]
#[derive(Debug, Clone)]
pub struct Followed(pub mandate_revocation::RevocationFollower);

#[cfg(feature = "redis")]
impl Followed {
    /// Follows the revocation stream of mandate's Redis at `url` (with the read-only ACL user's
    /// credentials in it) on a connection of its own — a blocking `XREAD` must not hold up other
    /// commands — and waits up to `ready_within` for the first snapshot.
    pub async fn redis(
        url: &str,
        config: mandate_revocation::FollowerConfig,
        ready_within: std::time::Duration,
    ) -> Result<Self, VerifyError> {
        // Replies to a blocking read may take the whole block time.
        let timeout = config.block + std::time::Duration::from_secs(2);
        let connection = redis_direct::connection(url, timeout).await?;
        let follower = mandate_revocation::RevocationFollower::spawn(connection, config);
        if !follower.ready(ready_within).await {
            follower.stop();
            return Err(VerifyError::RevocationUnavailable(
                "the revocation stream could not be read".into(),
            ));
        }
        Ok(Self(follower))
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl RevocationSource for Followed {
    async fn verdict(&self, facts: &TokenFacts) -> Result<Verdict, VerifyError> {
        self.0
            .check(facts)
            .map_err(|e| VerifyError::RevocationUnavailable(e.to_string()))
    }

    fn mode(&self) -> &'static str {
        "followed"
    }

    fn view_age(&self) -> Option<std::time::Duration> {
        Some(self.0.view_age())
    }
}
