//! The `package` step: `cargo package` of the published crates, after removing stale copies of
//! them.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use super::cargo::{cargo, cargo_step};
use super::report::{error_report, Report};
use crate::metadata::{self, Metadata};
use crate::target_dir;

/// `cargo package` of every published crate, in one command.
pub(super) fn package_step(log: &Path) -> Report {
    let metadata = match Metadata::load() {
        Ok(metadata) => metadata,
        Err(e) => return error_report(e.to_string(), log),
    };
    let published: Vec<&metadata::Package> = metadata.members().filter(|p| p.publishable).collect();
    if published.is_empty() {
        return Report {
            ok: true,
            counts: None,
            note: "no published crates".to_owned(),
            failure: None,
        };
    }
    // The verification builds go to a target directory of their own, where only they build
    // these packages from the temporary registry; their dependencies stay built between runs.
    let verify_dir = target_dir().join("package-verify");
    let removed = forget_unpacked_packages(&published) + forget_built_packages(&verify_dir, &published);
    // --allow-dirty: the check is of the working tree, committed or not.
    let mut command = cargo(&["package", "--locked", "--allow-dirty", "--target-dir"]);
    command.arg(&verify_dir);
    for package in &published {
        command.args(["-p", &package.name]);
    }
    let mut report = cargo_step(command, log, false, |_| {});
    if let Some(failure) = &mut report.failure {
        // Cargo names every test target left out of a package (`include` keeps tests in the
        // repository); on a failure those lines would only push the error out of view.
        failure
            .tail
            .retain(|line| !line.contains("warning: ignoring test"));
    }
    let names: Vec<&str> = published.iter().map(|p| p.name.as_str()).collect();
    report.note = format!("{} crates: {}", names.len(), names.join(", "));
    if removed > 0 {
        let _ = write!(report.note, "; {removed} stale copies removed first");
    }
    report
}

/// Removes what an earlier verification built of `packages` in `verify_dir`.
///
/// Cargo fingerprints a registry crate by name, version and features, not by its files, so a
/// verification build would otherwise link a workspace dependency as it was at the previous
/// run. Only `packages` are removed (their `.fingerprint` entries and `deps` files); the
/// dependencies from crates.io stay built. Returns how many entries were removed.
pub(super) fn forget_built_packages(verify_dir: &Path, packages: &[&metadata::Package]) -> usize {
    let Ok(profiles) = fs::read_dir(verify_dir) else {
        return 0;
    };
    let ours = |file: &str| {
        // `<name>-<hash>` in .fingerprint; `lib<name>-<hash>.rlib`, `.rmeta`, `<name>-<hash>.d` in deps.
        let stem = file.split('.').next().unwrap_or(file);
        let Some((name, _hash)) = stem.rsplit_once('-') else {
            return false;
        };
        let name = name
            .strip_prefix("lib")
            .filter(|_| file.contains('.'))
            .unwrap_or(name);
        packages
            .iter()
            .any(|p| p.name == name || p.name.replace('-', "_") == name)
    };
    let mut removed = 0;
    for profile in profiles.flatten().map(|entry| entry.path()) {
        for folder in [".fingerprint", "deps"] {
            let Ok(entries) = fs::read_dir(profile.join(folder)) else {
                continue;
            };
            for entry in entries.flatten() {
                if !ours(&entry.file_name().to_string_lossy()) {
                    continue;
                }
                let path = entry.path();
                let gone = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed += usize::from(gone.is_ok());
            }
        }
    }
    removed
}

/// Removes the copies of `packages` that an earlier `cargo package` unpacked from its temporary
/// local registry into `$CARGO_HOME/registry/src/-<hash>/<name>-<version>`.
///
/// Cargo unpacks a registry crate once and then trusts the directory, so without this the
/// verification build of a crate would compile against the sources its workspace dependencies
/// had at the previous run (same name and version, older contents). Registries reached through
/// a `file://` URL, like that temporary one, are the source directories named `-<hash>`; crates
/// from crates.io (`index.crates.io-<hash>`) are never touched. Returns how many were removed.
fn forget_unpacked_packages(packages: &[&metadata::Package]) -> usize {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let Some(Ok(registries)) = cargo_home.map(|home| fs::read_dir(home.join("registry").join("src"))) else {
        return 0;
    };
    let mut removed = 0;
    for registry in registries.flatten() {
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for package in packages {
            let unpacked = registry
                .path()
                .join(format!("{}-{}", package.name, package.version));
            if unpacked.is_dir() && fs::remove_dir_all(&unpacked).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
