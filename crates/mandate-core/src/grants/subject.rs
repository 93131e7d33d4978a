//! Subject-token verification for the exchange (DESIGN.md section 5, PROTOCOLS.md 1.7 and 6.1):
//! mandate's own access tokens against mandate's keys, upstream ID tokens and JWTs against their
//! trusted issuer's keys. Every failure is `invalid_request` (RFC 8693 §2.2.2) with a description
//! that never echoes the token.

use std::sync::Arc;

use mandate_model::Subject;
use mandate_token::{
    urn, AccessTokenClaims, JwtError, TimeError, TimeWindow, UnverifiedJws, UpstreamClaims,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Acceptance, GrantError, GrantService, IssuerVerifyError, UpstreamIssuer};

/// The longest life a mandate token can have (the largest allowed `access_token_ttl_secs`).
const MAX_OWN_TOKEN_LIFETIME: i64 = 86_400;

/// The declared `subject_token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectTokenType {
    /// `…:access_token`: a token this server issued.
    AccessToken,
    /// `…:id_token`.
    IdToken,
    /// `…:jwt`.
    Jwt,
}

impl SubjectTokenType {
    /// Parses the URN. Known types mandate does not take as subject tokens are refused by name.
    pub fn parse(value: &str) -> Result<Self, GrantError> {
        let refuse =
            |description: &'static str| Err(GrantError::InvalidRequest(description.into()));
        match value {
            urn::TOKEN_TYPE_ACCESS_TOKEN => Ok(Self::AccessToken),
            urn::TOKEN_TYPE_ID_TOKEN => Ok(Self::IdToken),
            urn::TOKEN_TYPE_JWT => Ok(Self::Jwt),
            urn::TOKEN_TYPE_SAML1 | urn::TOKEN_TYPE_SAML2 => {
                refuse("SAML subject tokens are not supported")
            }
            urn::TOKEN_TYPE_REFRESH_TOKEN => {
                refuse("refresh tokens are not supported as subject tokens")
            }
            urn::TOKEN_TYPE_ID_JAG => {
                refuse("an ID-JAG is not a subject token; redeem it with the jwt-bearer grant")
            }
            _ => refuse("unknown subject_token_type"),
        }
    }
}

/// A verified subject token.
#[derive(Debug)]
pub enum VerifiedSubject {
    /// From a trusted issuer.
    Upstream {
        /// The issuer that verified it.
        issuer: Arc<dyn UpstreamIssuer>,
        /// Its claims.
        claims: UpstreamClaims,
        /// The namespaced user.
        subject: Subject,
        /// `jti`, or `sha256:<hex>` of what its issuer signed (`header.payload`).
        grant_id: String,
        /// `aud` values.
        aud: Vec<String>,
    },
    /// mandate's own access token.
    Mandate(AccessTokenClaims),
}

/// Why a subject token was refused (logged; the client sees the matching description).
#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    /// Not a JWT, or too large.
    #[error("subject token is malformed: {0}")]
    Malformed(JwtError),
    /// Its issuer is not trusted (or not trusted for this token type).
    #[error("subject token issuer is not trusted for this token type")]
    Untrusted,
    /// The declared type does not fit the token.
    #[error("subject_token_type does not match the token")]
    TypeMismatch,
    /// Wrong `typ` header.
    #[error("subject token has the wrong typ")]
    WrongTyp,
    /// Signature, key or algorithm.
    #[error("subject token signature is invalid: {0}")]
    Signature(JwtError),
    /// Time claims.
    #[error("subject token time claims rejected: {0}")]
    Time(TimeError),
    /// Other claims.
    #[error("subject token claims rejected: {0}")]
    Claims(&'static str),
    /// The issuer's keys could not be fetched.
    #[error("issuer keys unavailable: {0}")]
    KeysUnavailable(String),
}

impl SubjectError {
    /// What the client is told: `invalid_request`, with a fixed description per kind.
    pub fn to_grant_error(&self) -> GrantError {
        let description = match self {
            SubjectError::Malformed(_) => "subject_token is not a well-formed JWT",
            SubjectError::Untrusted => {
                "subject_token is from an issuer not trusted for this token type"
            }
            SubjectError::TypeMismatch => "subject_token_type does not match the subject_token",
            SubjectError::WrongTyp => "subject_token has the wrong typ header",
            SubjectError::Signature(_) => "subject_token signature is invalid",
            SubjectError::Time(TimeError::Expired) => "subject_token has expired",
            SubjectError::Time(TimeError::MissingIat) => "subject_token has no iat",
            SubjectError::Time(TimeError::TooOld) => "subject_token is too old",
            SubjectError::Time(TimeError::LifetimeTooLong) => "subject_token lives too long",
            SubjectError::Time(_) => "subject_token is not valid at this time",
            SubjectError::Claims(what) => what,
            SubjectError::KeysUnavailable(_) => "subject_token issuer keys are unavailable",
        };
        GrantError::InvalidRequest(description.into())
    }
}

