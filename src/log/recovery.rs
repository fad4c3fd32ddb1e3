//! Opening a log after any stop, clean or not: cut a torn tail, read the checkpoint, and
//! gather what the sink may not have stored.
//!
//! A crash can leave the last segment with a partial record at its end (a write that did
//! not finish; never one that was acknowledged, since acknowledgement waits for the sync).
//! That tail is cut off the file, so the next start does not report it again. A damaged
//! record elsewhere is skipped, counted and reported with its segment and offset: the log
//! never wedges on it.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{LogError, Position};
use crate::segment::{segment_files, Found, Scanner, SEGMENT_SUFFIX};

const CHECKPOINT_FILE: &str = "checkpoint";

/// What a log held at start.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Everything before this was stored by the sink.
    pub checkpoint: Position,
    /// Intact records from the checkpoint on, in log order.
    pub records: Vec<Bytes>,
    /// Damaged records skipped (torn tails cut are not counted).
    pub skipped: usize,
    /// Bytes cut off the end of the last segment.
    pub torn_bytes: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sequence_of(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_suffix(&format!(".{SEGMENT_SUFFIX}"))?
        .parse()
        .ok()
}

/// Reads the log in `dir` (created if missing). Without `collect`, only the last segment is
/// read, to cut its torn tail: the records themselves are not needed.
pub fn recover(dir: &Path, collect: bool) -> Result<Recovered, LogError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let checkpoint = read_checkpoint(dir)?;
    let mut recovered = Recovered {
        checkpoint,
        ..Recovered::default()
    };
    let files: Vec<PathBuf> = segment_files(dir)
        .map_err(io(dir))?
        .into_iter()
        .filter(|f| f.parent() == Some(dir))
        .collect();
    let last = files.len().checked_sub(1);
    for (i, file) in files.iter().enumerate() {
        let Some(sequence) = sequence_of(file) else {
            continue;
        };
        if sequence < checkpoint.0 || (!collect && Some(i) != last) {
            continue;
        }
        let data = std::fs::read(file).map_err(io(file))?;
        for found in Scanner::new(&data) {
            match found {
                Found::Record { offset, payload } => {
                    if collect && (sequence, offset as u64) >= checkpoint {
                        recovered.records.push(Bytes::copy_from_slice(payload));
                    }
                }
                Found::Torn { offset, len } if Some(i) == last => {
                    tracing::warn!(segment = %file.display(), offset, len, "cutting a torn tail off the write-ahead log");
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(file)
                        .map_err(io(file))?;
                    f.set_len(offset as u64).map_err(io(file))?;
                    f.sync_all().map_err(io(file))?;
                    recovered.torn_bytes += len;
                }
                damage => {
                    tracing::error!(segment = %file.display(), ?damage, "skipping a damaged write-ahead log record");
                    recovered.skipped += 1;
                }
            }
        }
    }
    Ok(recovered)
}

fn read_checkpoint(dir: &Path) -> Result<Position, LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(err) => return Err(io(&path)(err)),
    };
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    match (words.next(), words.next()) {
        (Some(Ok(sequence)), Some(Ok(offset))) => Ok((sequence, offset)),
        _ => {
            // Never trust a checkpoint that does not read back: replaying too much is
            // safe (idempotent writes), skipping too much is loss.
            tracing::warn!(path = %path.display(), "unreadable log checkpoint; replaying the whole log");
            Ok((0, 0))
        }
    }
}

/// Replaces the checkpoint file atomically (write, then rename).
pub fn save_checkpoint(dir: &Path, at: Position) -> Result<(), LogError> {
    let path = dir.join(CHECKPOINT_FILE);
    let temporary = dir.join(format!("{CHECKPOINT_FILE}.new"));
    std::fs::write(&temporary, format!("{} {}\n", at.0, at.1)).map_err(io(&temporary))?;
    std::fs::rename(&temporary, &path).map_err(io(&path))
}

