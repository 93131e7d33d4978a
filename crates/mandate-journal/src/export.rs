//! The export format (`mandate ledger export --format jsonl`, `GET /admin/ledger/export`): one
//! JSON object per line — a header, the signed checkpoints, the entries in journal order, and a
//! trailer — and its offline verification. docs/EVIDENCE.md describes each line.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checkpoint::{verify_checkpoint, Checkpoint};
use crate::entry::{Entry, Head};
use crate::verify::{Report, Verifier};
use mandate_token::{Algorithm, VerifyingKeySet};

/// The format named in every header.
pub const EXPORT_FORMAT: &str = "mandate-journal/1";

/// Which entries an export or a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// From the first entry written at or after this (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// Up to the last entry before the first one written after this (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<i64>,
    /// Only hops of this chain, and audit events whose target is it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Only hops for this subject, and audit events whose target is it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// Where an entry stands against a selection's time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InRange {
    /// Before the range: skip it.
    Before,
    /// In it.
    Within,
    /// After it: the range has ended, stop reading.
    After,
}

impl Selection {
    /// Whether entries are picked by content (chain or subject), so that the selection has gaps.
    pub fn is_filtered(&self) -> bool {
        self.chain.is_some() || self.subject.is_some()
    }

    /// Where `entry` stands against the time range, `started` saying whether an entry of the
    /// range was already read. A range is one contiguous run of the journal, from the first
    /// entry written at or after `since` to the one before the first written after `until`, so
    /// that nodes whose clocks differ a little cannot put holes in it.
    pub fn in_range(&self, entry: &Entry, started: bool) -> InRange {
        if self.until_ms.is_some_and(|until| entry.time > until) {
            return InRange::After;
        }
        if started || self.since_ms.is_none_or(|since| entry.time >= since) {
            InRange::Within
        } else {
            InRange::Before
        }
    }

    /// Whether `entry` (within the time range) matches the chain and subject filters.
    pub fn matches(&self, entry: &Entry) -> bool {
        let field = |key: &str| entry.record.get(key).and_then(Value::as_str);
        let is = |wanted: &Option<String>, hop_field: &str| match wanted {
            None => true,
            Some(wanted) if entry.kind == "hop" => field(hop_field) == Some(wanted.as_str()),
            Some(wanted) => field("target") == Some(wanted.as_str()),
        };
        is(&self.chain, "chain_id") && is(&self.subject, "subject")
    }
}

/// The first line: what the export holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportHeader {
    /// [`EXPORT_FORMAT`].
    pub format: String,
    /// mandate's issuer: the `iss` of the checkpoints.
    pub issuer: String,
    /// When it was made (ms).
    pub exported_at: i64,
    /// The last entry retention had forgotten.
    pub base: Head,
    /// The journal's head when the export began.
    pub head: Head,
    /// Which entries follow.
    pub selection: Selection,
}

/// The last line: how many entries came, so that a cut-off file is told from a whole one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportEnd {
    /// Entry lines written.
    pub entries: u64,
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExportLine {
    /// `{"journal": …}`.
    Header {
        /// The header.
        journal: ExportHeader,
    },
    /// `{"checkpoint": …}`.
    Checkpoint {
        /// A signed checkpoint.
        checkpoint: Checkpoint,
    },
    /// `{"end": …}`.
    End {
        /// The trailer.
        end: ExportEnd,
    },
    /// An entry, as [`Entry`] serializes.
    Entry(Entry),
}

impl ExportLine {
    /// The line's JSON, newline-terminated.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Why an export could not be verified at all (findings about its entries are in the report).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A line is not one of the export's lines.
    #[error("line {line} is not an export line: {cause}")]
    Unreadable {
        /// 1-based.
        line: u64,
        /// The parse error.
        cause: String,
    },
    /// The first line is not a header.
    #[error("the export does not start with its header line")]
    NoHeader,
    /// The header names another format.
    #[error("unknown export format {0:?}")]
    Format(String),
}

/// Keys to check the checkpoints' signatures with: mandate's JWKS.
#[derive(Debug)]
pub struct CheckpointKeys<'a> {
    /// The key set.
    pub keys: &'a VerifyingKeySet,
    /// The algorithms allowed.
    pub algorithms: &'a [Algorithm],
}

