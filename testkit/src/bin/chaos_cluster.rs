//! `chaos_cluster --bin-dir <dir> [--run-dir <dir>] [--only a,b] [--out <file>]`: starts a
//! three-node RabbitMQ cluster, a Redis primary with a replica and three Sentinels, then
//! runs the cluster scenarios against the `gateway` and `agent` binaries in `<dir>` (two
//! gateways behind HAProxy, three agents each), prints the table, and exits 1 when any
//! scenario failed. Private servers only; every one is stopped on the way out.

use std::io::Write;
use std::path::PathBuf;

use futures_util::FutureExt;
use testkit::chaos::Bins;
use testkit::chaos::Tally;
use testkit::chaos::cluster::{self, Cluster, Row};
use testkit::cluster::RunDir;

fn usage() -> ! {
    eprintln!("usage: chaos_cluster --bin-dir <dir> [--run-dir <dir>] [--only name,name] [--out <file>]");
    eprintln!("scenarios: {}", cluster::ALL.join(", "));
    std::process::exit(2);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut bin_dir, mut run_dir, mut only, mut out) = (None, None, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bin-dir" => bin_dir = args.next().map(PathBuf::from),
            "--run-dir" => run_dir = args.next().map(PathBuf::from),
            "--only" => only = args.next(),
            "--out" => out = args.next().map(PathBuf::from),
            _ => usage(),
        }
    }
    let Some(dir) = bin_dir else { usage() };
    let bins = Bins { gateway: dir.join("gateway"), agent: dir.join("agent") };
    for b in [&bins.gateway, &bins.agent] {
        if !b.exists() {
            eprintln!("chaos_cluster: {} does not exist; build it first", b.display());
            std::process::exit(2);
        }
    }
    let names: Vec<String> = match only {
        Some(list) => list.split(',').map(str::to_owned).collect(),
        None => cluster::ALL.iter().map(|s| (*s).to_owned()).collect(),
    };
    let started = std::time::Instant::now();
    eprintln!("chaos_cluster: starting 3 RabbitMQ nodes, Redis primary + replica + 3 sentinels");
    let mut servers = tokio::task::block_in_place(|| Cluster::start(RunDir::new(run_dir)));
    eprintln!("chaos_cluster: cluster up after {:.0} s", started.elapsed().as_secs_f64());
    let mut rows: Vec<Row> = Vec::new();
    for name in &names {
        eprintln!("chaos_cluster: running {name}");
        let run = std::panic::AssertUnwindSafe(cluster::run(name, &mut servers, &bins)).catch_unwind().await;
        let row = run.unwrap_or_else(|_| Row {
            tally: Tally { name: name.clone(), stuck: 1, note: "the scenario panicked".into(), ..Tally::default() },
            ..Row::default()
        });
        eprintln!("chaos_cluster: {name}: {}", if row.passed() { "PASS" } else { "FAIL" });
        rows.push(row);
    }
    tokio::task::block_in_place(|| drop(servers));
    let text = format!("{}\nwhole run: {:.0} s\n", cluster::table(&rows), started.elapsed().as_secs_f64());
    let _ = std::io::stdout().write_all(text.as_bytes());
    if let Some(path) = out {
        let _ = std::fs::write(path, &text);
    }
    if rows.iter().any(|r| !r.passed()) {
        std::process::exit(1);
    }
}
