//! Times one matching run outside Python, stage by stage, for profiling
//! (`perf record`): `cargo run --release --example profile_match CONFIG.json
//! FILE.csv [LABEL_COLUMN]`. CONFIG is `MatchConfig.to_json()`; the CSV's
//! columns are read as they are (no heading mapping, first column named `id`
//! holds the ids).
use _core::matching::config::Config;
use _core::matching::engine::run;
use _core::matching::prepare::{RawTable, StrCol};
use std::time::Instant;

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let cfg_path = args.next().ok_or("CONFIG.json")?;
    let csv_path = args.next().ok_or("FILE.csv")?;
    let label = args.next();
    let cfg = Config::from_json(&std::fs::read_to_string(cfg_path).map_err(|e| e.to_string())?)?;
    let t = Instant::now();
    let mut rdr = csv::Reader::from_path(&csv_path).map_err(|e| e.to_string())?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_string)
        .collect();
    let mut cols: Vec<StrCol> = header.iter().map(|_| StrCol::new()).collect();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| e.to_string())?;
        for (c, v) in cols.iter_mut().zip(rec.iter()) {
            c.push(v);
        }
    }
    let id = header
        .iter()
        .position(|h| h == "id")
        .ok_or("no id column")?;
    let ids = cols[id].clone();
    let raw = RawTable {
        ids,
        columns: header.into_iter().zip(cols).collect(),
    };
    eprintln!("read {} records in {:.2?}", raw.len(), t.elapsed());
    let t = Instant::now();
    let out = run(&cfg, &raw, None, label.as_deref())?;
    eprintln!("run {:.2?}", t.elapsed());
    let s = &out.stats;
    for (k, v) in &s.seconds {
        eprintln!("  {k:<16} {v:.2} s");
    }
    eprintln!(
        "comparisons {} above threshold {} prior {:.3e}",
        s.pairs_compared, s.pairs_above_threshold, s.prior
    );
    for r in &s.rules {
        eprintln!(
            "  rule {:<70} pairs {:>10} raw {:>10} scanned {:>5} largest {}",
            r.name, r.pairs, r.pairs_raw, r.scanned_blocks, r.largest_block
        );
    }
    Ok(())
}
