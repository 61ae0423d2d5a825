//! CSV exports: UTF-8 (with or without BOM), UTF-16 with a BOM (decoded by
//! `utf16`) or Windows-1252, any delimiter
//! the first lines sniff to, ragged rows quarantined with their line.

use std::io::{Cursor, Read, Seek, SeekFrom};

use super::{check_size, Item, Limits, Rejected, RowId, SourceError};
use crate::mapping::{build_record, mapped_columns, Mapping, Target};
use crate::model::Record;
use crate::normalize::clean;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Windows1252,
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Windows1252 => "windows-1252",
        })
    }
}

/// A chunk of rows copied into one buffer (no allocation per row).
#[derive(Default)]
struct RawChunk {
    buf: Vec<u8>,
    /// Byte range of every field of every row.
    fields: Vec<(usize, usize)>,
    /// Per row: line, first field index, field count.
    rows: Vec<(u64, usize, usize)>,
}

/// One row of a `RawChunk`.
#[derive(Clone, Copy)]
struct RowRef<'a> {
    chunk: &'a RawChunk,
    line: u64,
    first: usize,
    n: usize,
}

impl<'a> RowRef<'a> {
    fn len(&self) -> usize {
        self.n
    }

    fn get(&self, i: usize) -> Option<&'a [u8]> {
        (i < self.n).then(|| {
            let (a, b) = self.chunk.fields[self.first + i];
            &self.chunk.buf[a..b]
        })
    }

    fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        (0..self.n).filter_map(move |i| self.get(i))
    }
}

/// Bytes of a streamed file kept behind the parser (see `Input`): enough for
/// the start of any record the parser can still be on (its buffer is 1 MiB).
const WINDOW: usize = 8 << 20;

/// What the CSV parser reads from: the text in memory, or the file itself
/// with a window of the bytes last handed to the parser, so a record's line
/// can be told from the line ends before it (`CsvReader::line_of`).
pub enum Input {
    Memory(Cursor<Vec<u8>>),
    Stream {
        src: Box<dyn Read + Send + Sync>,
        win: Vec<u8>,
        /// Offset of `win[0]` in the text.
        win_start: u64,
    },
}

impl Input {
    fn stream(src: Box<dyn Read + Send + Sync>) -> Self {
        Input::Stream {
            src,
            win: Vec::with_capacity(2 * WINDOW),
            win_start: 0,
        }
    }

    /// The text from `offset` to what was read (empty if it left the window).
    fn after(&self, offset: u64) -> &[u8] {
        let (data, start) = match self {
            Input::Memory(c) => (c.get_ref().as_slice(), 0),
            Input::Stream { win, win_start, .. } => (win.as_slice(), *win_start),
        };
        match offset.checked_sub(start) {
            Some(k) => &data[(k as usize).min(data.len())..],
            None => &[],
        }
    }
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::Memory(c) => c.read(buf),
            Input::Stream {
                src,
                win,
                win_start,
            } => {
                let n = src.read(buf)?;
                win.extend_from_slice(&buf[..n]);
                if win.len() > 2 * WINDOW {
                    let cut = win.len() - WINDOW;
                    win.drain(..cut);
                    *win_start += cut as u64;
                }
                Ok(n)
            }
        }
    }
}

pub struct CsvReader {
    rdr: csv::Reader<Input>,
    /// Bytes of the text to parse (after any BOM).
    total: u64,
    /// Seed of the raw-row hashes: the header, its mapping and the encoding.
    raw_seed: u64,
    /// Column of the external id (the first mapped to it).
    id_col: Option<usize>,
    pub header: Vec<String>,
    targets: Vec<Target>,
    pub encoding: Encoding,
    pub delimiter: u8,
    limits: Limits,
    done: bool,
    /// No id column: the line number is the id (see `open_with`).
    pub line_ids: bool,
    /// An incremental batch: collect the unmapped columns sent empty.
    partial: bool,
}

/// UTF-8 when the bytes are valid UTF-8 (or hold any valid multi-byte
/// sequence: then invalid rows are quarantined); Windows-1252 when they are
/// not UTF-8 and contain no multi-byte UTF-8 sequence at all.
pub fn detect_encoding(data: &[u8]) -> Encoding {
    // Reading a slice cannot fail.
    detect_encoding_stream(&mut &data[..]).unwrap_or(Encoding::Utf8)
}

