//! UTF-16 text files (Excel's "Unicode Text" is UTF-16 LE with a BOM, tab
//! delimited): recognised by the byte-order mark and transcoded to UTF-8, so
//! every reader after this one sees UTF-8 only. A file without a UTF-16 BOM is
//! returned untouched. It must not guess UTF-16 without a BOM.

use std::io::Read;

use encoding_rs::{CoderResult, Encoding, UTF_16BE, UTF_16LE};

/// Bytes read (and decoded) per step when transcoding a file.
const CHUNK: usize = 64 * 1024;

/// The UTF-16 variant that `head` starts with the BOM of, if any.
pub fn bom_encoding(head: &[u8]) -> Option<&'static Encoding> {
    if head.starts_with(&[0xFF, 0xFE]) {
        Some(UTF_16LE)
    } else if head.starts_with(&[0xFE, 0xFF]) {
        Some(UTF_16BE)
    } else {
        None
    }
}

/// Decodes `input` (the rest of the stream, BOM included) into `out` in
/// `CHUNK`-sized steps; lone surrogates become U+FFFD.
fn transcode<R: Read>(
    enc: &'static Encoding,
    mut input: R,
    head: &[u8],
    out: &mut String,
) -> std::io::Result<()> {
    let mut dec = enc.new_decoder_with_bom_removal();
    let mut buf = vec![0u8; CHUNK];
    let mut pending: Vec<u8> = head.to_vec();
    loop {
        let n = if pending.is_empty() {
            input.read(&mut buf)?
        } else {
            let n = pending.len();
            buf[..n].copy_from_slice(&pending);
            pending.clear();
            n
        };
        let last = n == 0;
        let mut at = 0;
        loop {
            let need = dec.max_utf8_buffer_length(n - at).unwrap_or(CHUNK * 3 + 16);
            out.reserve(need);
            let (res, read, _) = dec.decode_to_string(&buf[at..n], out, last);
            at += read;
            if let CoderResult::InputEmpty = res {
                break;
            }
        }
        if last {
            return Ok(());
        }
    }
}

/// A file's bytes; a UTF-16 file (LE or BE, by its BOM) comes back as UTF-8,
/// decoded while it is read, so memory holds the UTF-8 text and one chunk,
/// never the UTF-16 bytes as a whole. The second value names the encoding
/// that was decoded ("utf-16le" / "utf-16be"), if any.
pub fn read_file(path: &str) -> std::io::Result<(Vec<u8>, Option<&'static str>)> {
    let mut f = std::fs::File::open(path)?;
    let mut head = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = f.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    match bom_encoding(&head[..got]) {
        Some(enc) => {
            let size = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
            let mut out = String::with_capacity(size / 2 + 16);
            transcode(enc, &mut f, &head[..got], &mut out)?;
            Ok((out.into_bytes(), Some(name_of(enc))))
        }
        None => {
            let mut data = head[..got].to_vec();
            f.read_to_end(&mut data)?;
            Ok((data, None))
        }
    }
}

/// Bytes already in memory: a UTF-16 buffer (by its BOM) becomes UTF-8.
pub fn to_utf8(data: Vec<u8>) -> Vec<u8> {
    match bom_encoding(&data) {
        Some(enc) => {
            let mut out = String::with_capacity(data.len() / 2 + 16);
            // Reading from a slice cannot fail.
            let _ = transcode(enc, &data[..], &[], &mut out);
            out.into_bytes()
        }
        None => data,
    }
}

fn name_of(enc: &'static Encoding) -> &'static str {
    if enc == UTF_16BE {
        "utf-16be"
    } else {
        "utf-16le"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str, be: bool) -> Vec<u8> {
        let mut out = if be {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for u in text.encode_utf16() {
            let b = if be { u.to_be_bytes() } else { u.to_le_bytes() };
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn decodes_both_byte_orders_and_drops_the_bom() {
        let text = "Client ID\tFirst Name\nK1\tZoë 😀\n";
        assert_eq!(to_utf8(utf16(text, false)), text.as_bytes());
        assert_eq!(to_utf8(utf16(text, true)), text.as_bytes());
    }

    #[test]
    fn leaves_other_bytes_alone() {
        let data = b"\xEF\xBB\xBFid,name\n".to_vec();
        assert_eq!(to_utf8(data.clone()), data);
    }

    #[test]
    fn a_file_larger_than_a_chunk_is_decoded_whole() {
        let row = "K1\tJosé Müller\té\n";
        let text: String = std::iter::repeat_n(row, 20_000).collect();
        let dir = std::env::temp_dir().join(format!("utf16-{}", std::process::id()));
        std::fs::write(&dir, utf16(&text, false)).unwrap();
        let (data, enc) = read_file(dir.to_str().unwrap()).unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(enc, Some("utf-16le"));
        assert_eq!(data, text.as_bytes());
    }
}
