//! The workspace's own binaries, for tests that run processes of other crates.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/<name>`, found beside the running test executable (`cargo test
/// --workspace` builds every binary first); when it is missing it is built with
/// `cargo build -p <package> --bin <name>`, and the test panics with that command if the
/// build fails. The `<NAME>_BIN` variable (e.g. `AGENT_BIN`) overrides.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(bin) = std::env::var_os(&var) {
        return PathBuf::from(bin);
    }
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target dir").join(name);
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let ok = Command::new(cargo).args(["build", "-p", package, "--bin", name]).status().is_ok_and(|s| s.success());
        assert!(
            ok && bin.is_file(),
            "no {name} binary at {}; run `cargo build -p {package} --bin {name}`",
            bin.display()
        );
    }
    bin
}
