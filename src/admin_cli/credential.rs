//! Where the admin credential comes from: `--credential-file FILE` or `MANDATE_ADMIN_SECRET`,
//! never a command-line argument (arguments show in every local user's process list and in shell
//! history). It is never printed, not even in `Debug` output.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::CliError;

/// The environment variable holding the admin secret.
pub const SECRET_VARIABLE: &str = "MANDATE_ADMIN_SECRET";

/// A credential file larger than this is not a credential file.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The admin secret.
pub struct Credential(String);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential([redacted])")
    }
}

impl Credential {
    /// The secret, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    #[cfg(test)]
    pub fn for_tests(secret: &str) -> Self {
        Self(secret.to_owned())
    }

    /// From the first line of `file` when given (an explicit flag wins), else from
    /// `MANDATE_ADMIN_SECRET`.
    pub fn load(file: Option<&Path>) -> Result<Self, CliError> {
        match file {
            Some(path) => Self::from_file(path),
            None => Self::from_environment(),
        }
    }

    fn from_environment() -> Result<Self, CliError> {
        match std::env::var(SECRET_VARIABLE) {
            Ok(value) if !value.trim().is_empty() => Ok(Self(value.trim().to_owned())),
            Ok(_) | Err(std::env::VarError::NotPresent) => Err(CliError::NoCredential(format!(
                "set {SECRET_VARIABLE} or pass --credential-file FILE"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => Err(CliError::NoCredential(format!(
                "{SECRET_VARIABLE} is not valid UTF-8"
            ))),
        }
    }

    fn from_file(path: &Path) -> Result<Self, CliError> {
        let shown = path.display();
        let metadata = std::fs::metadata(path)
            .map_err(|e| CliError::NoCredential(format!("cannot read {shown}: {e}")))?;
        // As ssh does with private keys: a secret other users can read is no longer a secret,
        // and refusing makes the operator notice.
        let mode = metadata.permissions().mode();
        if mode & 0o044 != 0 {
            return Err(CliError::NoCredential(format!(
                "{shown} is readable by other users (mode {:o}); run `chmod 600 {shown}`",
                mode & 0o777
            )));
        }
        if !metadata.is_file() || metadata.len() > MAX_FILE_BYTES {
            return Err(CliError::NoCredential(format!(
                "{shown} is not a credential file (a regular file whose first line is the secret)"
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::NoCredential(format!("cannot read {shown}: {e}")))?;
        let secret = text.lines().next().unwrap_or_default().trim();
        if secret.is_empty() {
            return Err(CliError::NoCredential(format!(
                "the first line of {shown} is empty"
            )));
        }
        Ok(Self(secret.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use std::io::Write;

    use super::*;

    fn file_with(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    #[test]
    fn the_first_line_of_a_private_file_trimmed() {
        let file = file_with("  s3cret \nsecond line\n", 0o600);
        assert_eq!(
            Credential::load(Some(file.path())).unwrap().expose(),
            "s3cret"
        );
    }

    #[test]
    fn files_others_can_read_or_empty_ones_are_refused() {
        for mode in [0o640, 0o604, 0o644] {
            let file = file_with("s3cret\n", mode);
            let error = Credential::load(Some(file.path())).unwrap_err();
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        let file = file_with("\nsecret on the second line\n", 0o600);
        assert!(Credential::load(Some(file.path())).is_err());
        assert!(Credential::load(Some(Path::new("/nonexistent/secret"))).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", Credential("s3cret".into()));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
