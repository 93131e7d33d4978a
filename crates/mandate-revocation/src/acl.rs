//! The read-only Redis user for verifiers (DESIGN.md section 6): an app or gateway holding these
//! credentials can read the revocation list and its stream, and nothing else — it can neither
//! un-revoke nor write anything. The rule lives beside the key layout it names.

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

/// The `ACL SETUSER` rule for the verifier `user` with the SHA-256 `password_hash` (hex).
pub fn verifier_acl_rule(user: &str, password_hash: &str) -> String {
    format!(
        "ACL SETUSER {user} reset on #{password_hash} %R~{REVOCATION_KEYS} resetchannels -@all {} +hello +auth +client|setname",
        READ_COMMANDS.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_grants_reads_of_revocation_keys_only() {
        let rule = verifier_acl_rule("verifier", "ab");
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
