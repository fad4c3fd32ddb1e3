//! Reading a spool back: `tidegate spool cat DIR`.
//!
//! Prints every stored event as one JSON object per line, in segment order per shard, and
//! reports damage (torn tails, corrupt records) on stderr without stopping, so an operator
//! can always recover everything intact from a damaged spool.

use std::io::{self, Write};
use std::path::Path;

use crate::encoded::EventView;
use crate::segment::{segment_files, Found, Scanner};

/// What a read of a spool found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CatSummary {
    pub segments: usize,
    pub events: usize,
    pub damaged: usize,
    pub torn: usize,
}

/// Writes every intact event under `path` to `out` as NDJSON; damage goes to `report`.
pub fn cat(path: &Path, out: &mut impl Write, report: &mut impl Write) -> io::Result<CatSummary> {
    let mut summary = CatSummary::default();
    let mut line = String::new();
    for file in segment_files(path)? {
        summary.segments += 1;
        let data = std::fs::read(&file)?;
        for found in Scanner::new(&data) {
            match found {
                Found::Record { offset, payload } => match EventView::decode(payload) {
                    Ok(event) => {
                        line.clear();
                        event.write_json(&mut line);
                        line.push('\n');
                        out.write_all(line.as_bytes())?;
                        summary.events += 1;
                    }
                    Err(err) => {
                        summary.damaged += 1;
                        writeln!(
                            report,
                            "{}: record at byte {offset} skipped: {err}",
                            file.display()
                        )?;
                    }
                },
                Found::Damaged {
                    offset,
                    skipped,
                    reason,
                } => {
                    summary.damaged += 1;
                    writeln!(
                        report,
                        "{}: {skipped} damaged bytes at byte {offset} skipped: {reason}",
                        file.display()
                    )?;
                }
                Found::Torn { offset, len } => {
                    summary.torn += 1;
                    writeln!(
                        report,
                        "{}: torn record of {len} bytes at byte {offset} (an unfinished write) skipped",
                        file.display()
                    )?;
                }
            }
        }
    }
    Ok(summary)
}
