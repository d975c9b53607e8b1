//! What `cargo metadata --format-version 1` says about the workspace: its
//! members (features, whether they are published, their `rust-version`) and
//! the resolved dependency graph of the lockfile, with each package's
//! `rust-version`.
//!
//! This crate keeps its dependencies to `testkit-redis` and `ctrlc`, so the
//! JSON is read by the small parser at the bottom of this file.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::process::Command;

use crate::project_root;

/// Targets whose `cfg` decides which platform-specific dependencies count.
/// Filtering by platform also drops dependencies behind custom cfgs nobody
/// sets in a normal build (`cfg(loom)`, …).
pub(crate) const PLATFORMS: &[&str] = &[
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-pc-windows-msvc",
    "aarch64-apple-darwin",
];

/// One package of the metadata.
#[derive(Debug, Clone)]
pub(crate) struct Package {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) version: String,
    /// `None` when the package declares no `rust-version`.
    pub(crate) rust_version: Option<RustVersion>,
    /// Features other than `default`, sorted.
    pub(crate) features: Vec<String>,
    /// Whether `default` enables anything.
    pub(crate) has_default: bool,
    /// Every feature (`default` too) and what it enables.
    pub(crate) feature_map: BTreeMap<String, Vec<String>>,
    /// False for `publish = false`.
    pub(crate) publishable: bool,
    /// Whether it has a library target.
    pub(crate) has_lib: bool,
}

/// The workspace as `cargo metadata` sees it.
#[derive(Debug)]
pub(crate) struct Metadata {
    pub(crate) packages: HashMap<String, Package>,
    /// Workspace members' ids, sorted by name.
    pub(crate) members: Vec<String>,
    /// Resolved dependencies of each package: `(dependency id, is a dev-dependency only)`.
    pub(crate) deps: HashMap<String, Vec<(String, bool)>>,
}

impl Metadata {
    /// Runs `cargo metadata --locked` (resolving for [`PLATFORMS`]) in the project root.
    pub(crate) fn load() -> crate::Result<Metadata> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(project_root());
        for platform in PLATFORMS {
            command.args(["--filter-platform", platform]);
        }
        let output = command.output()?;
        if !output.status.success() {
            return Err(format!(
                "cargo metadata failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
            .into());
        }
        Metadata::parse(&String::from_utf8_lossy(&output.stdout))
    }

    fn parse(text: &str) -> crate::Result<Metadata> {
        let root = Json::parse(text)?;
        let mut packages = HashMap::new();
        for package in root.get("packages").array() {
            let features = package.get("features").object();
            let has_default = features
                .iter()
                .any(|(name, enables)| name == "default" && !enables.array().is_empty());
            let package = Package {
                id: package.get("id").string().to_owned(),
                name: package.get("name").string().to_owned(),
                version: package.get("version").string().to_owned(),
                rust_version: package
                    .get("rust_version")
                    .as_str()
                    .map(RustVersion::parse)
                    .transpose()?,
                features: features
                    .iter()
                    .map(|(name, _)| name.clone())
                    .filter(|name| name != "default")
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                has_default,
                feature_map: features
                    .iter()
                    .map(|(name, enables)| {
                        let enables = enables.array().iter().map(|e| e.string().to_owned()).collect();
                        (name.clone(), enables)
                    })
                    .collect(),
                // `publish = false` is `[]`; no `publish` key is `null`.
                publishable: !matches!(package.get("publish"), Json::Array(list) if list.is_empty()),
                has_lib: package.get("targets").array().iter().any(|target| {
                    target
                        .get("kind")
                        .array()
                        .iter()
                        .any(|kind| matches!(kind.string(), "lib" | "rlib" | "proc-macro"))
                }),
            };
            packages.insert(package.id.clone(), package);
        }
        let mut members: Vec<String> = root
            .get("workspace_members")
            .array()
            .iter()
            .map(|id| id.string().to_owned())
            .collect();
        members.sort_by_key(|id| packages.get(id).map(|p| p.name.clone()));
        let mut deps = HashMap::new();
        for node in root.get("resolve").get("nodes").array() {
            let list = node
                .get("deps")
                .array()
                .iter()
                .map(|dep| {
                    let kinds = dep.get("dep_kinds").array();
                    let dev_only = !kinds.is_empty()
                        && kinds.iter().all(|kind| kind.get("kind").as_str() == Some("dev"));
                    (dep.get("pkg").string().to_owned(), dev_only)
                })
                .collect();
            deps.insert(node.get("id").string().to_owned(), list);
        }
        Ok(Metadata {
            packages,
            members,
            deps,
        })
    }

