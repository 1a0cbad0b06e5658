//! A published file as the server keeps it between publishes: gzip-compressed (a site's
//! pages are much of a publisher's memory as plain bytes, and shrink about tenfold),
//! with the ETag of its plain bytes. A client that accepts gzip gets the compressed bytes as
//! they are; any other gets them inflated when it asks.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};

use axum::http::HeaderMap;
use axum::http::header::ACCEPT_ENCODING;
use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

/// Files smaller than this are kept plain: gzip's header and trailer would eat the gain.
const COMPRESS_FROM: usize = 1024;

/// A file's bytes as kept, and what a response needs to know of them.
#[derive(Debug, Clone)]
pub struct KeptFile {
    /// The bytes, gzip-compressed when `gzipped`.
    bytes: Bytes,
    /// Whether `bytes` are gzip.
    gzipped: bool,
    /// The length of the plain bytes.
    plain_len: usize,
    /// The hash of the plain bytes, for the ETag.
    hash: u64,
}

/// The bytes to send: the file's, and whether they are gzip.
#[derive(Debug)]
pub struct Body {
    /// The bytes.
    pub bytes: Bytes,
    /// Whether they are gzip (`Content-Encoding: gzip`).
    pub gzipped: bool,
    /// The ETag of this representation.
    pub etag: String,
}

impl KeptFile {
    /// `plain` kept compressed (plain when small).
    pub fn compressed(plain: Vec<u8>) -> KeptFile {
        if plain.len() < COMPRESS_FROM {
            return KeptFile::plain(plain);
        }
        let hash = hash(&plain);
        // Fast compression: a publish compresses every page each time; level 1 keeps most
        // of the gain at a third of the default level's time.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        let written = encoder.write_all(&plain).and_then(|()| encoder.finish());
        match written {
            Ok(gzip) => KeptFile {
                bytes: shrunk(gzip),
                gzipped: true,
                plain_len: plain.len(),
                hash,
            },
            // Writing to memory does not fail; were it to, the file is kept as it is.
            Err(_) => KeptFile::plain(plain),
        }
    }

    /// `plain` kept as it is (without the spare room its growth left).
    pub fn plain(plain: Vec<u8>) -> KeptFile {
        KeptFile {
            hash: hash(&plain),
            plain_len: plain.len(),
            bytes: shrunk(plain),
            gzipped: false,
        }
    }

    /// The file for a client that does (`gzip`) or does not accept gzip.
    pub fn body(&self, gzip: bool) -> std::io::Result<Body> {
        if self.gzipped && !gzip {
            let mut plain = Vec::with_capacity(self.plain_len);
            GzDecoder::new(&self.bytes[..]).read_to_end(&mut plain)?;
            return Ok(Body {
                bytes: Bytes::from(plain),
                gzipped: false,
                etag: self.etag(false),
            });
        }
        Ok(Body {
            bytes: self.bytes.clone(),
            gzipped: self.gzipped,
            etag: self.etag(self.gzipped),
        })
    }

    /// A strong ETag per representation: the gzip bytes are not the plain ones.
    fn etag(&self, gzipped: bool) -> String {
        let suffix = if gzipped { "-gzip" } else { "" };
        format!("\"{:016x}{suffix}\"", self.hash)
    }
}

/// `body` as `Bytes` to keep, without the spare room its growth left (up to as much again
/// as its bytes: a page or feed is rendered into a buffer that doubles as it fills).
fn shrunk(body: Vec<u8>) -> Bytes {
    Bytes::from(body.into_boxed_slice())
}

fn hash(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Whether the request's `Accept-Encoding` accepts gzip: listed with a weight above zero,
/// or, when not listed, `*` with one (RFC 9110: a listed coding's own weight wins).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let (mut gzip, mut any) = (None, None);
    let codings = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','));
    for coding in codings {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let refused = parts.any(|param| {
            param
                .strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q == 0.0)
        });
        if name.eq_ignore_ascii_case("gzip") {
            gzip = Some(!refused);
        } else if name == "*" {
            any = Some(!refused);
        }
    }
    gzip.or(any).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accepting(value: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        accepts_gzip(&headers)
    }

    #[test]
    fn a_large_file_is_kept_compressed_and_given_back_whole_either_way() {
        let page: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("<tr>{i}</tr>").into_bytes())
            .collect();
        let kept = KeptFile::compressed(page.clone());
        let gzip = kept.body(true).unwrap();
        assert!(gzip.gzipped);
        assert!(
            gzip.bytes.len() * 4 < page.len(),
            "{} bytes",
            gzip.bytes.len()
        );
        let mut inflated = Vec::new();
        GzDecoder::new(&gzip.bytes[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, page);
        let plain = kept.body(false).unwrap();
        assert!(!plain.gzipped);
        assert_eq!(plain.bytes, page);
        assert_ne!(plain.etag, gzip.etag, "one ETag per representation");
    }

    #[test]
    fn a_small_file_is_kept_plain() {
        let kept = KeptFile::compressed(b"<svg/>".to_vec());
        let body = kept.body(true).unwrap();
        assert!(!body.gzipped);
        assert_eq!(&body.bytes[..], b"<svg/>");
    }

    #[test]
    fn gzip_is_accepted_when_listed_with_a_weight_above_zero() {
        assert!(accepting("gzip, deflate, br"));
        assert!(accepting("br;q=1.0, GZIP;q=0.5"));
        assert!(accepting("*"));
        assert!(!accepting("gzip;q=0"));
        assert!(!accepting("br, deflate"));
        assert!(!accepting("identity"));
        assert!(
            !accepting("gzip;q=0, *"),
            "a listed coding's own weight wins over *"
        );
        assert!(!accepting("*;q=0"));
    }
}
