//! mandate's own signing keys: the set in force, swapped whole on reload (SIGHUP), and loading
//! them from the files the configuration names.

use std::path::Path;
use std::sync::Arc;

use mandate_token::{KeySet, PublicKey, SigningKey};
use zeroize::Zeroizing;

use crate::config::{ConfigError, ConfigSource, Settings, ValidatedSettings};
use crate::state::AppState;

pub use mandate_core::KeyRing;

/// Why a key reload was refused. The keys in force stay in force.
#[derive(Debug, thiserror::Error)]
pub enum KeyReloadError {
    /// The node was not started from a configuration file.
    #[error("no configuration file to re-read (configuration from {0})")]
    NoFile(String),
    /// The file, or the keys it names, cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `[signing] key_file` is not set; a reload never makes an ephemeral key.
    #[error(
        "signing.key_file is not set: a reload needs a key file (it never makes an ephemeral key)"
    )]
    NoKeyFile,
}

/// What a successful key reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReload {
    /// The `kid` that signed before.
    pub previous_kid: String,
    /// The `kid` that signs now.
    pub active_kid: String,
    /// Every published `kid`, active first.
    pub published: Vec<String>,
    /// The signing key was not published before this reload (the staging step was skipped):
    /// verifiers with a cached JWKS refuse its tokens until they re-fetch.
    pub unstaged: bool,
    /// The key that signed before is no longer published: mandate and verifiers refuse the
    /// tokens it signed, even unexpired ones.
    pub dropped_previous: bool,
    /// Settings outside `[signing]` that differ from those the node started with; they are not
    /// applied (that needs a restart).
    pub ignored: Vec<&'static str>,
}

impl AppState {
    /// Re-reads the configuration file this node was started with (the same loading as start-up,
    /// `MANDATE__…` overrides included) and reloads its keys: what SIGHUP does. Nothing but
    /// `[signing]` is applied. A failure is logged and leaves the keys in force.
    pub fn reload_keys_from_file(&self) -> Result<KeyReload, KeyReloadError> {
        let outcome = match self.settings.source() {
            ConfigSource::File(path) => Settings::load(path)
                .map_err(KeyReloadError::from)
                .and_then(|settings| self.swap_keys(&settings)),
            other => Err(KeyReloadError::NoFile(other.to_string())),
        };
        log_reload(&outcome);
        outcome
    }

    /// Loads the keys of `settings.signing` and puts them in force, atomically: the signing key,
    /// the published set mandate verifies its own tokens with, and the `/jwks` document. The
    /// whole of `settings` must be valid (a file this node could not start with is not one to
    /// take keys from); settings outside `[signing]` are not applied and are reported in
    /// [`KeyReload::ignored`]. A failure is logged and leaves the keys in force.
    pub fn reload_keys(&self, settings: &Settings) -> Result<KeyReload, KeyReloadError> {
        let outcome = self.swap_keys(settings);
        log_reload(&outcome);
        outcome
    }

    fn swap_keys(&self, settings: &Settings) -> Result<KeyReload, KeyReloadError> {
        let settings =
            &ValidatedSettings::try_from((settings.clone(), self.settings.source().clone()))?;
        if settings.signing.key_file.is_none() {
            return Err(KeyReloadError::NoKeyFile);
        }
        let invalid = |key: String, message: String| ConfigError::Invalid {
            source_name: self.settings.source().to_string(),
            key,
            message,
        };
        let current = Arc::new(load_keys(settings, &invalid)?);
        let ignored = settings_outside_signing_changed(&self.settings, settings);
        let previous = self.keys.replace(Arc::clone(&current));
        crate::metrics::keys_loaded(&current);
        let active_kid = current.active().kid().to_owned();
        Ok(KeyReload {
            previous_kid: previous.active().kid().to_owned(),
            unstaged: !previous.publishes(&active_kid),
            dropped_previous: !current.publishes(previous.active().kid()),
            published: current.published().map(|k| k.kid().to_owned()).collect(),
            active_kid,
            ignored,
        })
    }
}