    /// The workspace members, by name.
    pub(crate) fn members(&self) -> impl Iterator<Item = &Package> {
        self.members.iter().filter_map(|id| self.packages.get(id))
    }

    /// Every package a build of `member` compiles (its normal, build and dev
    /// dependencies, and theirs but their dev-dependencies), each with the
    /// chain of packages that pulls it in (`dependency <- … <- member`).
    pub(crate) fn dependencies_of(&self, member: &str) -> BTreeMap<String, String> {
        let mut chains: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = VecDeque::from([(member.to_owned(), self.label(member))]);
        let mut seen = BTreeSet::from([member.to_owned()]);
        while let Some((id, chain)) = queue.pop_front() {
            for (dep, dev_only) in self.deps.get(&id).into_iter().flatten() {
                // Dev-dependencies count for the member only: cargo builds no one else's.
                if (*dev_only && id != member) || !seen.insert(dep.clone()) {
                    continue;
                }
                let dep_chain = format!("{} <- {chain}", self.label(dep));
                chains.insert(dep.clone(), dep_chain.clone());
                queue.push_back((dep.clone(), dep_chain));
            }
        }
        chains
    }

    /// Every member's `rust-version` against what its locked dependencies declare.
    pub(crate) fn msrv_check(&self) -> MsrvCheck {
        let mut check = MsrvCheck::default();
        let mut highest_published = false;
        for member in self.members() {
            let Some(declared) = member.rust_version else {
                check
                    .too_new
                    .push(format!("{} declares no rust-version", member.name));
                continue;
            };
            let deps = self.dependencies_of(&member.id);
            let needs = |outside_only: bool| {
                deps.iter()
                    .filter(move |(id, _)| !outside_only || !self.members.contains(id))
                    .filter_map(|(id, chain)| Some((self.packages.get(id)?.rust_version?, chain)))
            };
            let mut too_new: Vec<_> = needs(false).filter(|(need, _)| *need > declared).collect();
            too_new.sort();
            for (need, chain) in too_new {
                check.too_new.push(format!(
                    "{} declares rust-version {declared}, but {chain} needs {need}",
                    member.name
                ));
            }
            // What forces the version: the newest need outside the workspace (members share one).
            let Some((top, chain)) = needs(true).max() else {
                check.lines.push(format!(
                    "{}: rust-version {declared}; no dependency declares one",
                    member.name
                ));
                continue;
            };
            check.lines.push(format!(
                "{}: rust-version {declared}; highest need {top}: {chain}",
                member.name
            ));
            // On a tie, a published crate's chain says more than a tool's.
            let better = check
                .highest
                .as_ref()
                .is_none_or(|(v, _)| top > *v || (top == *v && member.publishable && !highest_published));
            if better {
                check.highest = Some((top, chain.clone()));
                highest_published = member.publishable;
            }
        }
        check
    }

    fn label(&self, id: &str) -> String {
        self.packages
            .get(id)
            .map_or_else(|| id.to_owned(), |p| format!("{} {}", p.name, p.version))
    }
}

impl Package {
    /// Everything a build with `features` (and `default` when `default` is set)
    /// turns on: the package's own features and what they enable (`dep:x`,
    /// `x/f`), without the name `default` itself. Two selections with the same
    /// set build the same thing.
    pub(crate) fn enabled(&self, features: &[String], default: bool) -> BTreeSet<String> {
        let mut queue: Vec<String> = features.to_vec();
        if default {
            queue.push("default".to_owned());
        }
        let mut on = BTreeSet::new();
        while let Some(feature) = queue.pop() {
            if !on.insert(feature.clone()) {
                continue;
            }
            if let Some(enables) = self.feature_map.get(&feature) {
                queue.extend(enables.iter().cloned());
            }
        }
        on.remove("default");
        on
    }
}

/// What [`Metadata::msrv_check`] found.
#[derive(Debug, Default)]
pub(crate) struct MsrvCheck {
    /// One line per member: its `rust-version` and its highest need outside the workspace.
    pub(crate) lines: Vec<String>,
    /// Every dependency that needs a newer Rust than the member that builds it (empty: ok).
    pub(crate) too_new: Vec<String>,
    /// The highest need outside the workspace over all members, and its chain.
    pub(crate) highest: Option<(RustVersion, String)>,
}

