//! Times csv_core splitting alone: `cargo run --release --example profile_split FILE`.
use std::time::Instant;
fn main() {
    let path = std::env::args().nth(1).expect("FILE");
    let data = std::fs::read(&path).unwrap();
    let t = Instant::now();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(&data[..]);
    let mut rec = csv::ByteRecord::new();
    let mut n = 0u64;
    while rdr.read_byte_record(&mut rec).unwrap() {
        n += rec.len() as u64;
    }
    println!("split reuse-record {:?} {n}", t.elapsed());
    let t = Instant::now();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(&data[..]);
    let mut v = Vec::with_capacity(50_000);
    let mut n = 0u64;
    loop {
        let mut rec = csv::ByteRecord::new();
        if !rdr.read_byte_record(&mut rec).unwrap() {
            break;
        }
        n += 1;
        v.push(rec);
        if v.len() == 50_000 {
            v.clear();
        }
    }
    println!("split new-record-per-row {:?} {n}", t.elapsed());
}
