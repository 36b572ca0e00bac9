//! `chaos --bin-dir <dir> [--only a,b] [--fast] [--out <file>]`: runs the chaos scenarios
//! against the `gateway` and `agent` binaries in `<dir>` on private Redis and RabbitMQ
//! servers, prints the pass/fail table, and exits 1 when any scenario failed.

use std::io::Write;
use std::path::PathBuf;

use futures_util::FutureExt;
use testkit::chaos::{Bins, Servers, Tally, scenarios, table};

fn usage() -> ! {
    eprintln!("usage: chaos --bin-dir <dir> [--only name,name] [--fast] [--out <file>]");
    eprintln!("scenarios: {}", scenarios::ALL.join(", "));
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin_dir, mut only, mut out) = (None, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bin-dir" => bin_dir = args.next().map(PathBuf::from),
            "--only" => only = args.next(),
            "--fast" => only = Some(scenarios::FAST.join(",")),
            "--out" => out = args.next().map(PathBuf::from),
            _ => usage(),
        }
    }
    let Some(dir) = bin_dir else { usage() };
    let bins = Bins { gateway: dir.join("gateway"), agent: dir.join("agent") };
    for b in [&bins.gateway, &bins.agent] {
        if !b.exists() {
            eprintln!("chaos: {} does not exist; build it first", b.display());
            std::process::exit(2);
        }
    }
    let names: Vec<String> = match only {
        Some(list) => list.split(',').map(str::to_owned).collect(),
        None => scenarios::ALL.iter().map(|s| (*s).to_owned()).collect(),
    };
    eprintln!("chaos: starting private Redis (plain and AOF) and a private RabbitMQ node");
    let mut servers = tokio::task::block_in_place(Servers::start);
    let mut rows: Vec<Tally> = Vec::new();
    for name in &names {
        eprintln!("chaos: running {name}");
        let run = std::panic::AssertUnwindSafe(scenarios::run(name, &mut servers, &bins)).catch_unwind().await;
        let row = run.unwrap_or_else(|_| Tally {
            name: name.clone(),
            stuck: 1,
            note: "the scenario panicked".into(),
            ..Tally::default()
        });
        eprintln!("chaos: {name}: {}", if row.passed() { "PASS" } else { "FAIL" });
        rows.push(row);
    }
    drop(servers);
    let text = table(&rows);
    let _ = std::io::stdout().write_all(text.as_bytes());
    if let Some(path) = out {
        let _ = std::fs::write(path, &text);
    }
    if rows.iter().any(|r| !r.passed()) {
        std::process::exit(1);
    }
}
