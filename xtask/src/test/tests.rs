//! Unit tests: step selection, output parsing, feature sets, packaging and test targets.

use std::fs;

use testkit_redis::Topology;

use super::features::feature_sets;
use super::output::{conformance_note, figure_line};
use super::package::forget_built_packages;
use super::step::{parse, Step};
use super::targets::{package_name, test_targets};
use crate::exec::Counts;
use crate::metadata::Metadata;
use crate::project_root;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn only_selects_cells_and_skips_apply() {
    let all = parse(&[]).unwrap();
    assert_eq!(all.steps.len(), 14);
    let lint = parse(&args(&["--only", "lint", "--skip-fmt"])).unwrap();
    assert_eq!(
        lint.steps.into_iter().collect::<Vec<_>>(),
        [Step::Clippy, Step::Doc, Step::Msrv]
    );
    let publish = parse(&args(&["--only", "features,package"])).unwrap();
    assert_eq!(
        publish.steps.into_iter().collect::<Vec<_>>(),
        [Step::Features, Step::Package]
    );
    assert!(!Step::Features.needs_redis() && !Step::Package.needs_redis());
    let some = parse(&args(&["--only", "tls,faults", "--only", "unit"])).unwrap();
    assert_eq!(
        some.steps.into_iter().collect::<Vec<_>>(),
        [Step::Unit, Step::Redis(Topology::Tls), Step::Faults]
    );
    let browser = parse(&args(&["--only", "faults,browser,tls"])).unwrap();
    assert_eq!(
        browser.steps.into_iter().collect::<Vec<_>>(),
        [Step::Redis(Topology::Tls), Step::Browser, Step::Faults],
        "browser runs after tls and before faults"
    );
    assert!(Step::Browser.needs_redis());
    let sql = parse(&args(&["--only", "browser,sql,tls"])).unwrap();
    assert_eq!(
        sql.steps.into_iter().collect::<Vec<_>>(),
        [Step::Redis(Topology::Tls), Step::Sql, Step::Browser],
        "sql runs after tls and before browser"
    );
    assert!(Step::Sql.needs_postgres() && !Step::Sql.needs_redis());
    assert!(Step::Faults.needs_postgres() && Step::Faults.needs_redis());
    assert!(!Step::Unit.needs_postgres());
    assert_eq!(
        parse(&args(&["--only", "redis"])).unwrap().steps.len(),
        4,
        "the redis group is the four topologies"
    );
    assert!(parse(&args(&["--only", "nope"])).is_err());
    assert!(parse(&args(&["--only"])).is_err());
    assert!(parse(&args(&["--frobnicate"])).is_err());
}

/// Test binaries' output as cargo prints it, with a fault test's figures glued to the
/// results line and per-test lines of another binary around: each count goes to its own
/// binary.
#[test]
fn counts_are_parsed_per_binary_from_interleaved_output() {
    let lines = args(&[
        "     Running tests/memory_conformance.rs (target/debug/deps/memory_conformance-0a1b)",
        "running 85 tests",
        "test round_trip_json ... ok",
        "test result: ok. 85 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 5.1s",
        "     Running tests/faults_many.rs (target/debug/deps/faults_many-2c3d)",
        "running 13 tests",
        "test many::a ... FIGURES many-a: lost=0",
        "ok",
        "FIGURES many-b: lost=0 test result: FAILED. 12 passed; 1 failed; 0 ignored; 0 measured",
        "     Running tests/redis_conformance.rs (target/debug/deps/redis_conformance-4e5f)",
        "test result: ok. 85 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out",
    ]);
    let per = Counts::per_binary(&lines);
    let names: Vec<&str> = per.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["memory_conformance", "faults_many", "redis_conformance"]);
    assert_eq!((per[1].1.passed, per[1].1.failed), (12, 1));
    let total = Counts::parse(&lines);
    assert_eq!((total.passed, total.failed, total.ignored), (182, 1, 1));
    assert_eq!(
        conformance_note(&lines),
        "conformance: memory_conformance 85 passed, 0 failed; redis_conformance 85 passed, 0 failed"
    );
}

#[test]
fn forwards_figure_lines_only() {
    assert_eq!(figure_line("FIGURES acked=5"), Some("FIGURES acked=5"));
    assert_eq!(
        figure_line("test kill::under_load ... SCENARIO kill9: ok"),
        Some("SCENARIO kill9: ok")
    );
    assert_eq!(figure_line("test kill::under_load ... ok"), None);
    assert_eq!(figure_line("running 3 tests"), None);
}

#[test]
fn feature_sets_of_session_core() {
    let metadata = Metadata::load().unwrap();
    let core = metadata.members().find(|p| p.name == "session-core").unwrap();
    let sets: Vec<String> = feature_sets(core).iter().map(|set| set.join(" ")).collect();
    assert_eq!(sets.first().map(String::as_str), Some("--no-default-features"));
    assert!(sets.contains(&"--no-default-features --features json".to_owned()));
    assert_eq!(
        sets.last().map(String::as_str),
        Some(""),
        "the defaults come last"
    );
    assert_eq!(sets.len(), core.features.len() + 2);
}

#[test]
fn forgets_only_the_packaged_crates_builds() {
    let dir = std::env::temp_dir().join(format!("xtask-forget-{}", std::process::id()));
    let files = [
        ("debug/.fingerprint/session-core-0123abcd", true),
        ("debug/.fingerprint/session-core-fred-0123abcd", false),
        ("debug/.fingerprint/tokio-0123abcd", false),
        ("debug/deps/libsession_core-0123abcd.rlib", true),
        ("debug/deps/libsession_core-0123abcd.rmeta", true),
        ("debug/deps/session_core-0123abcd.d", true),
        ("debug/deps/libtokio-0123abcd.rlib", false),
    ];
    for (file, _) in files {
        let path = dir.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        if file.contains("/.fingerprint/") {
            fs::create_dir_all(&path).unwrap();
        } else {
            fs::write(&path, b"").unwrap();
        }
    }
    let metadata = Metadata::load().unwrap();
    let core = metadata.members().find(|p| p.name == "session-core").unwrap();
    assert_eq!(forget_built_packages(&dir, &[core]), 4);
    for (file, removed) in files {
        assert_eq!(!dir.join(file).exists(), removed, "{file}");
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn finds_this_workspace_packages() {
    assert_eq!(
        package_name(&project_root().join("crates/testkit-redis")),
        "testkit-redis"
    );
    let targets = test_targets("topolog").unwrap();
    assert!(targets.contains(&("testkit-redis".to_owned(), "topologies".to_owned())));
}