/// A `rust-version`: `1.90`, `1.90.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RustVersion(u64, u64, u64);

impl RustVersion {
    pub(crate) fn parse(text: &str) -> crate::Result<RustVersion> {
        let mut parts = text.trim().split('.').map(str::parse::<u64>);
        let mut next = || parts.next().transpose();
        let bad = || format!("bad rust-version `{text}`");
        let major = next().map_err(|_| bad())?.ok_or_else(bad)?;
        let minor = next().map_err(|_| bad())?.unwrap_or(0);
        let patch = next().map_err(|_| bad())?.unwrap_or(0);
        Ok(RustVersion(major, minor, patch))
    }
}

impl std::fmt::Display for RustVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.2 == 0 {
            write!(f, "{}.{}", self.0, self.1)
        } else {
            write!(f, "{}.{}.{}", self.0, self.1, self.2)
        }
    }
}

/// A JSON value, enough of one for `cargo metadata`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

const NULL: Json = Json::Null;

impl Json {
    pub(crate) fn parse(text: &str) -> crate::Result<Json> {
        let mut parser = Parser {
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value()?;
        parser.space();
        if parser.at != parser.bytes.len() {
            return Err(parser.error("trailing characters"));
        }
        Ok(value)
    }

    /// The member `key` of an object, or null.
    pub(crate) fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map_or(&NULL, |(_, v)| v),
            _ => &NULL,
        }
    }

    /// The elements of an array; empty for anything else.
    pub(crate) fn array(&self) -> &[Json] {
        match self {
            Json::Array(items) => items,
            _ => &[],
        }
    }

    /// The members of an object; empty for anything else.
    pub(crate) fn object(&self) -> &[(String, Json)] {
        match self {
            Json::Object(members) => members,
            _ => &[],
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The string, or `""` for anything else.
    pub(crate) fn string(&self) -> &str {
        self.as_str().unwrap_or("")
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> Box<dyn std::error::Error> {
        format!("cargo metadata: bad JSON at byte {}: {what}", self.at).into()
    }

    fn space(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.space();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) -> crate::Result<()> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", byte as char)))
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> crate::Result<Json> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error("unexpected word"))
        }
    }

    fn value(&mut self) -> crate::Result<Json> {
        self.space();
        match self.bytes.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.space();
                        let key = self.string()?;
                        self.expect(b':')?;
                        members.push((key, self.value()?));
                        if self.eat(b'}') {
                            break;
                        }
                        self.expect(b',')?;
                    }
                }
                Ok(Json::Object(members))
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value()?);
                        if self.eat(b']') {
                            break;
                        }
                        self.expect(b',')?;
                    }
                }
                Ok(Json::Array(items))
            }
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    self.at += 1;
                }
                let text =
                    std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| self.error("number"))?;
                text.parse()
                    .map(Json::Number)
                    .map_err(|_| self.error("bad number"))
            }
            _ => Err(self.error("expected a value")),
        }
    }

    fn string(&mut self) -> crate::Result<String> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return Err(self.error("expected a string"));
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(self.error("unterminated string"));
            };
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(&escape) = self.bytes.get(self.at) else {
                        return Err(self.error("unterminated escape"));
                    };
                    self.at += 1;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let first = self.hex4()?;
                            let code = if (0xd800..0xdc00).contains(&first) {
                                if !self.bytes[self.at..].starts_with(b"\\u") {
                                    return Err(self.error("lone surrogate"));
                                }
                                self.at += 2;
                                let second = self.hex4()?;
                                0x10000 + ((first - 0xd800) << 10) + (second.wrapping_sub(0xdc00) & 0x3ff)
                            } else {
                                first
                            };
                            char::from_u32(code).ok_or_else(|| self.error("bad \\u escape"))?
                        }
                        _ => return Err(self.error("bad escape")),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(byte),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not UTF-8"))
    }

    fn hex4(&mut self) -> crate::Result<u32> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("bad \\u escape"))?;
        self.at += 4;
        Ok(digits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json() {
        let value = Json::parse(
            r#" {"a": [1, -2.5e3, true, false, null], "b": "x\"\\\u00e9\ud83d\ude00\n", "c": {}} "#,
        )
        .unwrap();
        assert_eq!(value.get("a").array().len(), 5);
        assert_eq!(value.get("a").array()[1], Json::Number(-2500.0));
        assert_eq!(value.get("b").string(), "x\"\\é😀\n");
        assert!(value.get("c").object().is_empty());
        assert_eq!(value.get("missing"), &Json::Null);
        assert!(Json::parse("[1,]").is_err());
        assert!(Json::parse("{} x").is_err());
        assert!(Json::parse(r#""open"#).is_err());
    }

    #[test]
    fn orders_rust_versions() {
        let v = |s| RustVersion::parse(s).unwrap();
        assert!(v("1.90") > v("1.88.0"));
        assert_eq!(v("1.90"), v("1.90.0"));
        assert!(v("1.90.1") > v("1.90"));
        assert_eq!(v("1.85.0").to_string(), "1.85");
        assert!(RustVersion::parse("one").is_err());
    }

    /// `app` (1.80) has a normal dependency `a` (1.70) that needs `b` (1.85), and a
    /// dev-dependency `c` (1.60) whose own dev-dependency `d` (1.99) is never built.
    const GRAPH: &str = r#"{
        "packages": [
            {"id": "app", "name": "app", "version": "0.1.0", "rust_version": "1.80", "publish": null,
             "features": {"default": ["x"], "x": [], "y": []}, "targets": [{"kind": ["lib"]}]},
            {"id": "a", "name": "a", "version": "1.0.0", "rust_version": "1.70", "publish": null,
             "features": {}, "targets": [{"kind": ["lib"]}]},
            {"id": "b", "name": "b", "version": "2.0.0", "rust_version": "1.85.0", "publish": null,
             "features": {}, "targets": [{"kind": ["lib"]}]},
            {"id": "c", "name": "c", "version": "3.0.0", "rust_version": "1.60", "publish": null,
             "features": {}, "targets": [{"kind": ["lib"]}]},
            {"id": "d", "name": "d", "version": "4.0.0", "rust_version": "1.99", "publish": null,
             "features": {}, "targets": [{"kind": ["lib"]}]}
        ],
        "workspace_members": ["app"],
        "resolve": {"nodes": [
            {"id": "app", "deps": [
                {"pkg": "a", "dep_kinds": [{"kind": null}]},
                {"pkg": "c", "dep_kinds": [{"kind": "dev"}]}]},
            {"id": "a", "deps": [{"pkg": "b", "dep_kinds": [{"kind": null}, {"kind": "dev"}]}]},
            {"id": "b", "deps": []},
            {"id": "c", "deps": [{"pkg": "d", "dep_kinds": [{"kind": "dev"}]}]},
            {"id": "d", "deps": []}
        ]}
    }"#;

    #[test]
    fn finds_dependencies_that_need_a_newer_rust() {
        let metadata = Metadata::parse(GRAPH).unwrap();
        let app = metadata.members().next().unwrap();
        assert_eq!(app.features, ["x", "y"]);
        assert_eq!(app.enabled(&[], true), app.enabled(&["x".to_owned()], false));
        assert_ne!(app.enabled(&[], true), app.enabled(&[], false));
        assert!(app.has_default && app.publishable && app.has_lib);
        let deps = metadata.dependencies_of("app");
        assert_eq!(deps.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(deps["b"], "b 2.0.0 <- a 1.0.0 <- app 0.1.0");
        let check = metadata.msrv_check();
        assert_eq!(
            check.too_new,
            ["app declares rust-version 1.80, but b 2.0.0 <- a 1.0.0 <- app 0.1.0 needs 1.85"]
        );
        assert_eq!(check.highest.unwrap().0, RustVersion::parse("1.85").unwrap());
    }

    #[test]
    fn reads_this_workspace() {
        let metadata = Metadata::load().unwrap();
        let core = metadata.members().find(|p| p.name == "session-core").unwrap();
        assert!(core.publishable && core.has_lib);
        assert!(core.features.contains(&"json".to_owned()));
        assert!(!core.features.contains(&"default".to_owned()));
        let xtask = metadata.members().find(|p| p.name == "xtask").unwrap();
        assert!(!xtask.publishable && !xtask.has_lib);
        let deps = metadata.dependencies_of(&core.id);
        assert!(deps.values().any(|chain| chain.starts_with("serde ")));
    }
}