/// `detect_encoding` of a stream, read a chunk at a time (a file is never
/// held whole; a sequence cut by a chunk's end is carried to the next).
pub fn detect_encoding_stream<R: Read>(r: &mut R) -> std::io::Result<Encoding> {
    let mut buf = vec![0u8; 1 << 20];
    let mut carry = 0usize; // bytes of a sequence cut by the chunk's end, moved to the front
    let mut all_valid = true;
    let mut multibyte = false;
    loop {
        let n = r.read(&mut buf[carry..])?;
        let eof = n == 0;
        let len = carry + n;
        let mut at = 0usize;
        let mut cut: Option<usize> = None;
        while at < len {
            match std::str::from_utf8(&buf[at..len]) {
                Ok(s) => {
                    multibyte |= !s.is_ascii();
                    at = len;
                }
                Err(e) => {
                    multibyte |= !buf[at..at + e.valid_up_to()].is_ascii();
                    match e.error_len() {
                        Some(k) => {
                            all_valid = false;
                            at += e.valid_up_to() + k;
                        }
                        None if eof => {
                            all_valid = false; // cut short by the end of the file
                            at = len;
                        }
                        None => {
                            cut = Some(at + e.valid_up_to());
                            at = len;
                        }
                    }
                }
            }
        }
        carry = 0;
        if let Some(start) = cut {
            buf.copy_within(start..len, 0);
            carry = len - start;
        }
        if eof {
            break;
        }
    }
    Ok(if all_valid || multibyte {
        Encoding::Utf8
    } else {
        Encoding::Windows1252
    })
}

/// The encoding forced by the caller, else the one `detect` finds.
fn choose_encoding(
    forced: Option<&str>,
    detect: impl FnOnce() -> std::io::Result<Encoding>,
) -> Result<Encoding, SourceError> {
    match forced.map(|e| e.to_ascii_lowercase()) {
        None => detect().map_err(|e| SourceError::new(0, 0, format!("cannot read: {e}"))),
        Some(e) if e == "utf-8" || e == "utf8" => Ok(Encoding::Utf8),
        Some(e) if e == "windows-1252" || e == "cp1252" || e == "latin-1" => {
            Ok(Encoding::Windows1252)
        }
        Some(e) => Err(SourceError::new(
            0,
            0,
            format!("unknown encoding {e:?} (expected utf-8 or windows-1252)"),
        )),
    }
}

/// Picks the delimiter that splits the first lines most consistently.
pub fn sniff_delimiter(data: &[u8]) -> u8 {
    let sample = &data[..data.len().min(64 * 1024)];
    let lines: Vec<&[u8]> = sample.split(|b| *b == b'\n').take(20).collect();
    let mut best = (b',', 0usize, 0usize);
    for cand in [b',', b';', b'\t', b'|'] {
        let counts: Vec<usize> = lines
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut in_q = false;
                let mut n = 0;
                for &b in l.iter() {
                    if b == b'"' {
                        in_q = !in_q;
                    } else if b == cand && !in_q {
                        n += 1;
                    }
                }
                n
            })
            .collect();
        let Some(&first) = counts.first() else {
            continue;
        };
        if first == 0 {
            continue;
        }
        let consistent = counts.iter().filter(|&&c| c == first).count();
        if (consistent, first) > (best.1, best.2) {
            best = (cand, consistent, first);
        }
    }
    best.0
}

/// The line a record starts on, from the record's position in `data`.
/// csv_core ends a record at the `\r` of a CRLF and consumes the `\n` (and
/// any blank lines) only when the next record starts, so a position can still
/// point at line ends before the record: count them.
pub fn line_at(data: &[u8], pos: &csv::Position) -> u64 {
    line_from(&data[(pos.byte() as usize).min(data.len())..], pos)
}

/// `line_at` given the text from the record's position on.
fn line_from(rest: &[u8], pos: &csv::Position) -> u64 {
    let skipped = rest
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .filter(|&&b| b == b'\n')
        .count() as u64;
    pos.line() + skipped
}

