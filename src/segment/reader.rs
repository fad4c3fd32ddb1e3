//! Finding the segments under a path, in the order they were written.

use std::io;
use std::path::{Path, PathBuf};

use super::SEGMENT_SUFFIX;

/// Every segment file under `path` (a data directory, a shard directory or one segment),
/// ordered by directory and then sequence number.
pub fn segment_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect(path, &mut files)?;
    files.sort();
    Ok(files)
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        if path.extension().is_some_and(|e| e == SEGMENT_SUFFIX) {
            files.push(path.to_owned());
        }
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        collect(&entry?.path(), files)?;
    }
    Ok(())
}
