//! Segment files: the on-disk form shared by everything tidegate keeps on local disk.
//!
//! A directory holds numbered, append-only segments of checksummed records. The spool sink
//! stores its events this way and the write-ahead log shares the format (with the spool sink
//! they are the same files), so one
//! reader — `tidegate spool cat`, replay, crash recovery — understands both, and damage is
//! handled once: a torn tail or a corrupt record costs that record, never the rest.
//!
//! - [`record`]: how a record is framed, and the scanner that finds records in damaged bytes;
//! - [`writer`]: appending batches to a directory's segments, rotating and syncing them;
//! - [`gather`]: records framed for one write where the write reads them;
//! - [`zero_ahead`]: zeros kept written ahead of a direct segment's records;
//! - [`reader`]: finding a directory's segments in order.

mod gather;
mod reader;
mod record;
mod writer;
mod zero_ahead;

pub use gather::Gathered;
pub use reader::segment_files;
pub use record::{append_record, framed_len, Found, Scanner};
pub use writer::{FsyncPolicy, SegmentError, SegmentSettings, SegmentWriter};

/// The file-name suffix of a segment: `<sequence, 16 digits>.seg`.
pub const SEGMENT_SUFFIX: &str = "seg";
