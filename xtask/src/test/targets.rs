//! Finds the workspace's test targets by name, and adds them to a `cargo test` command.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::BENCH_PACKAGE;
use crate::project_root;

pub(super) fn add_targets(command: &mut Command, targets: &[(String, String)]) {
    for (package, target) in targets {
        command.args(["-p", package, "--test", target]);
    }
}

/// `(package, test target)` for every `crates/*/tests/<prefix>*.rs` file or
/// `crates/*/tests/<prefix>*/main.rs` directory, sorted.
pub(super) fn test_targets(prefix: &str) -> std::io::Result<Vec<(String, String)>> {
    let mut targets = Vec::new();
    for krate in fs::read_dir(project_root().join("crates"))? {
        let krate = krate?.path();
        let Ok(tests) = fs::read_dir(krate.join("tests")) else {
            continue;
        };
        let package = package_name(&krate);
        if package == BENCH_PACKAGE {
            continue;
        }
        for entry in tests {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let target = if path.is_dir() && path.join("main.rs").is_file() {
                name.to_owned()
            } else if let Some(stem) = name.strip_suffix(".rs").filter(|_| path.is_file()) {
                stem.to_owned()
            } else {
                continue;
            };
            if target.starts_with(prefix) {
                targets.push((package.clone(), target));
            }
        }
    }
    targets.sort();
    Ok(targets)
}

/// The `name` under `[package]` in `<dir>/Cargo.toml`, or the folder name.
pub(super) fn package_name(dir: &Path) -> String {
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(manifest) = fs::read_to_string(dir.join("Cargo.toml")) else {
        return folder;
    };
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(value) = line
                .strip_prefix("name")
                .map(str::trim_start)
                .and_then(|rest| rest.strip_prefix('='))
            {
                return value.trim().trim_matches('"').to_owned();
            }
        }
    }
    folder
}