pub fn decode(bytes: &[u8], enc: Encoding) -> Result<std::borrow::Cow<'_, str>, usize> {
    match enc {
        Encoding::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.into()),
            Err(e) => Err(e.valid_up_to()),
        },
        Encoding::Windows1252 => {
            let (s, _) = encoding_rs::WINDOWS_1252.decode_without_bom_handling(bytes);
            Ok(s)
        }
    }
}

impl CsvReader {
    pub fn open(
        data: Vec<u8>,
        mapping: Mapping,
        limits: Limits,
        encoding: Option<&str>,
        delimiter: Option<u8>,
    ) -> Result<Self, SourceError> {
        Self::open_with(data, mapping, limits, encoding, delimiter, false)
    }

    /// `open`; with `line_ids`, a file where no column maps to the external
    /// id is read with each row's line number as its id (one-off matching
    /// only: a sync always needs the source's own ids).
    pub fn open_with(
        data: Vec<u8>,
        mapping: Mapping,
        limits: Limits,
        encoding: Option<&str>,
        delimiter: Option<u8>,
        line_ids: bool,
    ) -> Result<Self, SourceError> {
        // A UTF-16 BOM is authoritative: the text is decoded, whatever was forced.
        let utf16 = super::utf16::bom_encoding(&data).is_some();
        let encoding = if utf16 { Some("utf-8") } else { encoding };
        let mut data = super::utf16::to_utf8(data);
        if data.starts_with(b"\xEF\xBB\xBF") {
            data.drain(..3);
        }
        let encoding = choose_encoding(encoding, || Ok(detect_encoding(&data)))?;
        let delimiter = delimiter.unwrap_or_else(|| sniff_delimiter(&data));
        let total = data.len() as u64;
        Self::parse(
            Input::Memory(Cursor::new(data)),
            total,
            mapping,
            limits,
            encoding,
            delimiter,
            line_ids,
        )
    }

    /// `open` of a UTF-8 or Windows-1252 file (no UTF-16 BOM: the caller
    /// decodes those whole), streamed: the encoding is found by one pass over
    /// the file a chunk at a time, the delimiter from its first 64 KiB, and
    /// the parser reads the file itself, so memory never holds the whole text
    /// (a 1,000,000-row export is 141 MB).
    pub fn open_file(
        file: std::fs::File,
        mapping: Mapping,
        limits: Limits,
        encoding: Option<&str>,
        delimiter: Option<u8>,
    ) -> Result<Self, SourceError> {
        Self::open_file_with(file, mapping, limits, encoding, delimiter, false)
    }

    /// `open_file`; `line_ids` as for `open_with` (one-off matching only).
    pub fn open_file_with(
        mut file: std::fs::File,
        mapping: Mapping,
        limits: Limits,
        encoding: Option<&str>,
        delimiter: Option<u8>,
        line_ids: bool,
    ) -> Result<Self, SourceError> {
        let io = |e: std::io::Error| SourceError::new(0, 0, format!("cannot read: {e}"));
        let size = file.metadata().map_err(io)?.len();
        let mut head = Vec::with_capacity(64 * 1024);
        (&mut file)
            .take(64 * 1024)
            .read_to_end(&mut head)
            .map_err(io)?;
        let bom: u64 = if head.starts_with(b"\xEF\xBB\xBF") {
            3
        } else {
            0
        };
        let encoding = choose_encoding(encoding, || {
            file.seek(SeekFrom::Start(bom))?;
            detect_encoding_stream(&mut file)
        })?;
        let delimiter = delimiter.unwrap_or_else(|| sniff_delimiter(&head[bom as usize..]));
        file.seek(SeekFrom::Start(bom)).map_err(io)?;
        Self::parse(
            Input::stream(Box::new(file)),
            size.saturating_sub(bom),
            mapping,
            limits,
            encoding,
            delimiter,
            line_ids,
        )
    }

