//! The ledger as evidence (docs/EVIDENCE.md): reading the journal by pages, exporting it as a
//! stream of lines (the export format, or OCSF events), and verifying it against the store and
//! mandate's own keys. Nothing here holds more than one page of entries at a time.

use std::sync::Arc;

use futures_util::stream::{self, Stream};
use mandate_chain::StoreFailure;
use mandate_journal::{
    ocsf, verify_checkpoint, Checkpoint, Entry, ExportEnd, ExportHeader, ExportLine, Finding, Head,
    InRange, Report, Selection, Verifier, EXPORT_FORMAT,
};
use mandate_model::Clock;
use mandate_store::{Journal, JournalBounds};
use mandate_token::VerifyingKeySet;
use serde::Serialize;

use crate::keys::KeyRing;

/// How many stored entries one read from the store takes.
const STORE_PAGE: usize = 500;
/// A page of a filtered listing reads at most this many stored entries looking for matches,
/// so that a filter that matches little cannot make one request walk the whole journal.
const SCAN_MAX: usize = 20_000;

/// Where a listing goes on from: after the entry at `after`, and whether the selection's time
/// range had begun there. Written `<after>` or `<after>r`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The last place read.
    pub after: u64,
    /// Whether the time range had begun.
    pub started: bool,
}

impl Cursor {
    /// Parses `<after>` or `<after>r`.
    pub fn parse(text: &str) -> Option<Self> {
        let (digits, started) = match text.strip_suffix('r') {
            Some(digits) => (digits, true),
            None => (text, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            after: digits.parse().ok()?,
            started,
        })
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.after, if self.started { "r" } else { "" })
    }
}

/// The journal's bounds and its latest checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct JournalSummary {
    /// Base, head and pending count.
    #[serde(flatten)]
    pub bounds: JournalBounds,
    /// The latest signed checkpoint.
    pub latest_checkpoint: Option<Checkpoint>,
}

/// One page of entries.
#[derive(Debug, Clone, Serialize)]
pub struct EntryPage {
    /// The entries, in the store's order.
    pub entries: Vec<Entry>,
    /// Where the next page starts; `None` when the selection is exhausted.
    pub next: Option<String>,
}

/// What an online verification found, with each finding said in words.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineReport {
    /// Whether nothing was found wrong.
    pub clean: bool,
    /// The verifier's report.
    #[serde(flatten)]
    pub report: Report,
    /// Each finding in words, in the order of `findings`.
    pub messages: Vec<String>,
    /// Checkpoints whose signature verified against mandate's keys.
    pub checkpoints_verified: u64,
    /// Checkpoints whose signature did not (not used), by seq.
    pub checkpoints_refused: Vec<u64>,
    /// Where the kept entries began and ended when the verification started.
    pub base: Head,
    /// The head it verified up to.
    pub head: Head,
}

/// A run through the journal for a selection: which place it is at, whether the time range has
/// begun, and where it stops.
struct Scan {
    selection: Selection,
    cursor: Cursor,
    /// The last place it reads (the head when it began).
    last: u64,
    done: bool,
}

impl Scan {
    /// Up to `want` matching entries from the next stored page (maybe none); `done` once the
    /// run is over.
    async fn next_page(
        &mut self,
        journal: &dyn Journal,
        want: usize,
    ) -> Result<Vec<Entry>, StoreFailure> {
        if self.done {
            return Ok(Vec::new());
        }
        let stored = journal.entries(self.cursor.after, STORE_PAGE).await?;
        let short = stored.len() < STORE_PAGE;
        let mut matched = Vec::new();
        for item in stored {
            if matched.len() >= want {
                return Ok(matched);
            }
            if item.place > self.last {
                self.done = true;
                return Ok(matched);
            }
            self.cursor.after = item.place;
            match self.selection.in_range(&item.entry, self.cursor.started) {
                InRange::Before => continue,
                InRange::After => {
                    self.done = true;
                    return Ok(matched);
                }
                InRange::Within => self.cursor.started = true,
            }
            if self.selection.matches(&item.entry) {
                matched.push(item.entry);
            }
        }
        if short {
            self.done = true;
        }
        Ok(matched)
    }
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The export format: header, checkpoints, entries, trailer (verifiable offline).
    Jsonl,
    /// One OCSF 1.8.0 event per entry, for a SIEM.
    Ocsf,
}

/// Reading, exporting and verifying the journal.
#[derive(Debug, Clone)]
pub struct JournalService {
    journal: Arc<dyn Journal>,
    keys: KeyRing,
    issuer: String,
    clock: Arc<dyn Clock>,
}

