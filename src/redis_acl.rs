//! `mandate redis acl`: the read-only Redis user for verifiers (DESIGN.md section 6). A compromised
//! downstream app holding these credentials can read the revocation list and its stream, and
//! nothing else: it can neither un-revoke nor write anything.

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

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
    println!("{}", mandate_revocation::verifier_acl_rule(user, &hash));
    println!("#");
    println!("# Give verifiers these credentials (the password is shown only now):");
    println!("#   user     {user}");
    println!("#   password {password}");
    Ok(())
}
