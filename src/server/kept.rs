//! A published file as the server keeps it between publishes: gzip-compressed (a site's
//! pages are much of a publisher's memory as plain bytes, and shrink about tenfold),
//! with the ETag of its plain bytes. A client that accepts gzip gets the compressed bytes as
//! they are; any other gets them inflated when it asks. A body may be written straight into
//! its compressed form ([`KeptWriter`]), so its plain bytes are never held whole (`/metrics`
//! of 5,000 targets is 35 MB plain).

use std::hash::{DefaultHasher, Hasher};
use std::io::{Read, Write};

use axum::http::HeaderMap;
use axum::http::header::ACCEPT_ENCODING;
use bytes::{Buf, Bytes};
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

/// What to send of a file to one client.
#[derive(Debug)]
pub struct Body {
    /// The bytes as kept.
    bytes: Bytes,
    /// Whether `bytes` are gzip the client does not take: inflated as they are sent.
    inflate: bool,
    /// Whether the client gets gzip (`Content-Encoding: gzip`).
    pub gzipped: bool,
    /// The ETag of this representation.
    pub etag: String,
    /// How many bytes the client gets (`Content-Length`).
    pub len: usize,
}

/// How much is inflated at a time for a client that does not take gzip: the plain file is
/// never held whole (`/feed.json` of 5,000 targets is 13 MB).
const INFLATE_CHUNK: usize = 64 * 1024;

impl Body {
    /// The response body: the bytes as kept, or inflated a chunk at a time as the client
    /// reads (an error, which cannot come of bytes sonde compressed, ends the response).
    pub fn into_http(self) -> axum::body::Body {
        if !self.inflate {
            return axum::body::Body::from(self.bytes);
        }
        let mut plain = GzDecoder::new(self.bytes.reader());
        let chunks = std::iter::from_fn(move || {
            let mut chunk = Vec::with_capacity(INFLATE_CHUNK);
            match (&mut plain)
                .take(INFLATE_CHUNK as u64)
                .read_to_end(&mut chunk)
            {
                Ok(0) => None,
                Ok(_) => Some(Ok(Bytes::from(chunk))),
                Err(err) => Some(Err(err)),
            }
        });
        axum::body::Body::from_stream(futures_util::stream::iter(chunks))
    }
}

impl KeptFile {
    /// `plain` kept as it is (without the spare room its growth left).
    pub fn plain(plain: Vec<u8>) -> KeptFile {
        KeptFile {
            hash: ContentHash::of(&plain),
            plain_len: plain.len(),
            bytes: shrunk(plain),
            gzipped: false,
        }
    }

