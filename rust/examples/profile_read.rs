//! Times the stages of reading an export: `cargo run --release --example profile_read FILE`.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use _core::diff::Differ;
use _core::mapping::Mapping;
use _core::pipeline::process;
use _core::sources::{Limits, Reader};

fn main() {
    let path = std::env::args().nth(1).expect("FILE");
    let m: HashMap<String, String> = [
        ("client id", "external_id"),
        ("first name", "given_name"),
        ("surname", "family_name"),
        ("email address", "email"),
        ("phone", "phone"),
        ("mobile", "mobile"),
        ("business name", "organisation"),
        ("address", "street"),
        ("suburb", "city"),
        ("state", "region"),
        ("postcode", "postcode"),
        ("date of birth", "date_of_birth"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let t = Instant::now();
    let data = std::fs::read(&path).unwrap();
    println!("read file {:?}", t.elapsed());
    let t = Instant::now();
    let mut r = Reader::open(
        data,
        "csv",
        Mapping::new(&m).unwrap(),
        Limits::default(),
        None,
        None,
    )
    .unwrap();
    println!("open {:?}", t.elapsed());
    let mut chunks = Vec::new();
    let t = Instant::now();
    loop {
        let c = r.next_chunk(50_000, None).unwrap();
        if c.is_empty() {
            break;
        }
        chunks.push(c);
    }
    println!("parse+build {:?}", t.elapsed());
    let differ = Mutex::new(Differ::default());
    let t = Instant::now();
    let mut n = 0;
    for c in chunks {
        let p = process(c, &differ, None, "AU", None);
        n += p.creates.len();
    }
    println!("process (all new) {:?} {n}", t.elapsed());
}
