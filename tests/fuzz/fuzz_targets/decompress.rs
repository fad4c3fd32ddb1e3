//! The gzip and zstd decoders with their limit on arbitrary input: never a panic, never
//! more than the limit (plus the one byte that proves it was passed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidegate::ingress::{decompress, BodyError, ContentEncoding};

const LIMIT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let encoding = if selector & 1 == 0 {
        ContentEncoding::Gzip
    } else {
        ContentEncoding::Zstd
    };
    let mut out = Vec::new();
    match decompress(encoding, input, LIMIT, &mut out) {
        Ok(()) => assert!(out.len() <= LIMIT),
        Err(BodyError::DecompressedTooLarge { .. }) => assert!(out.len() <= LIMIT + 1),
        Err(_) => {}
    }
});
