//! The house rules of docs/ARCHITECTURE.md, checked on the source: which room may import which.
//! A rule broken here fails the build's tests with the file and line that broke it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn src(room: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(room)
}

/// The code of a file without its comments (a doc comment may name any room).
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let code = line
                .split("//")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            (!code.is_empty()).then_some((i + 1, code))
        })
        .collect()
}

/// Every line of the room's files that contains one of `forbidden`, as `file:line: code`.
fn offending(room: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let files = if room.ends_with(".rs") {
        vec![src(room)]
    } else {
        rust_files(&src(room))
    };
    for file in files {
        for (n, code) in code_lines(&file) {
            if forbidden.iter().any(|f| code.contains(f)) {
                found.push(format!("{}:{n}: {code}", file.display()));
            }
        }
    }
    found
}

#[test]
fn billing_is_pure() {
    let found = offending(
        "billing",
        &[
            "crate::config",
            "crate::db",
            "crate::stripe",
            "crate::api",
            "crate::service",
            "crate::state",
            "crate::startup",
            "crate::identity",
            "crate::outbound",
            "actix_web",
            "diesel",
            "tracing::",
            "Utc::now",
        ],
    );
    assert!(
        found.is_empty(),
        "billing/ must stay pure:\n{}",
        found.join("\n")
    );
}

#[test]
fn services_speak_no_http_and_read_no_settings() {
    let found = offending(
        "service",
        &[
            "actix_web",
            "StatusCode",
            "ApiError",
            "crate::api",
            "crate::config",
            ".settings",
        ],
    );
    assert!(
        found.is_empty(),
        "src/service must not speak HTTP nor read the settings (AppState builds what use cases need):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_boundaries_do_not_reach_up_to_the_application_state() {
    for room in ["db", "stripe", "outbound", "github", "config.rs"] {
        let found = offending(room, &["crate::state", "crate::service", "crate::api"]);
        assert!(found.is_empty(), "{room} reaches up:\n{}", found.join("\n"));
    }
}

#[test]
fn service_modules_import_each_other_without_a_circle() {
    let dir = src("service");
    let modules: BTreeSet<String> = rust_files(&dir)
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|m| m != "mod")
        .collect();
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in &modules {
        let file = dir.join(format!("{module}.rs"));
        let text: String = code_lines(&file)
            .into_iter()
            .map(|(_, code)| code + "\n")
            .collect();
        assert!(
            !text.contains("super::{") && !text.contains("crate::service::{"),
            "{}: import service modules one path each (`use super::x::...`), so this check sees them",
            file.display()
        );
        let used = modules
            .iter()
            .filter(|other| *other != module)
            .filter(|other| {
                text.contains(&format!("super::{other}::"))
                    || text.contains(&format!("crate::service::{other}::"))
            })
            .cloned()
            .collect();
        imports.insert(module.clone(), used);
    }
    // Depth-first search for a module reachable from itself.
    fn reaches(
        imports: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        target: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        imports[from].iter().any(|next| {
            next == target || (seen.insert(next.clone()) && reaches(imports, next, target, seen))
        })
    }
    for module in &modules {
        assert!(
            !reaches(&imports, module, module, &mut BTreeSet::new()),
            "service::{module} imports itself through other service modules: {imports:?}"
        );
    }
    // The check sees imports at all (it would pass vacuously on a parser that found none).
    assert!(
        imports.values().any(|used| !used.is_empty()),
        "no import between service modules found: {imports:?}"
    );
}
