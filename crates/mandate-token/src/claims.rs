use serde::{Deserialize, Serialize};

/// A JSON member that may be a single value or an array of values (`aud`, ID-JAG `resource`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// An array of values.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The values as a slice.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(v) => std::slice::from_ref(v),
            OneOrMany::Many(v) => v,
        }
    }
}

/// The registered time claims of a JWT checked against `now` with a clock-skew allowance
/// (RFC 7519 §4.1.4–4.1.6, RFC 8725 §3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWindow {
    /// The current time, in seconds.
    pub now: i64,
    /// The allowed clock difference, in seconds.
    pub skew: i64,
}

/// Why a JWT's time claims were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// `exp` is missing where it is required.
    #[error("exp is required")]
    MissingExp,
    /// `iat` is missing where it is required.
    #[error("iat is required")]
    MissingIat,
    /// `exp` has passed (beyond the skew).
    #[error("token has expired")]
    Expired,
    /// `nbf` is still ahead (beyond the skew).
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the skew).
    #[error("token is issued in the future")]
    IssuedInFuture,
    /// The token lives longer than allowed (`exp` − `iat`, or `exp` − now without `iat`).
    #[error("token lifetime exceeds the allowed maximum")]
    LifetimeTooLong,
    /// The token was issued longer ago than allowed.
    #[error("token is older than the allowed maximum")]
    TooOld,
}

impl TimeWindow {
    /// Checks `exp` (required), `nbf` and `iat` (each when present), and that the token's
    /// lifetime is at most `max_lifetime` seconds: `exp − iat` when `iat` is present, and in any
    /// case `exp − now`, so a token without `iat` cannot claim a longer life.
    pub fn check(
        &self,
        exp: Option<i64>,
        nbf: Option<i64>,
        iat: Option<i64>,
        max_lifetime: i64,
    ) -> Result<(), TimeError> {
        let exp = exp.ok_or(TimeError::MissingExp)?;
        if exp <= self.now.saturating_sub(self.skew) {
            return Err(TimeError::Expired);
        }
        if let Some(nbf) = nbf {
            if nbf > self.now.saturating_add(self.skew) {
                return Err(TimeError::NotYetValid);
            }
        }
        if let Some(iat) = iat {
            if iat > self.now.saturating_add(self.skew) {
                return Err(TimeError::IssuedInFuture);
            }
            if exp.saturating_sub(iat) > max_lifetime {
                return Err(TimeError::LifetimeTooLong);
            }
        }
        if exp.saturating_sub(self.now) > max_lifetime.saturating_add(self.skew) {
            return Err(TimeError::LifetimeTooLong);
        }
        Ok(())
    }

    /// Like [`TimeWindow::check`], and also requires `iat` and that the token is at most
    /// `max_age` seconds old (DESIGN.md section 5 for upstream subject tokens).
    pub fn check_with_age(
        &self,
        exp: Option<i64>,
        nbf: Option<i64>,
        iat: Option<i64>,
        max_age: i64,
    ) -> Result<(), TimeError> {
        let issued = iat.ok_or(TimeError::MissingIat)?;
        if self.now.saturating_sub(issued) > max_age.saturating_add(self.skew) {
            return Err(TimeError::TooOld);
        }
        self.check(exp, nbf, iat, max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: TimeWindow = TimeWindow {
        now: 1_000_000,
        skew: 60,
    };

    #[test]
    fn exp_is_required_and_skew_applies() {
        assert_eq!(W.check(None, None, None, 3600), Err(TimeError::MissingExp));
        assert_eq!(
            W.check(Some(W.now - 61), None, None, 3600),
            Err(TimeError::Expired)
        );
        assert_eq!(W.check(Some(W.now - 59), None, None, 3600), Ok(()));
    }

    #[test]
    fn future_iat_and_nbf_are_refused_beyond_skew() {
        let exp = Some(W.now + 300);
        assert_eq!(
            W.check(exp, Some(W.now + 61), None, 3600),
            Err(TimeError::NotYetValid)
        );
        assert_eq!(W.check(exp, Some(W.now + 59), None, 3600), Ok(()));
        assert_eq!(
            W.check(exp, None, Some(W.now + 61), 3600),
            Err(TimeError::IssuedInFuture)
        );
    }

    #[test]
    fn lifetime_is_capped_with_or_without_iat() {
        let iat = Some(W.now);
        assert_eq!(W.check(Some(W.now + 3600), None, iat, 3600), Ok(()));
        assert_eq!(
            W.check(Some(W.now + 3601), None, iat, 3600),
            Err(TimeError::LifetimeTooLong)
        );
        assert_eq!(
            W.check(Some(W.now + 3600 + 61), None, None, 3600),
            Err(TimeError::LifetimeTooLong)
        );
    }

    #[test]
    fn age_needs_iat() {
        let exp = Some(W.now + 60);
        assert_eq!(
            W.check_with_age(exp, None, None, 3600),
            Err(TimeError::MissingIat)
        );
        assert_eq!(
            W.check_with_age(Some(W.now + 10), None, Some(W.now - 3600 - 61), 3600),
            Err(TimeError::TooOld)
        );
    }

    #[test]
    fn aud_accepts_both_shapes() {
        let one: OneOrMany<String> = serde_json::from_str("\"a\"").unwrap();
        let many: OneOrMany<String> = serde_json::from_str("[\"a\",\"b\"]").unwrap();
        assert_eq!(one.as_slice(), ["a"]);
        assert_eq!(many.as_slice().len(), 2);
    }
}
