//! Reading a request body within limits, and undoing its Content-Encoding within limits.
//!
//! Two limits apply: the body as sent (checked against Content-Length before reading, and
//! again while reading, since chunked bodies announce no length) and the body after
//! decompression. The second is what stops a decompression bomb: the decoder is never
//! asked for more than one byte past the limit.

use std::io::Read;

use http_body_util::BodyExt;
use hyper::body::Incoming;

/// How the body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
    Zstd,
}

impl ContentEncoding {
    /// Parses a Content-Encoding header value; `None` for encodings tidegate does not accept.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Some(ContentEncoding::Identity),
            Some("gzip") | Some("x-gzip") => Some(ContentEncoding::Gzip),
            Some("zstd") => Some(ContentEncoding::Zstd),
            Some(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("decompressed body exceeds the limit of {limit} bytes")]
    DecompressedTooLarge { limit: usize },
    #[error("body is not valid {encoding}: {detail}")]
    BadEncoding {
        encoding: &'static str,
        detail: String,
    },
    #[error("reading the request body failed: {0}")]
    Read(#[from] hyper::Error),
}

/// Appends the whole body to `into`, failing as soon as it passes `limit` bytes.
pub async fn read_limited(
    mut body: Incoming,
    limit: usize,
    into: &mut Vec<u8>,
) -> Result<(), BodyError> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if into.len() + data.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            into.extend_from_slice(&data);
        }
    }
    Ok(())
}

/// Decodes `input` into `out`, producing at most `limit` bytes.
pub fn decompress(
    encoding: ContentEncoding,
    input: &[u8],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), BodyError> {
    let bound = limit as u64 + 1;
    let (name, result) = match encoding {
        ContentEncoding::Identity => {
            unreachable!("identity bodies are parsed where they were read")
        }
        ContentEncoding::Gzip => (
            "gzip",
            flate2::read::MultiGzDecoder::new(input)
                .take(bound)
                .read_to_end(out),
        ),
        ContentEncoding::Zstd => (
            "zstd",
            zstd::stream::read::Decoder::with_buffer(input)
                .and_then(|decoder| decoder.take(bound).read_to_end(out)),
        ),
    };
    result.map_err(|e| BodyError::BadEncoding {
        encoding: name,
        detail: e.to_string(),
    })?;
    if out.len() > limit {
        return Err(BodyError::DecompressedTooLarge { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn decodes_within_the_limit_and_stops_bombs() {
        let data = vec![b'a'; 10_000];
        let mut out = Vec::new();
        decompress(ContentEncoding::Gzip, &gzip(&data), 10_000, &mut out).unwrap();
        assert_eq!(out, data);
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        out.clear();
        decompress(ContentEncoding::Zstd, &zst, 10_000, &mut out).unwrap();
        assert_eq!(out, data);
        out.clear();
        assert!(matches!(
            decompress(ContentEncoding::Gzip, &gzip(&data), 9_999, &mut out),
            Err(BodyError::DecompressedTooLarge { limit: 9_999 })
        ));
        assert!(out.len() <= 10_000, "never decodes far past the limit");
        out.clear();
        assert!(matches!(
            decompress(ContentEncoding::Zstd, b"not zstd", 100, &mut out),
            Err(BodyError::BadEncoding { .. })
        ));
    }

    #[test]
    fn parses_encoding_headers() {
        assert_eq!(
            ContentEncoding::parse(None),
            Some(ContentEncoding::Identity)
        );
        assert_eq!(
            ContentEncoding::parse(Some(" GZIP ")),
            Some(ContentEncoding::Gzip)
        );
        assert_eq!(
            ContentEncoding::parse(Some("zstd")),
            Some(ContentEncoding::Zstd)
        );
        assert_eq!(ContentEncoding::parse(Some("br")), None);
    }
}