    /// The file for a client that does (`gzip`) or does not accept gzip.
    pub fn body(&self, gzip: bool) -> Body {
        let gzipped = self.gzipped && gzip;
        let inflate = self.gzipped && !gzip;
        Body {
            len: if inflate {
                self.plain_len
            } else {
                self.bytes.len()
            },
            bytes: self.bytes.clone(),
            inflate,
            gzipped,
            etag: self.etag(gzipped),
        }
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

/// The hash of a file's plain bytes, fed as they come: the same whatever pieces they come
/// in.
#[derive(Default)]
struct ContentHash {
    hasher: DefaultHasher,
    len: usize,
}

impl ContentHash {
    /// The hash of `bytes` whole.
    fn of(bytes: &[u8]) -> u64 {
        let mut hash = ContentHash::default();
        hash.add(bytes);
        hash.finish()
    }

    fn add(&mut self, bytes: &[u8]) {
        self.hasher.write(bytes);
        self.len += bytes.len();
    }

    fn finish(mut self) -> u64 {
        self.hasher.write_usize(self.len);
        self.hasher.finish()
    }
}

/// A file being written into the form it is kept in: gathered plain a block at a time and
/// compressed block by block (a serializer writes a few bytes at a time, and each call into
/// the compressor costs more than the copy), so only a block is ever held plain; a file
/// smaller than [`COMPRESS_FROM`] is kept plain.
pub struct KeptWriter {
    hash: ContentHash,
    /// The bytes written since the last block was compressed.
    block: Vec<u8>,
    /// Once a block was compressed.
    encoder: Option<GzEncoder<Vec<u8>>>,
}

/// How much is gathered before it is compressed.
const BLOCK: usize = 64 * 1024;

impl KeptWriter {
    /// An empty file.
    pub fn new() -> KeptWriter {
        KeptWriter {
            hash: ContentHash::default(),
            block: Vec::new(),
            encoder: None,
        }
    }

    /// Appends `bytes` to the file.
    pub fn add(&mut self, bytes: &[u8]) {
        if self.block.len() + bytes.len() > BLOCK {
            let block = std::mem::take(&mut self.block);
            self.compress(&block);
            self.block = block;
            self.block.clear();
            if bytes.len() >= BLOCK {
                self.compress(bytes);
                return;
            }
        }
        self.block.extend_from_slice(bytes);
    }

    /// Hashes and compresses `bytes`, the next of the file.
    fn compress(&mut self, bytes: &[u8]) {
        self.hash.add(bytes);
        self.encoder
            .get_or_insert_with(fast_encoder)
            .write_all(bytes)
            .expect("writing to memory does not fail");
    }

    /// The file as kept.
    pub fn finish(self) -> KeptFile {
        let KeptWriter {
            mut hash,
            block,
            encoder,
        } = self;
        if encoder.is_none() && block.len() < COMPRESS_FROM {
            return KeptFile::plain(block);
        }
        let mut encoder = encoder.unwrap_or_else(fast_encoder);
        hash.add(&block);
        let gzip = encoder
            .write_all(&block)
            .and_then(|()| encoder.finish())
            .expect("writing to memory does not fail");
        KeptFile {
            bytes: shrunk(gzip),
            gzipped: true,
            plain_len: hash.len,
            hash: hash.finish(),
        }
    }
}

/// A compressor into memory at level 1: a publish compresses every page each time, and level
/// 1 keeps most of the gain at a third of the default level's time.
fn fast_encoder() -> GzEncoder<Vec<u8>> {
    GzEncoder::new(Vec::new(), Compression::fast())
}

impl Default for KeptWriter {
    fn default() -> Self {
        KeptWriter::new()
    }
}

impl std::fmt::Write for KeptWriter {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.add(text.as_bytes());
        Ok(())
    }
}

impl Write for KeptWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.add(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

    /// `plain` as kept when written whole.
    fn kept(plain: &[u8]) -> KeptFile {
        let mut writer = KeptWriter::new();
        writer.add(plain);
        writer.finish()
    }

    /// What a client gets of `body`.
    fn sent(body: Body) -> Vec<u8> {
        let len = body.len;
        let bytes =
            futures_executor::block_on(axum::body::to_bytes(body.into_http(), usize::MAX)).unwrap();
        assert_eq!(bytes.len(), len, "the length said");
        bytes.to_vec()
    }

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
        let kept = kept(&page);
        let gzip = kept.body(true);
        assert!(gzip.gzipped);
        assert!(
            gzip.bytes.len() * 4 < page.len(),
            "{} bytes",
            gzip.bytes.len()
        );
        let compressed = gzip.bytes.to_vec();
        let mut inflated = Vec::new();
        GzDecoder::new(&compressed[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, page);
        let plain = kept.body(false);
        assert!(!plain.gzipped);
        assert_ne!(plain.etag, gzip.etag, "one ETag per representation");
        assert_eq!(sent(plain), page, "inflated as it is sent");
        assert_eq!(sent(gzip), compressed, "the gzip as kept");
    }

    #[test]
    fn a_file_written_in_pieces_is_the_file_given_whole() {
        // Several blocks, written in pieces smaller than, across and larger than one.
        let page: Vec<u8> = (0..40_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        assert!(page.len() > 4 * BLOCK);
        let whole = kept(&page);
        for piece in [1, 7, 1000, 1024, 4096, BLOCK - 1, BLOCK + 1, 200_000] {
            let mut writer = KeptWriter::new();
            for chunk in page.chunks(piece) {
                writer.add(chunk);
            }
            let kept = writer.finish();
            let (a, b) = (kept.body(true), whole.body(true));
            assert_eq!(a.etag, b.etag, "pieces of {piece}");
            assert!(a.gzipped);
            assert_eq!(sent(kept.body(false)), page);
        }
        let mut small = KeptWriter::new();
        std::fmt::Write::write_str(&mut small, "<svg/>").unwrap();
        let small = small.finish().body(true);
        assert!(!small.gzipped);
        assert_eq!(&small.bytes[..], b"<svg/>");
        assert_eq!(small.etag, KeptFile::plain(b"<svg/>".to_vec()).etag(false));
        assert_ne!(
            small.etag,
            KeptFile::plain(b"<svg>".to_vec()).etag(false),
            "the hash holds the bytes"
        );
    }

    #[test]
    fn a_small_file_is_kept_plain() {
        let kept = kept(b"<svg/>");
        let body = kept.body(true);
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
