//! Entries and their hashes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev` of the first entry ever written: 32 zero bytes, hex.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One journal entry: a ledger record with its place in the one order of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its position, from 1, without gaps.
    pub seq: u64,
    /// When it was sealed into the journal (ms, the store's clock).
    pub time: i64,
    /// What the record is: `hop`, `revocation` or `audit`.
    pub kind: String,
    /// The record, as the ledger holds it.
    pub record: Value,
    /// The hash of the entry before it ([`GENESIS`] for the first).
    pub prev: String,
    /// [`entry_hash`] of this entry.
    pub hash: String,
}

impl Entry {
    /// The entry following `prev` (the head: its seq and hash, `(0, GENESIS)` for none), hashed.
    pub fn seal(prev: &Head, time: i64, kind: impl Into<String>, record: Value) -> Self {
        let kind = kind.into();
        let seq = prev.seq + 1;
        let hash = entry_hash(seq, time, &kind, &record, &prev.hash);
        Self {
            seq,
            time,
            kind,
            record,
            prev: prev.hash.clone(),
            hash,
        }
    }

    /// Whether the stored hash is the hash of the stored content.
    pub fn hash_matches(&self) -> bool {
        entry_hash(self.seq, self.time, &self.kind, &self.record, &self.prev) == self.hash
    }

    /// This entry as a head.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// Where the journal ends: the last entry's seq and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The last seq (0 when empty).
    pub seq: u64,
    /// The last hash ([`GENESIS`] when empty).
    pub hash: String,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// SHA-256, hex, of the canonical JSON of `{"kind","prev","record","seq","time"}`: sorted keys,
/// no whitespace (docs/EVIDENCE.md shows the same computation in a few lines of Python).
pub fn entry_hash(seq: u64, time: i64, kind: &str, record: &Value, prev: &str) -> String {
    let content = serde_json::json!({
        "kind": kind,
        "prev": prev,
        "record": record,
        "seq": seq,
        "time": time,
    });
    hex::encode(Sha256::digest(canonical_json(&content).as_bytes()))
}

/// `value` as JSON with every object's keys sorted (by their UTF-8 bytes) and no whitespace.
/// Strings are escaped as serde_json does; numbers are written as serde_json writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(inner) = map.get(key) {
                    write_canonical(inner, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_has_no_whitespace() {
        let value = json!({"b": [ {"z": 1, "a": "x y"} ], "a": null});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":null,"b":[{"a":"x y","z":1}]}"#
        );
    }

    #[test]
    fn the_hash_commits_to_every_field() {
        let record = json!({"id": "hop_1"});
        let base = entry_hash(1, 10, "hop", &record, GENESIS);
        assert_ne!(base, entry_hash(2, 10, "hop", &record, GENESIS));
        assert_ne!(base, entry_hash(1, 11, "hop", &record, GENESIS));
        assert_ne!(base, entry_hash(1, 10, "audit", &record, GENESIS));
        assert_ne!(
            base,
            entry_hash(1, 10, "hop", &json!({"id": "hop_2"}), GENESIS)
        );
        assert_ne!(base, entry_hash(1, 10, "hop", &record, &"1".repeat(64)));
        // Key order in the record does not matter: the canonical form sorts it.
        let a = entry_hash(1, 10, "hop", &json!({"a": 1, "b": 2}), GENESIS);
        let b: Value = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        assert_eq!(a, entry_hash(1, 10, "hop", &b, GENESIS));
    }

    #[test]
    fn the_hash_is_sha256_of_the_documented_form() {
        // The same bytes docs/EVIDENCE.md hashes: an auditor can recompute it without mandate.
        let hash = entry_hash(1, 1000, "audit", &json!({"x": "é"}), GENESIS);
        let form = format!(
            r#"{{"kind":"audit","prev":"{GENESIS}","record":{{"x":"é"}},"seq":1,"time":1000}}"#
        );
        assert_eq!(hash, hex::encode(Sha256::digest(form.as_bytes())));
    }

    #[test]
    fn sealing_links_each_entry_to_the_one_before() {
        let first = Entry::seal(&Head::default(), 1, "hop", json!({"n": 1}));
        let second = Entry::seal(&first.head(), 2, "hop", json!({"n": 2}));
        assert_eq!((first.seq, first.prev.as_str()), (1, GENESIS));
        assert_eq!((second.seq, &second.prev), (2, &first.hash));
        assert!(first.hash_matches() && second.hash_matches());
    }
}