fn log_reload(outcome: &Result<KeyReload, KeyReloadError>) {
    match outcome {
        Ok(reload) => {
            tracing::info!(
                active_kid = %reload.active_kid,
                previous_kid = %reload.previous_kid,
                published = ?reload.published,
                "signing keys reloaded"
            );
            if reload.unstaged {
                tracing::warn!(
                    kid = %reload.active_kid,
                    "the new signing key was not published before it started signing (it was \
                     never staged as signing.next_key_file): verifiers with a cached JWKS refuse \
                     its tokens until they re-fetch"
                );
            }
            if reload.dropped_previous {
                tracing::warn!(
                    kid = %reload.previous_kid,
                    "the key that signed until now is no longer published: its unexpired tokens \
                     are refused; keep it in signing.retired_key_files until they have expired"
                );
            }
            if !reload.ignored.is_empty() {
                tracing::warn!(
                    changed = ?reload.ignored,
                    "the configuration changed outside [signing]: those changes are not applied \
                     (only keys are reloaded); they need a restart"
                );
            }
        }
        Err(error) => {
            tracing::error!(%error, "signing keys NOT reloaded; the keys in force stay");
        }
    }
}

/// The top-level settings other than `[signing]` that differ. Debug output is compared because
/// the settings have no equality of their own; it is never logged (it may hold secret hashes).
fn settings_outside_signing_changed(running: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident),* $(,)?) => {
            $(
                if format!("{:?}", running.$field) != format!("{:?}", new.$field) {
                    changed.push(stringify!($field));
                }
            )*
        };
    }
    compare!(
        issuer,
        listen,
        admin_listen,
        store,
        tokens,
        limits,
        admin,
        trusted_issuers,
        clients,
        policies,
        consents,
        id_jag,
    );
    // A section added to the settings after this list was written is still noticed.
    let mut probe = new.clone();
    probe.signing = running.signing.clone();
    if changed.is_empty() && format!("{probe:?}") != format!("{running:?}") {
        changed.push("other settings");
    }
    changed
}

pub(crate) fn load_keys(
    settings: &Settings,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<KeySet, ConfigError> {
    let algorithm = settings.signing.algorithm;
    let active = match &settings.signing.key_file {
        Some(path) => {
            let pem = read_secret(path, "signing.key_file", invalid)?;
            SigningKey::from_pkcs8_pem(algorithm, &pem).map_err(|e| {
                invalid(
                    "signing.key_file".into(),
                    format!("{}: {e}", path.display()),
                )
            })?
        }
        None => SigningKey::generate(algorithm)
            .map_err(|e| invalid("signing.key_file".into(), e.to_string()))?,
    };
    let next = match &settings.signing.next_key_file {
        Some(path) => {
            let pem = read_secret(path, "signing.next_key_file", invalid)?;
            // The next key may bring a change of algorithm, made at its promotion.
            Some(PublicKey::from_pkcs8_pem_any(algorithm, &pem).map_err(|e| {
                invalid(
                    "signing.next_key_file".into(),
                    format!("{}: {e}", path.display()),
                )
            })?)
        }
        None => None,
    };
    let mut retired = Vec::new();
    for (i, path) in settings.signing.retired_key_files.iter().enumerate() {
        let key = format!("signing.retired_key_files[{i}]");
        let pem = read_secret(path, &key, invalid)?;
        // A retired key may be of the algorithm used before a change of algorithm.
        let public = PublicKey::from_pkcs8_pem_any(algorithm, &pem)
            .map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
        retired.push(public);
    }
    KeySet::new(active, next, retired).map_err(|e| invalid("signing".into(), e.to_string()))
}

pub(crate) fn read_secret(
    path: &Path,
    key: &str,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| invalid(key.into(), format!("cannot read {}: {e}", path.display())))
}

pub(crate) fn read_text(
    path: &Path,
    key: &str,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| invalid(key.into(), format!("cannot read {}: {e}", path.display())))
}
