//! `mandate redis acl`: the read-only Redis user for verifiers (DESIGN.md section 6). A compromised
//! downstream app holding these credentials can read the revocation list and its stream, and
//! nothing else: it can neither un-revoke nor write anything.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

/// The revocation keys and stream share this hash-tagged prefix.
const REVOCATION_KEYS: &str = "{mandate:rev}:*";

/// The commands a verifier needs: point reads of entries, the stream (snapshot and follow), the
/// server clock, and connection housekeeping.
const READ_COMMANDS: [&str; 10] = [
    "+get",
    "+mget",
    "+exists",
    "+pttl",
    "+xread",
    "+xrange",
    "+xrevrange",
    "+xinfo|stream",
    "+time",
    "+ping",
];

/// The ACL rule for `user` with the SHA-256 `password_hash` (hex).
pub fn acl_rule(user: &str, password_hash: &str) -> String {
    format!(
        "ACL SETUSER {user} reset on #{password_hash} %R~{REVOCATION_KEYS} resetchannels -@all {} +hello +auth +client|setname",
        READ_COMMANDS.join(" ")
    )
}

/// Prints the rule with a freshly generated password (shown once; only its hash is in the rule).
pub fn print(user: &str) -> anyhow::Result<()> {
    if user.is_empty()
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        anyhow::bail!("the user name must be letters, digits, '-' or '_'");
    }
    let password = Alphanumeric.sample_string(&mut rand::rng(), 40);
    let hash: String = Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("# Read-only Redis user for mandate verifiers (revocation list and stream only).");
    println!(
        "# Run this against the Redis that mandate uses (redis-cli, or add it to an ACL file):"
    );
    println!("{}", acl_rule(user, &hash));
    println!("#");
    println!("# Give verifiers these credentials (the password is shown only now):");
    println!("#   user     {user}");
    println!("#   password {password}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_grants_reads_of_revocation_keys_only() {
        let rule = acl_rule("verifier", "ab");
        assert!(rule.contains("%R~{mandate:rev}:*"), "read-only key pattern");
        assert!(rule.contains("-@all"));
        for write in [
            "+set",
            "+del",
            "+xadd",
            "+flushall",
            "+eval",
            "@write",
            "+@all",
        ] {
            assert!(!rule.contains(write), "{write}");
        }
    }
}