/// The segments numbered below `sequence`: everything in them is stored.
pub fn segments_before(dir: &Path, sequence: u64) -> Vec<PathBuf> {
    let Ok(files) = segment_files(dir) else {
        return Vec::new();
    };
    files
        .into_iter()
        .filter(|file| {
            file.parent() == Some(dir) && sequence_of(file).is_some_and(|s| s < sequence)
        })
        .collect()
}

/// Deletes the segments numbered below `sequence`, now (at start and at shutdown).
pub fn delete_before(dir: &Path, sequence: u64) {
    for file in segments_before(dir, sequence) {
        match std::fs::remove_file(&file) {
            // A deletion still running in the background got there first.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => cannot_delete(&file, &err),
            Ok(()) => {}
        }
    }
}

pub fn cannot_delete(file: &Path, err: &dyn std::fmt::Display) {
    tracing::warn!(segment = %file.display(), error = %err, "cannot delete a stored log segment");
}

/// The number of segments in `dir` and their bytes.
pub fn footprint(dir: &Path) -> (u64, u64) {
    let Ok(files) = segment_files(dir) else {
        return (0, 0);
    };
    files
        .iter()
        .filter(|f| f.parent() == Some(dir))
        .fold((0, 0), |(n, bytes), f| {
            (n + 1, bytes + std::fs::metadata(f).map_or(0, |m| m.len()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::{append_record, framed_len};

    fn write_segment(dir: &Path, sequence: u64, records: &[&[u8]]) -> PathBuf {
        let mut data = Vec::new();
        for r in records {
            append_record(&mut data, r);
        }
        let path = dir.join(format!("{sequence:016}.{SEGMENT_SUFFIX}"));
        std::fs::write(&path, data).unwrap();
        path
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_offset_of_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let whole = framed_len(5);
        for cut in 1..whole {
            let path = write_segment(dir.path(), 0, &[b"first", b"last!"]);
            let len = std::fs::metadata(&path).unwrap().len() as usize;
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len((len - cut) as u64).unwrap();
            let recovered = recover(dir.path(), true).unwrap();
            assert_eq!(
                recovered.records,
                vec![Bytes::from_static(b"first")],
                "cut {cut}"
            );
            assert_eq!(recovered.skipped, 0, "cut {cut}");
            assert_eq!(
                std::fs::metadata(&path).unwrap().len() as usize,
                whole,
                "cut {cut}: the tail is gone from the file"
            );
            assert_eq!(recover(dir.path(), true).unwrap().torn_bytes, 0, "cut once");
        }
    }

    #[test]
    fn a_corrupt_record_in_the_middle_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_segment(dir.path(), 0, &[b"one", b"two", b"three"]);
        let mut data = std::fs::read(&path).unwrap();
        let second = framed_len(3);
        data[second + 13] ^= 0xff; // a payload byte of "two"
        std::fs::write(&path, data).unwrap();
        write_segment(dir.path(), 1, &[b"four"]);
        let recovered = recover(dir.path(), true).unwrap();
        assert_eq!(
            recovered.records,
            ["one", "three", "four"].map(|s| Bytes::copy_from_slice(s.as_bytes()))
        );
        assert_eq!(recovered.skipped, 1);
    }

    #[test]
    fn only_records_from_the_checkpoint_on_are_replayed() {
        let dir = tempfile::tempdir().unwrap();
        write_segment(dir.path(), 3, &[b"stored", b"not yet"]);
        save_checkpoint(dir.path(), (3, framed_len(6) as u64)).unwrap();
        let recovered = recover(dir.path(), true).unwrap();
        assert_eq!(recovered.records, vec![Bytes::from_static(b"not yet")]);
        write_segment(dir.path(), 2, &[b"old"]);
        delete_before(dir.path(), 3);
        assert_eq!(segment_files(dir.path()).unwrap().len(), 1);
        std::fs::write(dir.path().join(CHECKPOINT_FILE), "garbage").unwrap();
        assert_eq!(
            recover(dir.path(), true).unwrap().records.len(),
            2,
            "replay all"
        );
    }
}