    fn parse(
        input: Input,
        total: u64,
        mapping: Mapping,
        limits: Limits,
        encoding: Encoding,
        delimiter: u8,
        line_ids: bool,
    ) -> Result<Self, SourceError> {
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(false)
            .buffer_capacity(1 << 20)
            .from_reader(input);
        let mut header_rec = csv::ByteRecord::new();
        let header = match rdr.read_byte_record(&mut header_rec) {
            Ok(true) => header_rec
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    decode(h, encoding)
                        .map(|s| s.trim().to_string())
                        .map_err(|_| SourceError::new(1, i as u64 + 1, "header is not valid UTF-8"))
                })
                .collect::<Result<Vec<_>, _>>()?,
            Ok(false) => Vec::new(),
            Err(e) => return Err(SourceError::new(1, 0, format!("cannot read header: {e}"))),
        };
        let targets = mapping.resolve_all(&header);
        if !header.is_empty() && !targets.contains(&Target::ExternalId) && !line_ids {
            if header.iter().any(|h| h.contains('\0')) {
                // "C\0l\0i\0e\0n\0t\0": UTF-16 read as bytes.
                return Err(SourceError::new(
                    1,
                    0,
                    "line 1 has NUL bytes between its characters: the file looks like UTF-16 \
                     without a byte-order mark; save it as UTF-8, or as UTF-16 with one \
                     (Excel's \"Unicode Text\" does)",
                ));
            }
            // Structure only, never the cells: in a file without a header line
            // the "headings" are the first person's name, e-mail and phone.
            return Err(SourceError::new(
                1,
                0,
                format!(
                    "no column maps to external_id (line 1 has {} column(s), none with a \
                     heading known as the external id, such as \"Client ID\"); if the file \
                     has no header line, add one, else map a column to external_id in the \
                     source's mapping",
                    header.len()
                ),
            ));
        }
        let done = header.is_empty();
        let mut layout = format!("csv1|{encoding}|");
        for (h, t) in header.iter().zip(targets.iter()) {
            layout.push_str(&format!("{h:?}={t:?}|"));
        }
        let raw_seed = xxhash_rust::xxh3::xxh3_64(layout.as_bytes());
        let id_col = targets.iter().position(|t| *t == Target::ExternalId);
        let partial = mapping.partial;
        Ok(CsvReader {
            rdr,
            total,
            raw_seed,
            id_col,
            header,
            targets,
            encoding,
            delimiter,
            limits,
            done,
            line_ids: line_ids && id_col.is_none(),
            partial,
        })
    }

    /// (field or relation key, heading) of what this file's header carries.
    pub fn mapped_columns(&self) -> Vec<(String, String)> {
        mapped_columns(&self.header, &self.targets)
    }

    /// Which record a row that cannot be taken was: its id cell, if that can
    /// be read (`guess`: the row has the wrong number of fields). A ragged row
    /// with a field across lines may have swallowed the rows after it (a
    /// quote never closed): nothing tells which records those were.
    fn row_id(&self, rec: &RowRef<'_>, guess: bool) -> RowId {
        if guess && rec.iter().any(|f| f.contains(&b'\n')) {
            return RowId::Unreadable;
        }
        let Some(cell) = self.id_col.and_then(|i| rec.get(i)) else {
            return RowId::Unreadable;
        };
        if cell.len() > self.limits.max_field_bytes {
            return RowId::Unreadable;
        }
        let id = match decode(cell, self.encoding) {
            Ok(text) => RowId::of_cell(Some(&text)),
            Err(_) => RowId::Unreadable,
        };
        match id {
            RowId::Read(id) if guess => RowId::Guess(id),
            other => other,
        }
    }

    /// The row as text for quarantine, cut at `max_raw_bytes`: only that much
    /// of the fields is ever copied (a 50 MB field is not, twice over).
    fn raw_text(&self, rec: &RowRef<'_>) -> String {
        let max = self.limits.max_raw_bytes;
        let mut total = 0usize;
        let mut out = String::new();
        for (i, f) in rec.iter().enumerate() {
            if i > 0 {
                total += 1;
                if out.len() <= max {
                    out.push(self.delimiter as char);
                }
            }
            total += f.len();
            if out.len() <= max {
                let take = f.len().min(max + 4 - out.len());
                out.push_str(&String::from_utf8_lossy(&f[..take]));
            }
        }
        if total <= max {
            return out;
        }
        let mut end = max.min(out.len());
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… [{} bytes in all]", &out[..end], total)
    }

    /// Raw hash of a well-formed row and its cleaned external id.
    fn raw_key(&self, rec: &RowRef<'_>) -> Option<(u64, String)> {
        if rec.len() != self.header.len() {
            return None;
        }
        let id = rec.get(self.id_col?)?;
        let id = clean(&decode(id, self.encoding).ok()?, false);
        if id.is_empty() {
            return None;
        }
        let mut h = xxhash_rust::xxh3::Xxh3::with_seed(self.raw_seed);
        for f in rec.iter() {
            h.update(&(f.len() as u32).to_le_bytes());
            h.update(f);
        }
        Some((h.digest(), id))
    }

    /// Bytes split into rows so far (all of them once the file has ended).
    pub fn bytes_read(&self) -> u64 {
        if self.done {
            self.total_bytes()
        } else {
            self.rdr.position().byte().min(self.total_bytes())
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Splitting rows is sequential (csv_core); the rest runs in parallel:
    /// rows whose raw hash says "unchanged" are not built at all, the others
    /// are decoded, cleaned and mapped into records.
    pub fn next_chunk(
        &mut self,
        n: usize,
        differ: Option<&std::sync::Mutex<crate::diff::Differ>>,
    ) -> Result<Vec<Item>, SourceError> {
        use rayon::prelude::*;
        if self.done {
            return Ok(Vec::new());
        }
        let mut chunk = RawChunk::default();
        let mut errors: Vec<(usize, Rejected)> = Vec::new();
        let mut rec = csv::ByteRecord::new();
        while chunk.rows.len() + errors.len() < n {
            match self.rdr.read_byte_record(&mut rec) {
                Ok(false) => {
                    self.done = true;
                    break;
                }
                Ok(true) => {
                    let line = rec.position().map(|p| self.line_of(p)).unwrap_or(0);
                    let first = chunk.fields.len();
                    for f in rec.iter() {
                        let start = chunk.buf.len();
                        chunk.buf.extend_from_slice(f);
                        chunk.fields.push((start, chunk.buf.len()));
                    }
                    chunk.rows.push((line, first, rec.len()));
                }
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    errors.push((
                        chunk.rows.len(),
                        Rejected {
                            line,
                            reason: format!("unreadable CSV row: {e}"),
                            raw: String::new(),
                            id: RowId::Unreadable,
                        },
                    ));
                }
            }
        }
        let this = &*self;
        let rows: Vec<RowRef<'_>> = chunk
            .rows
            .iter()
            .map(|&(line, first, n)| RowRef {
                chunk: &chunk,
                line,
                first,
                n,
            })
            .collect();
        let keys: Vec<Option<(u64, String)>> = rows
            .par_iter()
            .with_min_len(512)
            .map(|r| this.raw_key(r))
            .collect();
        let fast: Vec<bool> = match differ {
            Some(d) => {
                let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
                keys.iter()
                    .zip(rows.iter())
                    .map(|(k, r)| {
                        k.as_ref()
                            .is_some_and(|(h, id)| d.take_raw_unchanged(id, *h, r.line))
                    })
                    .collect()
            }
            None => vec![false; keys.len()],
        };
        let mut items: Vec<Item> = rows
            .par_iter()
            .zip(keys.into_par_iter())
            .zip(fast.into_par_iter())
            .with_min_len(512)
            .map(|((rec, key), fast)| {
                if fast {
                    // Already marked seen by the differ: nothing more to do.
                    return Ok(Record {
                        line: rec.line,
                        raw_hash: key.map(|k| k.0).unwrap_or(0),
                        built: false,
                        ..Default::default()
                    });
                }
                let mut built = this.convert(rec)?;
                built.raw_hash = key.map(|k| k.0).unwrap_or(0);
                Ok(built)
            })
            .collect();
        for (at, e) in errors.into_iter().rev() {
            items.insert(at, Err(e));
        }
        Ok(items)
    }

    /// The line a record starts on. csv_core ends a record at the `\r` of a
    /// CRLF and consumes the `\n` (and any blank lines) only when the next
    /// record starts, so a position can still point at line ends before the
    /// record: count them.
    fn line_of(&self, pos: &csv::Position) -> u64 {
        line_from(self.rdr.get_ref().after(pos.byte()), pos)
    }

    fn convert(&self, rec: &RowRef<'_>) -> Item {
        let line = rec.line;
        let reject = |reason: String| Rejected {
            line,
            reason,
            raw: self.raw_text(rec),
            id: self.row_id(rec, rec.len() != self.header.len()),
        };
        if rec.len() == 1 && rec.get(0).is_some_and(|f| f.is_empty()) {
            return Err(Rejected {
                id: RowId::NotARecord,
                ..reject("blank line".into())
            });
        }
        if rec.len() != self.header.len() {
            let spans = rec.iter().any(|f| f.contains(&b'\n'));
            let hint = if spans {
                " (a quote opened here is never closed, or closes lines later)"
            } else {
                ""
            };
            return Err(reject(format!(
                "expected {} fields, found {}{hint}",
                self.header.len(),
                rec.len()
            )));
        }
        let mut values = Vec::with_capacity(rec.len());
        for (i, f) in rec.iter().enumerate() {
            let col = &self.header[i];
            check_size(col, f.len(), &self.limits).map_err(reject)?;
            match decode(f, self.encoding) {
                Ok(s) => values.push(s),
                Err(at) => {
                    return Err(reject(format!(
                        "invalid UTF-8 in column {col:?} at byte {}",
                        at + 1
                    )))
                }
            }
        }
        let line_id = line.to_string();
        let cells = self
            .targets
            .iter()
            .zip(self.header.iter())
            .zip(values.iter())
            .map(|((t, c), v)| (*t, c.as_str(), v.as_ref()))
            .chain(
                self.line_ids
                    .then_some((Target::ExternalId, "line", line_id.as_str())),
            );
        build_record(line, cells, self.partial).map_err(reject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Hands out its bytes `step` at a time (sequences cut at every place).
    struct Drip<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Drip<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_encoding_is_the_same_whatever_the_chunks() {
        use Encoding::{Utf8, Windows1252};
        let cases: [(&[u8], Encoding); 8] = [
            (b"id,name\n1,Ann\n", Utf8),
            ("id,name\n1,Zo\u{eb}\n2,\u{5f20}\u{4f1f}\n".as_bytes(), Utf8),
            (b"id,name\n1,Zo\xeb\n", Windows1252), // no valid multi-byte sequence
            (b"id,name\n1,\xc3\xa9\n2,\xff\n", Utf8), // UTF-8 with one bad byte
            (b"id,name\n1,\xe5\xbc", Windows1252), // cut short at the end
            (b"\xe5\xbc\xa0\xe5", Utf8),           // a sequence then a cut one
            (b"", Utf8),
            (b"\x80\x80 plain", Windows1252),
        ];
        for (data, want) in cases {
            assert_eq!(detect_encoding(data), want, "{data:?}");
            for step in [1, 2, 3, 5] {
                let got = detect_encoding_stream(&mut Drip { data, step }).unwrap();
                assert_eq!(got, want, "{data:?} read {step} at a time");
            }
        }
    }

    #[test]
    fn a_streamed_file_gives_the_same_rows_and_lines_as_in_memory() {
        // 21 MB: past the streamed window (8 MiB kept, trimmed at 16).
        let pad = "x".repeat(190);
        let mut text = b"id,name\r\n".to_vec();
        for i in 0..100_000 {
            text.extend_from_slice(format!("{i},Name {i} {pad}\r\n").as_bytes());
            if i % 23_000 == 0 {
                text.extend_from_slice(b"\r\n\r\n5x,\"open\r\n"); // blank lines, a ragged row
            }
        }
        let dir = std::env::temp_dir().join(format!("csvstream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("e.csv");
        std::fs::write(&path, &text).unwrap();
        let lim = Limits::default();
        let mut mem = CsvReader::open(text.clone(), mapping(), lim.clone(), None, None).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut streamed = CsvReader::open_file(file, mapping(), lim, None, None).unwrap();
        assert_eq!(streamed.total_bytes(), mem.total_bytes());
        assert!(text.len() > 2 * WINDOW);
        let shape = |items: Vec<Item>| -> Vec<(u64, String)> {
            items
                .into_iter()
                .map(|it| match it {
                    Ok(r) => (r.line, r.fields.join("|")),
                    Err(e) => (e.line, e.reason),
                })
                .collect()
        };
        loop {
            let a = shape(mem.next_chunk(4_096, None).unwrap());
            let b = shape(streamed.next_chunk(4_096, None).unwrap());
            assert_eq!(a, b);
            if a.is_empty() {
                break;
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn mapping() -> Mapping {
        let m: HashMap<String, String> = [("id", "external_id"), ("name", "name")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Mapping::new(&m).unwrap()
    }

    fn read_all(data: &[u8]) -> (CsvReader, Vec<Item>) {
        let mut r =
            CsvReader::open(data.to_vec(), mapping(), Limits::default(), None, None).unwrap();
        let items = r.next_chunk(1000, None).unwrap();
        (r, items)
    }

    #[test]
    fn a_missing_header_is_reported_without_the_cells() {
        let data = b"Jannike Quill,jannike@example.org,0412 555 123\nB,b@x.org,1\n".to_vec();
        let Err(e) = CsvReader::open(data, mapping(), Limits::default(), None, None) else {
            panic!("a file without an id column must be refused");
        };
        assert_eq!(e.line, 1);
        assert!(
            e.message.contains("line 1 has 3 column(s)"),
            "{}",
            e.message
        );
        for value in ["Jannike", "jannike@", "0412"] {
            assert!(!e.message.contains(value), "{}", e.message);
        }
    }

    #[test]
    fn sniffs_semicolons_and_bom() {
        let (r, items) = read_all(b"\xEF\xBB\xBFid;name\nA;John Smith\nB;\"Smith; Mary\"\n");
        assert_eq!(r.delimiter, b';');
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap().external_id, "A");
    }

    #[test]
    fn windows_1252() {
        let (r, items) = read_all(b"id,name\nA,Zo\xEB Smith\n");
        assert_eq!(r.encoding, Encoding::Windows1252);
        assert_eq!(items[0].as_ref().unwrap().fields[0], "Zoë");
    }

    #[test]
    fn ragged_rows_are_rejected_with_line() {
        let (_, items) = read_all(b"id,name\nA,John\nB,Mary,extra\nC,Chris\n");
        let bad = items[1].as_ref().unwrap_err();
        assert_eq!(bad.line, 3);
        assert!(bad.reason.contains("expected 2 fields, found 3"));
        assert!(items[2].is_ok());
    }

    #[test]
    fn raw_text_of_a_huge_row_is_cut() {
        let mut data = b"id,name\nA,John\nB,".to_vec();
        data.extend(std::iter::repeat_n(b'x', 100_000));
        data.extend_from_slice(b",extra\n");
        let (_, items) = read_all(&data);
        let bad = items[1].as_ref().unwrap_err();
        assert!(bad.raw.starts_with("B,xxx"), "{}", &bad.raw[..20]);
        assert!(
            bad.raw.ends_with("… [100008 bytes in all]"),
            "{}",
            &bad.raw[4090..]
        );
        assert!(bad.raw.len() < 4200);
    }

    #[test]
    fn lines_are_right_with_crlf_and_blank_lines() {
        for data in [
            &b"id,name\r\nA,John\r\nB,Mary,extra\r\nC,Chris\r\nD\r\n"[..],
            &b"id,name\nA,John\nB,Mary,extra\n\nC,Chris\r\n\r\nD\n"[..],
        ] {
            let (_, items) = read_all(data);
            let lines: Vec<u64> = items
                .iter()
                .map(|i| match i {
                    Ok(r) => r.line,
                    Err(e) => e.line,
                })
                .collect();
            let crlf = data.windows(2).filter(|w| w == b"\r\n").count() > 2;
            let want: &[u64] = if crlf { &[2, 3, 4, 5] } else { &[2, 3, 5, 7] };
            assert_eq!(lines, want, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn invalid_utf8_row_in_utf8_file() {
        let (r, items) = read_all("id,name\nA,Zoë\nB,X\u{0}\n".as_bytes());
        assert_eq!(r.encoding, Encoding::Utf8);
        assert!(items[1].as_ref().unwrap_err().reason.contains("NUL"));
        let mut data = "id,name\nA,Zoë\n".as_bytes().to_vec();
        data.extend_from_slice(b"B,\xff\n");
        let (_, items) = read_all(&data);
        assert!(items[1]
            .as_ref()
            .unwrap_err()
            .reason
            .contains("invalid UTF-8"));
    }

    #[test]
    fn unchanged_rows_are_recognised_by_their_bytes() {
        use crate::diff::Differ;
        use std::sync::Mutex;
        let data = b"id,name\nA,John Smith\nB,Mary Smith\n".to_vec();
        let first = read_all(&data).1;
        let a = first[0].as_ref().unwrap();
        assert!(a.built && a.raw_hash != 0);
        let mut d = Differ::default();
        d.insert("A".into(), 1, Some(1), 0);
        d.upsert("A", 1, Some(1), 0, a.raw_hash);
        // The next run starts from the saved snapshot.
        let d = Mutex::new(Differ::deserialize(&d.serialize()).unwrap());
        let mut r = CsvReader::open(data, mapping(), Limits::default(), None, None).unwrap();
        let again = r.next_chunk(10, Some(&d)).unwrap();
        let a2 = again[0].as_ref().unwrap();
        assert!(!a2.built && a2.line == 2);
        assert!(again[1].as_ref().unwrap().built, "B has no link: built");
        // Another mapping of the same bytes is another layout: no shortcut.
        let m2 = Mapping::new(
            &[("id", "external_id"), ("name", "display_name")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
        .unwrap();
        let mut r2 = CsvReader::open(
            b"id,name\nA,John Smith\n".to_vec(),
            m2,
            Limits::default(),
            None,
            None,
        )
        .unwrap();
        assert!(
            r2.next_chunk(10, Some(&d)).unwrap()[0]
                .as_ref()
                .unwrap()
                .built
        );
    }

    #[test]
    fn line_ids_stand_in_for_a_missing_id_column() {
        let data = b"name,email\nJo Bloggs,jo@x.com\n\nAl Lee,al@x.com\n".to_vec();
        let mut r =
            CsvReader::open_with(data, mapping(), Limits::default(), None, None, true).unwrap();
        assert!(r.line_ids);
        let items = r.next_chunk(100, None).unwrap();
        let ids: Vec<String> = items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .map(|rec| rec.external_id.clone())
            .collect();
        assert_eq!(ids, vec!["2", "4"]);
        // With an id column, line_ids changes nothing.
        let data = b"ID,name\nA1,Jo\n".to_vec();
        let mut r =
            CsvReader::open_with(data, mapping(), Limits::default(), None, None, true).unwrap();
        assert!(!r.line_ids);
        let items = r.next_chunk(100, None).unwrap();
        assert_eq!(items[0].as_ref().unwrap().external_id, "A1");
    }

    #[test]
    fn utf16_with_bom_is_decoded() {
        let mut data = vec![0xFF, 0xFE];
        for u in "ID\tname\r\nA1\tZoë\r\n".encode_utf16() {
            data.extend_from_slice(&u.to_le_bytes());
        }
        let (r, items) = read_all(&data);
        assert_eq!(r.delimiter, b'\t');
        let rec = items[0].as_ref().unwrap();
        assert_eq!(rec.external_id, "A1");
        assert_eq!(rec.fields[2], "Zoë");
    }

    #[test]
    fn rejected_rows_say_which_record_they_were() {
        let mut data = b"name,id\nJohn,A\nMary,B,extra\nX,\n".to_vec();
        data.extend_from_slice(b"Zo\xc3\xab,C\nBad,\xff\n\"open,D\n");
        let (_, items) = read_all(&data);
        let ids: Vec<RowId> = items
            .iter()
            .filter_map(|i| i.as_ref().err().map(|e| e.id.clone()))
            .collect();
        assert_eq!(
            ids,
            [
                RowId::Guess("B".into()),
                RowId::Unreadable,
                RowId::Unreadable,
                RowId::Unreadable
            ]
        );
    }

    #[test]
    fn a_row_that_swallowed_lines_is_unidentified() {
        // A quote never closed: row A runs to the end of the file (2 of 3 fields).
        let mut r = CsvReader::open(
            b"id,name,mail\nA,\"open\nB,x,y\nC,y,z\n".to_vec(),
            mapping(),
            Limits::default(),
            None,
            None,
        )
        .unwrap();
        let items = r.next_chunk(10, None).unwrap();
        let bad = items[0].as_ref().unwrap_err();
        assert_eq!(bad.id, RowId::Unreadable, "{}", bad.reason);
    }

    #[test]
    fn missing_id_column_refuses_file() {
        let e = CsvReader::open(
            b"name\nx\n".to_vec(),
            mapping(),
            Limits::default(),
            None,
            None,
        )
        .err()
        .unwrap();
        assert!(e.message.contains("external_id"));
    }
}