impl JournalService {
    /// The service over `journal`, signing as `issuer` with `keys`.
    pub fn new(
        journal: Arc<dyn Journal>,
        keys: KeyRing,
        issuer: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            journal,
            keys,
            issuer: issuer.into(),
            clock,
        }
    }

    /// The bounds and the latest checkpoint.
    pub async fn summary(&self) -> Result<JournalSummary, StoreFailure> {
        Ok(JournalSummary {
            bounds: self.journal.bounds().await?,
            latest_checkpoint: self.journal.latest_checkpoint().await?,
        })
    }

    /// Up to `limit` entries of `selection` after `cursor`.
    pub async fn page(
        &self,
        selection: Selection,
        cursor: Cursor,
        limit: usize,
    ) -> Result<EntryPage, StoreFailure> {
        let head = self.journal.bounds().await?.head;
        let mut scan = Scan {
            selection,
            cursor,
            last: head.seq.max(cursor.after),
            done: false,
        };
        let mut entries = Vec::new();
        while !scan.done
            && entries.len() < limit
            && scan.cursor.after.saturating_sub(cursor.after) < SCAN_MAX as u64
        {
            let want = limit - entries.len();
            entries.extend(scan.next_page(self.journal.as_ref(), want).await?);
        }
        let next = (!scan.done).then(|| scan.cursor.to_string());
        Ok(EntryPage { entries, next })
    }

    /// Up to `limit` checkpoints after seq `after`.
    pub async fn checkpoints(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, StoreFailure> {
        self.journal.checkpoints(after, limit).await
    }

    /// The selection as a stream of lines, one page of the store at a time, up to the head the
    /// export began at.
    pub fn export(
        &self,
        selection: Selection,
        format: ExportFormat,
    ) -> impl Stream<Item = Result<String, StoreFailure>> + 'static {
        enum Stage {
            Header,
            Checkpoints { after: u64, scan: Box<Scan> },
            Entries { scan: Box<Scan>, count: u64 },
            End { count: u64 },
            Done,
        }
        let service = self.clone();
        stream::try_unfold(Stage::Header, move |stage| {
            let service = service.clone();
            let selection = selection.clone();
            async move {
                let journal = service.journal.as_ref();
                match stage {
                    Stage::Header => {
                        let bounds = journal.bounds().await?;
                        let scan = Box::new(Scan {
                            selection: selection.clone(),
                            cursor: Cursor::default(),
                            last: bounds.head.seq,
                            done: false,
                        });
                        let header = ExportLine::Header {
                            journal: ExportHeader {
                                format: EXPORT_FORMAT.into(),
                                issuer: service.issuer.clone(),
                                exported_at: service.clock.now().timestamp_millis(),
                                base: bounds.base.clone(),
                                head: bounds.head,
                                selection,
                            },
                        };
                        let after = bounds.base.seq;
                        let line = match format {
                            ExportFormat::Jsonl => header.to_line(),
                            ExportFormat::Ocsf => String::new(),
                        };
                        Ok(Some((line, Stage::Checkpoints { after, scan })))
                    }
                    Stage::Checkpoints { after, scan } => {
                        if format == ExportFormat::Ocsf {
                            return Ok(Some((String::new(), Stage::Entries { scan, count: 0 })));
                        }
                        let page = journal.checkpoints(after, STORE_PAGE).await?;
                        let within: Vec<Checkpoint> =
                            page.into_iter().filter(|c| c.seq <= scan.last).collect();
                        let Some(last) = within.last().map(|c| c.seq) else {
                            return Ok(Some((String::new(), Stage::Entries { scan, count: 0 })));
                        };
                        let lines = within
                            .into_iter()
                            .map(|checkpoint| ExportLine::Checkpoint { checkpoint }.to_line())
                            .collect();
                        Ok(Some((lines, Stage::Checkpoints { after: last, scan })))
                    }
                    Stage::Entries {
                        mut scan,
                        mut count,
                    } => {
                        if scan.done {
                            return Ok(Some((String::new(), Stage::End { count })));
                        }
                        let entries = scan.next_page(journal, usize::MAX).await?;
                        let mut lines = String::new();
                        for entry in entries {
                            count += 1;
                            match format {
                                ExportFormat::Jsonl => {
                                    lines.push_str(&ExportLine::Entry(entry).to_line());
                                }
                                ExportFormat::Ocsf => {
                                    lines.push_str(&ocsf::to_ocsf(&entry).to_string());
                                    lines.push('\n');
                                }
                            }
                        }
                        Ok(Some((lines, Stage::Entries { scan, count })))
                    }
                    Stage::End { count } => {
                        let line = match format {
                            ExportFormat::Jsonl => ExportLine::End {
                                end: ExportEnd { entries: count },
                            }
                            .to_line(),
                            ExportFormat::Ocsf => String::new(),
                        };
                        Ok(Some((line, Stage::Done)))
                    }
                    Stage::Done => Ok(None),
                }
            }
        })
    }

    /// Verifies the whole kept journal, from its base to the head when it began, against the
    /// checkpoints whose signatures mandate's published keys verify.
    pub async fn verify(&self) -> Result<OnlineReport, StoreFailure> {
        let bounds = self.journal.bounds().await?;
        let set = self.keys.current();
        let keys = VerifyingKeySet::from_jwks(set.jwks(), set.algorithms())
            .map_err(|e| StoreFailure(format!("mandate's own key set is unreadable: {e}")))?;
        let mut verifier = Verifier::starting_after(bounds.base.clone());
        let (mut verified, mut refused) = (0, Vec::new());
        let mut after = bounds.base.seq;
        loop {
            let page = self.journal.checkpoints(after, STORE_PAGE).await?;
            let Some(last) = page.last().map(|c| c.seq) else {
                break;
            };
            for checkpoint in page.into_iter().filter(|c| c.seq <= bounds.head.seq) {
                match verify_checkpoint(&checkpoint, &keys, set.algorithms(), Some(&self.issuer)) {
                    Ok(_) => {
                        verified += 1;
                        verifier.add_checkpoint(checkpoint.head());
                    }
                    Err(_) => refused.push(checkpoint.seq),
                }
            }
            after = last;
        }
        let mut scan = Scan {
            selection: Selection::default(),
            cursor: Cursor::default(),
            last: bounds.head.seq,
            done: false,
        };
        while !scan.done {
            for entry in scan.next_page(self.journal.as_ref(), usize::MAX).await? {
                verifier.feed(entry);
            }
        }
        let report = verifier.finish(Some(&bounds.head));
        let messages = report.findings.iter().map(Finding::to_string).collect();
        Ok(OnlineReport {
            clean: report.is_clean() && refused.is_empty(),
            report,
            messages,
            checkpoints_verified: verified,
            checkpoints_refused: refused,
            base: bounds.base,
            head: bounds.head,
        })
    }
}