impl From<IssuerVerifyError> for SubjectError {
    fn from(error: IssuerVerifyError) -> Self {
        match error {
            IssuerVerifyError::Signature(e) => SubjectError::Signature(e),
            IssuerVerifyError::KeysUnavailable(m) => SubjectError::KeysUnavailable(m),
        }
    }
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

impl GrantService {
    /// Verifies `token` as a subject token of the declared type.
    #[tracing::instrument(name = "mandate.subject_token", level = "debug", skip_all, fields(token_type = ?declared))]
    pub async fn verify_subject(
        &self,
        token: &str,
        declared: SubjectTokenType,
    ) -> Result<VerifiedSubject, SubjectError> {
        let jws = UnverifiedJws::parse(token).map_err(SubjectError::Malformed)?;
        // Which keys to use depends on the issuer; the claim is read unverified only to choose,
        // and checked again after verification.
        let peek: Peek = jws
            .dangerous_unverified_claims()
            .map_err(SubjectError::Malformed)?;
        let iss = peek
            .iss
            .ok_or(SubjectError::Claims("subject_token has no iss"))?;
        let window = TimeWindow {
            now: self.clock.now_secs(),
            skew: i64::from(self.settings.clock_skew_secs),
        };
        if iss == self.settings.issuer {
            return self.verify_own_subject(&jws, declared, window);
        }

        if declared == SubjectTokenType::AccessToken {
            // RFC 8693 §3: an access_token is one issued by the server being called.
            return Err(SubjectError::TypeMismatch);
        }
        let issuer = self
            .ports
            .issuers
            .find(&iss)
            .cloned()
            .ok_or(SubjectError::Untrusted)?;
        let needed = match declared {
            SubjectTokenType::IdToken => Acceptance::IdToken,
            _ => Acceptance::Jwt,
        };
        if !issuer.accepts(needed) {
            return Err(SubjectError::Untrusted);
        }
        // ID tokens and plain JWTs carry no explicit type, or `JWT`; any `…+jwt` type belongs to
        // another kind of token (RFC 8725 §3.11).
        if jws.header().typ_is_foreign_explicit(&[]) {
            return Err(SubjectError::WrongTyp);
        }
        let verified = issuer.verify(&jws).await?;
        let claims: UpstreamClaims = verified
            .claims()
            .map_err(|_| SubjectError::Claims("subject_token claims are malformed"))?;
        if claims.iss.as_deref() != Some(issuer.issuer()) {
            return Err(SubjectError::Claims(
                "subject_token iss does not match its issuer",
            ));
        }
        window
            .check_with_age(
                claims.exp,
                claims.nbf,
                claims.iat,
                i64::from(issuer.max_token_age_secs()),
            )
            .map_err(SubjectError::Time)?;
        let sub = claims
            .sub
            .as_deref()
            .ok_or(SubjectError::Claims("subject_token has no sub"))?;
        let subject = Subject::from_upstream(issuer.alias(), sub, issuer.subject_as_is())
            .map_err(|_| SubjectError::Claims("subject_token sub cannot be used by this issuer"))?;
        let aud: Vec<String> = claims
            .aud
            .as_ref()
            .map(|a| a.as_slice().to_vec())
            .unwrap_or_default();
        if aud.is_empty() {
            return Err(SubjectError::Claims("subject_token has no aud"));
        }
        let grant_id = match claims.jti.as_deref() {
            Some(jti) if !jti.is_empty() && jti.len() <= 256 => jti.to_owned(),
            // Never the signature's bytes: those can be re-spelled by the holder (ECDSA
            // malleability), which would make a fresh grant, and a fresh chain, of a revoked one.
            _ => format!("sha256:{}", hex_digest(jws.signing_input())),
        };
        Ok(VerifiedSubject::Upstream {
            issuer,
            claims,
            subject,
            grant_id,
            aud,
        })
    }

    /// mandate's own tokens never take the trusted-issuer path.
    fn verify_own_subject(
        &self,
        jws: &UnverifiedJws<'_>,
        declared: SubjectTokenType,
        window: TimeWindow,
    ) -> Result<VerifiedSubject, SubjectError> {
        if declared != SubjectTokenType::AccessToken {
            return Err(SubjectError::TypeMismatch);
        }
        if !jws.header().typ_is(urn::TYP_ACCESS_TOKEN) {
            return Err(SubjectError::WrongTyp);
        }
        // The keys in force now: after a rotation, tokens of a retired key that is still
        // published verify, and those of a key no longer published do not.
        let verified = self
            .ports
            .keys
            .current()
            .verify(jws)
            .map_err(SubjectError::Signature)?;
        let claims: AccessTokenClaims = verified.claims().map_err(|_| {
            SubjectError::Claims("subject_token claims are not a mandate access token")
        })?;
        if claims.iss != self.settings.issuer {
            return Err(SubjectError::Claims("subject_token iss changed"));
        }
        window
            .check(
                Some(claims.exp),
                Some(claims.nbf),
                Some(claims.iat),
                MAX_OWN_TOKEN_LIFETIME,
            )
            .map_err(SubjectError::Time)?;
        Ok(VerifiedSubject::Mandate(claims))
    }
}

fn hex_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