/// What an offline verification found.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The verifier's report.
    #[serde(flatten)]
    pub report: Report,
    /// Checkpoints whose signature verified (and were used).
    pub checkpoints_verified: u64,
    /// Checkpoints whose signature did not verify, by seq (not used).
    pub checkpoints_refused: Vec<u64>,
    /// Whether signatures were checked at all (keys were given).
    pub signatures_checked: bool,
    /// Whether the trailer was there and counted the entries read.
    pub complete: bool,
}

impl ExportReport {
    /// Whether nothing was found wrong.
    pub fn is_clean(&self) -> bool {
        self.report.is_clean() && self.checkpoints_refused.is_empty() && self.complete
    }
}

/// Verifies an export read line by line, in bounded memory: the entries' hashes, links and
/// order (from the header's base for a whole export), and, when `keys` are given, the signed
/// checkpoints against them. Without keys the checkpoints prove nothing and are not used.
pub fn verify_export(
    lines: impl IntoIterator<Item = std::io::Result<String>>,
    keys: Option<CheckpointKeys<'_>>,
) -> Result<ExportReport, ExportError> {
    let mut lines = lines.into_iter().enumerate();
    let read = |n: usize, line: std::io::Result<String>| -> Result<ExportLine, ExportError> {
        let line = line.map_err(|e| ExportError::Unreadable {
            line: n as u64 + 1,
            cause: e.to_string(),
        })?;
        serde_json::from_str(&line).map_err(|e| ExportError::Unreadable {
            line: n as u64 + 1,
            cause: e.to_string(),
        })
    };
    let header = match lines.next() {
        Some((n, line)) => match read(n, line)? {
            ExportLine::Header { journal } => journal,
            _ => return Err(ExportError::NoHeader),
        },
        None => return Err(ExportError::NoHeader),
    };
    if header.format != EXPORT_FORMAT {
        return Err(ExportError::Format(header.format));
    }
    let mut verifier = if header.selection.is_filtered() {
        Verifier::filtered()
    } else if header.selection.since_ms.is_some() {
        Verifier::new()
    } else {
        Verifier::starting_after(header.base.clone())
    };
    if header.selection.until_ms.is_some() {
        verifier = verifier.not_to_end();
    }
    let mut verified = 0;
    let mut refused = Vec::new();
    let mut end = None;
    let mut entries = 0;
    for (n, line) in lines {
        match read(n, line)? {
            ExportLine::Header { .. } => return Err(ExportError::NoHeader),
            ExportLine::Checkpoint { checkpoint } => {
                if let Some(keys) = &keys {
                    match verify_checkpoint(
                        &checkpoint,
                        keys.keys,
                        keys.algorithms,
                        Some(&header.issuer),
                    ) {
                        Ok(_) => {
                            verified += 1;
                            verifier.add_checkpoint(checkpoint.head());
                        }
                        Err(_) => refused.push(checkpoint.seq),
                    }
                }
            }
            ExportLine::Entry(entry) => {
                entries += 1;
                verifier.feed(entry);
            }
            ExportLine::End { end: trailer } => end = Some(trailer),
        }
    }
    // A whole export ends at the head it names.
    let head = (!header.selection.is_filtered()
        && header.selection.since_ms.is_none()
        && header.selection.until_ms.is_none())
    .then_some(&header.head);
    Ok(ExportReport {
        report: verifier.finish(head),
        checkpoints_verified: verified,
        checkpoints_refused: refused,
        signatures_checked: keys.is_some(),
        complete: end.is_some_and(|end| end.entries == entries),
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;
    use crate::checkpoint::sign_checkpoint;
    use crate::verify::Finding;
    use mandate_token::{KeySet, SigningAlgorithm, SigningKey};
    use serde_json::json;

    const ISSUER: &str = "https://mandate.example";

    fn keys() -> KeySet {
        KeySet::new(
            SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
            None,
            vec![],
        )
        .unwrap()
    }

    /// An export of `n` entries with a checkpoint at `checkpoint_at`, as lines.
    fn export(set: &KeySet, n: u64, checkpoint_at: u64) -> Vec<String> {
        let mut head = Head::default();
        let entries: Vec<Entry> = (1..=n)
            .map(|i| {
                let entry = Entry::seal(
                    &head,
                    i as i64,
                    "hop",
                    json!({ "chain_id": format!("c{}", i % 2) }),
                );
                head = entry.head();
                entry
            })
            .collect();
        let header = ExportHeader {
            format: EXPORT_FORMAT.into(),
            issuer: ISSUER.into(),
            exported_at: 0,
            base: Head::default(),
            head: head.clone(),
            selection: Selection::default(),
        };
        let checkpoint = sign_checkpoint(
            set.active(),
            ISSUER,
            1,
            &entries[checkpoint_at as usize - 1].head(),
        )
        .unwrap();
        let mut lines = vec![
            ExportLine::Header { journal: header }.to_line(),
            ExportLine::Checkpoint { checkpoint }.to_line(),
        ];
        lines.extend(entries.into_iter().map(|e| ExportLine::Entry(e).to_line()));
        lines.push(
            ExportLine::End {
                end: ExportEnd { entries: n },
            }
            .to_line(),
        );
        lines
    }

    fn check(lines: &[String], set: &KeySet) -> ExportReport {
        let keys = VerifyingKeySet::from_jwks(set.jwks(), set.algorithms()).unwrap();
        verify_export(
            lines.iter().map(|l| Ok(l.trim_end().to_owned())),
            Some(CheckpointKeys {
                keys: &keys,
                algorithms: set.algorithms(),
            }),
        )
        .unwrap()
    }

    #[test]
    fn a_whole_export_verifies_with_its_checkpoint() {
        let set = keys();
        let report = check(&export(&set, 5, 3), &set);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(
            (
                report.checkpoints_verified,
                report.report.checkpoints_checked
            ),
            (1, 1)
        );
    }

    #[test]
    fn an_altered_line_a_cut_file_and_a_forged_checkpoint_are_each_found() {
        let set = keys();
        let mut altered = export(&set, 5, 3);
        altered[4] = altered[4].replace("\"c1\"", "\"c9\"");
        assert_eq!(
            check(&altered, &set).report.findings,
            [Finding::Altered { seq: 3 }]
        );

        let mut cut = export(&set, 5, 3);
        cut.truncate(5);
        let report = check(&cut, &set);
        assert!(!report.complete && !report.is_clean());

        // A checkpoint signed by another key is refused and not used.
        let forged = export(&keys(), 5, 3);
        let mut lines = export(&set, 5, 3);
        lines[1] = forged[1].clone();
        let report = check(&lines, &set);
        assert_eq!(
            (
                report.checkpoints_refused.as_slice(),
                report.checkpoints_verified
            ),
            (&[3][..], 0)
        );
    }

    #[test]
    fn a_filtered_selection_has_gaps_by_design() {
        let selection = Selection {
            chain: Some("c1".into()),
            ..Selection::default()
        };
        let hop = Entry::seal(
            &Head::default(),
            1,
            "hop",
            json!({ "chain_id": "c1", "subject": "u" }),
        );
        let audit = Entry::seal(&Head::default(), 1, "audit", json!({ "target": "c1" }));
        let other = Entry::seal(&Head::default(), 1, "hop", json!({ "chain_id": "c2" }));
        assert!(selection.matches(&hop) && selection.matches(&audit) && !selection.matches(&other));
        let by_subject = Selection {
            subject: Some("u".into()),
            ..Selection::default()
        };
        assert!(by_subject.matches(&hop) && !by_subject.matches(&other));
        let range = Selection {
            since_ms: Some(10),
            until_ms: Some(20),
            ..Selection::default()
        };
        let at = |t: i64| Entry::seal(&Head::default(), t, "audit", json!({}));
        assert_eq!(range.in_range(&at(5), false), InRange::Before);
        assert_eq!(
            range.in_range(&at(5), true),
            InRange::Within,
            "a run has no holes"
        );
        assert_eq!(range.in_range(&at(15), false), InRange::Within);
        assert_eq!(range.in_range(&at(21), true), InRange::After);
    }
}
