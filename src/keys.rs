//! `mandate keys generate` and `mandate keys rotate`: local, no server needed. Private keys are
//! written once (mode 0600, never over an existing file) and never printed; only their `kid`s are.
//! The rotation procedure they print is the one docs/KEYS.md explains (DESIGN.md sections 9, 11).

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mandate_server::Settings;
use mandate_token::{SigningAlgorithm, SigningKey};

/// How long verifiers may cache `/jwks` and the metadata (its `Cache-Control: max-age`, and
/// mandate-verify's default `jwks_max_age`).
const JWKS_MAX_AGE_SECS: u64 = mandate_server::http::JWKS_MAX_AGE_SECS;
/// mandate-verify re-fetches the JWKS on an unknown `kid` at most this often (its default
/// `refresh_floor`).
const VERIFY_REFRESH_FLOOR_SECS: u64 = 30;

/// `mandate keys generate`: a new key at `out`.
pub fn generate(algorithm: SigningAlgorithm, out: &Path) -> anyhow::Result<()> {
    let kid = write_new_key(algorithm, out)?;
    println!("wrote {algorithm} key {kid} to {}", out.display());
    Ok(())
}

/// Where `mandate keys rotate` writes the next key.
#[derive(Debug)]
pub enum Destination {
    /// This exact file.
    File(PathBuf),
    /// A new file named after the date and the key in this directory.
    Dir(PathBuf),
    /// The directory of the configured `key_file` (or the current directory).
    Default,
}

/// `mandate keys rotate`: writes the next key and prints the configuration change, with the
/// actual paths and lifetimes when `config` is given.
pub fn rotate(
    algorithm: Option<SigningAlgorithm>,
    destination: Destination,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let settings = match config {
        Some(path) => {
            Some(Settings::load(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let algorithm = algorithm
        .or(settings.as_ref().map(|s| s.signing.algorithm))
        .unwrap_or(SigningAlgorithm::Es256);
    let pem = SigningKey::generate_pem(algorithm).context("generating the key")?;
    let key = SigningKey::from_pkcs8_pem(algorithm, &pem).context("reading the generated key")?;
    let out = match destination {
        Destination::File(path) => path,
        Destination::Dir(dir) => dir.join(file_name(key.kid())),
        Destination::Default => settings
            .as_ref()
            .and_then(|s| s.signing.key_file.as_deref())
            .and_then(Path::parent)
            .unwrap_or(Path::new(""))
            .join(file_name(key.kid())),
    };
    write_pem(&pem, &out)?;
    let overridden: Vec<String> = std::env::vars()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("MANDATE__SIGNING__"))
        .collect();
    print!(
        "{}",
        plan(&Plan {
            algorithm,
            kid: key.kid(),
            path: &out,
            config,
            settings: settings.as_ref(),
            overridden: &overridden,
        })
    );
    Ok(())
}

/// `signing-<date>-<start of kid>.pem`: sorts by age and names the key it holds.
fn file_name(kid: &str) -> String {
    let short: String = kid.chars().take(8).collect();
    format!(
        "signing-{}-{short}.pem",
        chrono::Utc::now().format("%Y%m%d")
    )
}

fn write_new_key(algorithm: SigningAlgorithm, out: &Path) -> anyhow::Result<String> {
    let pem = SigningKey::generate_pem(algorithm).context("generating the key")?;
    let key = SigningKey::from_pkcs8_pem(algorithm, &pem).context("reading the generated key")?;
    write_pem(&pem, out)?;
    Ok(key.kid().to_owned())
}

/// Creates `out` with mode 0600; an existing file is never overwritten.
fn write_pem(pem: &[u8], out: &Path) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never overwritten)",
                out.display()
            )
        })?;
    file.write_all(pem)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", out.display()))
}

/// What the printed procedure is made of.
struct Plan<'a> {
    algorithm: SigningAlgorithm,
    kid: &'a str,
    path: &'a Path,
    config: Option<&'a Path>,
    settings: Option<&'a Settings>,
    overridden: &'a [String],
}

/// A TOML basic string.
fn toml_string(path: &Path) -> String {
    let text = path.display().to_string();
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04X}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn toml_list(paths: &[PathBuf]) -> String {
    let items: Vec<String> = paths.iter().map(|p| toml_string(p)).collect();
    format!("[{}]", items.join(", "))
}

/// The procedure, with the configuration's values when there is one.
fn plan(p: &Plan<'_>) -> String {
    let signing = p.settings.map(|s| &s.signing);
    let tokens = p.settings.map(|s| &s.tokens);
    let current = signing.and_then(|s| s.key_file.clone());
    let current_text = current
        .as_deref()
        .map(toml_string)
        .unwrap_or_else(|| "\"<your current key_file>\"".to_owned());
    let retired: Vec<PathBuf> = signing
        .map(|s| s.retired_key_files.clone())
        .unwrap_or_default();
    let (access, id_jag, skew) = tokens.map_or((300, 300, 60), |t| {
        (
            t.access_token_ttl_secs,
            t.id_jag_ttl_secs,
            t.clock_skew_secs,
        )
    });
    let lifetime = u64::from(access.max(id_jag)) + u64::from(skew);
    let new = toml_string(p.path);
    let mut promoted_retired = vec![current
        .clone()
        .unwrap_or_else(|| "<your current key_file>".into())];
    promoted_retired.extend(retired.iter().cloned());
    let algorithm_change = if signing.is_some_and(|s| s.algorithm != p.algorithm) {
        format!("     algorithm = \"{}\"\n", p.algorithm)
    } else {
        String::new()
    };

    let mut out = String::new();
    let _ = writeln!(
        out,
        "wrote {} key {} to {} (mode 0600)",
        p.algorithm,
        p.kid,
        p.path.display()
    );
    match (p.config, p.settings) {
        (Some(path), Some(_)) => {
            let _ = writeln!(
                out,
                "current [signing] and [tokens] read from {} (with MANDATE__ overrides)",
                path.display()
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "no --config given: the paths below are placeholders and the lifetimes are the \
                 defaults; pass --config FILE for yours"
            );
        }
    }
    if let Some(next) = signing.and_then(|s| s.next_key_file.as_deref()) {
        let _ = writeln!(
            out,
            "note: next_key_file is already {}; this key replaces it (a staged key never \
             signed, so nothing depends on it once no node publishes it)",
            next.display()
        );
    }
    if p.settings.is_some() && current.is_none() {
        let _ = writeln!(
            out,
            "note: no key_file is configured (an ephemeral key): there is nothing to rotate; set \
             key_file = {new} and restart"
        );
    }
    if !p.overridden.is_empty() {
        let _ = writeln!(
            out,
            "warning: {} set in this environment: a node re-reads the environment it was \
             started with, which SIGHUP cannot change; keep [signing] in the file to rotate \
             without a restart",
            p.overridden.join(", ")
        );
    }
    let _ = write!(
        out,
        "
Rotate in three steps. Each step edits [signing] in the configuration file of EVERY node
and then sends each node SIGHUP (kill -HUP <pid>), which reloads [signing] and nothing else;
each node logs \"signing keys reloaded\" (or why it kept its keys). Paths are as the node
sees them: relative paths start from the directory `mandate serve` runs in.

1. Stage: publish the new key before it signs.
     [signing]
     key_file = {current_text}          # unchanged: still signing
     next_key_file = {new}
     retired_key_files = {retired_now}
   then SIGHUP every node. /jwks now lists kid {kid}; tokens still carry the old kid.

2. Promote, once every verifier has fetched the new JWKS: wait at least {max_age} s after the
   last node was staged (the max-age of /jwks and of the metadata document, and the default
   jwks_max_age of mandate-verify, which also re-fetches on an unknown kid at most every
   {floor} s), and longer if one of your verifiers caches keys longer.
     [signing]
{algorithm_change}     key_file = {new}
     next_key_file = \"\"
     retired_key_files = {retired_promoted}
   then SIGHUP every node. Tokens now carry kid {kid}; the old key stays published, so tokens
   it signed still verify at mandate and downstream.

3. Retire, once every token the old key signed has expired: wait at least {lifetime} s after
   the last node was promoted (the longest token lifetime, max(access_token_ttl_secs = {access},
   id_jag_ttl_secs = {id_jag}), plus clock_skew_secs = {skew}).
     [signing]
     key_file = {new}
     next_key_file = \"\"
     retired_key_files = {retired_now}
   then SIGHUP every node, and delete {current_text} from every node.
",
        retired_now = toml_list(&retired),
        retired_promoted = toml_list(&promoted_retired),
        kid = p.kid,
        max_age = JWKS_MAX_AGE_SECS,
        floor = VERIFY_REFRESH_FLOOR_SECS,
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    fn settings(text: &str) -> Settings {
        Settings::from_toml(text).unwrap()
    }

    #[test]
    fn the_plan_uses_the_configured_paths_and_lifetimes() {
        let settings = settings(
            "[signing]\nkey_file = \"keys/a.pem\"\nretired_key_files = [\"keys/z.pem\"]\n\
             [tokens]\naccess_token_ttl_secs = 900\nid_jag_ttl_secs = 120\nclock_skew_secs = 30\n",
        );
        let text = plan(&Plan {
            algorithm: SigningAlgorithm::Es256,
            kid: "KID",
            path: Path::new("keys/b.pem"),
            config: Some(Path::new("mandate.toml")),
            settings: Some(&settings),
            overridden: &[],
        });
        assert!(text.contains("next_key_file = \"keys/b.pem\""), "{text}");
        assert!(
            text.contains("retired_key_files = [\"keys/a.pem\", \"keys/z.pem\"]"),
            "{text}"
        );
        // 900 (the longer lifetime) + 30 of skew.
        assert!(text.contains("wait at least 930 s"), "{text}");
        assert!(text.contains("wait at least 300 s"), "{text}");
        assert!(
            !text.contains("algorithm ="),
            "no change of algorithm: {text}"
        );
        assert!(!text.contains("placeholders"), "{text}");
    }

    #[test]
    fn a_change_of_algorithm_is_made_at_promotion() {
        let settings = settings("[signing]\nkey_file = \"a.pem\"\n");
        let text = plan(&Plan {
            algorithm: SigningAlgorithm::EdDsa,
            kid: "KID",
            path: Path::new("b.pem"),
            config: Some(Path::new("mandate.toml")),
            settings: Some(&settings),
            overridden: &["MANDATE__SIGNING__KEY_FILE".into()],
        });
        let promote = text.split("2. Promote").nth(1).unwrap();
        let promote = promote.split("3. Retire").next().unwrap();
        assert!(promote.contains("algorithm = \"EdDSA\""), "{text}");
        assert!(
            text.contains("warning: MANDATE__SIGNING__KEY_FILE"),
            "{text}"
        );
    }

    #[test]
    fn without_a_configuration_the_defaults_are_shown_as_such() {
        let text = plan(&Plan {
            algorithm: SigningAlgorithm::Es256,
            kid: "KID",
            path: Path::new("b\"q.pem"),
            config: None,
            settings: None,
            overridden: &[],
        });
        assert!(text.contains("placeholders"), "{text}");
        assert!(text.contains("wait at least 360 s"), "{text}");
        assert!(text.contains("next_key_file = \"b\\\"q.pem\""), "{text}");
        assert!(text.contains("<your current key_file>"), "{text}");
    }
}
