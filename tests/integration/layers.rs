//! The house rules of docs/architecture.md, checked on the sources and the crate graph: no two
//! modules of a crate import each other (directly or around a cycle), the engine and node crates
//! keep their dependencies, and no function outside tests returns `Result<_, String>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CRATES: [&str; 7] = ["src", "core/src", "engine/src", "node/src", "planner/src", "deployment/src", "synth/src"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file defines, as a path from the crate root (`[]` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of a file without its `#[cfg(test)]` part and its comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Module paths named by `crate::a::b`, `super::a` and `crate::{a, b::c}` in `code`, resolved
/// from module `at`.
fn references(code: &str, at: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident =
        |s: &str| s.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).next().unwrap_or("").to_string();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", at[..at.len().saturating_sub(1)].to_vec())] {
        for (i, _) in code.match_indices(prefix) {
            // `crate::` inside another path (`$crate::`, `foo_crate::`) is not ours.
            if code[..i].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            let paths: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                group.split('}').next().unwrap_or("").split(',').map(|p| ident(p.trim())).collect()
            } else {
                vec![ident(rest)]
            };
            for p in paths {
                let mut path = base.clone();
                path.extend(p.split("::").filter(|s| !s.is_empty() && *s != "self").map(str::to_string));
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn no_two_modules_import_each_other() {
    let (mut problems, mut seen_edges) = (Vec::new(), 0);
    for krate in CRATES {
        let src = Path::new(ROOT).join(krate);
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for f in &files {
            let from = module_of(&src, f);
            for path in references(&code(&std::fs::read_to_string(f).unwrap()), &from) {
                // The longest known module the path starts with.
                let Some(to) = (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| modules.contains(m)) else {
                    continue;
                };
                // A module and its ancestors share items by design (`mod` and `super::`).
                if to.starts_with(&from) || from.starts_with(&to) {
                    continue;
                }
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
        // Every cycle passes through an edge a → b with a path b → … → a.
        for (a, targets) in &edges {
            for b in targets {
                let mut seen = BTreeSet::new();
                let mut stack = vec![(b.clone(), vec![a.join("::"), b.join("::")])];
                while let Some((m, trail)) = stack.pop() {
                    if &m == a {
                        problems.push(format!("{krate}: {}", trail.join(" → ")));
                        break;
                    }
                    if seen.insert(m.clone()) {
                        for n in edges.get(&m).into_iter().flatten() {
                            let mut t = trail.clone();
                            t.push(n.join("::"));
                            stack.push((n.clone(), t));
                        }
                    }
                }
            }
        }
        seen_edges += edges.values().map(BTreeSet::len).sum::<usize>();
    }
    assert!(seen_edges > 30, "only {seen_edges} imports between modules found: is the scan broken?");
    assert!(problems.is_empty(), "import cycles:\n{}", problems.join("\n"));
}

#[test]
fn the_scan_sees_imports_and_cycles() {
    let at = vec!["http".to_string(), "predictions".to_string()];
    let refs =
        references("use crate::http::error::{ApiError};\nuse super::state::AppState;\nuse crate::{a, b::c};", &at);
    assert!(refs.contains(&vec!["http".into(), "error".into()]), "{refs:?}");
    assert!(refs.contains(&vec!["http".into(), "state".into(), "AppState".into()]));
    assert!(refs.contains(&vec!["b".into(), "c".into()]));
    assert!(references("macro_rules! m { () => { $crate::x } }", &at).is_empty());
}

/// Packages in the normal dependency tree of workspace package `package`.
fn dependency_tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(ROOT)
        .args(["tree", "--offline", "--locked", "-e", "normal", "--prefix", "none", "-p", package])
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_engine_and_node_crates_keep_their_dependencies() {
    let forbidden = |package: &str, names: &[&str]| {
        let tree = dependency_tree(package);
        for line in tree.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            assert!(!names.iter().any(|n| name.starts_with(n)), "{package} depends on {name}");
        }
    };
    forbidden("stowage-engine", &["actix", "aws-", "stowage-node", "stowage-planner", "tokio", "good_lp"]);
    forbidden("stowage-node", &["actix", "stowage-planner", "stowage-deployment", "good_lp", "k8s-openapi"]);
    forbidden("stowage-core", &["actix", "aws-", "tract", "ort", "good_lp", "tokio"]);
    forbidden("stowage-planner", &["actix", "aws-", "tract", "ort", "tokio", "k8s-openapi"]);
    // Synthetic models need no solver: the instance types they are planned on live in core.
    forbidden("stowage-synth", &["stowage-planner", "good_lp", "coin_cbc", "actix", "tokio"]);
}

/// `crate::…` modules named by the code of every file under `dir` (relative to `src`).
fn imports_under(src: &Path, dir: &str) -> Vec<(String, Vec<String>)> {
    let mut files = Vec::new();
    rust_files(&src.join(dir), &mut files);
    let mut out = Vec::new();
    for f in files {
        let from = module_of(src, &f);
        for path in references(&code(&std::fs::read_to_string(&f).unwrap()), &from) {
            out.push((from.join("::"), path));
        }
    }
    out
}

#[test]
fn the_node_crate_keeps_its_two_flows_apart() {
    let src = Path::new(ROOT).join("node/src");
    for dir in ["serve", "lifecycle"] {
        assert!(src.join(dir).join("mod.rs").is_file(), "node/src/{dir}/mod.rs is missing");
    }
    let mut problems = Vec::new();
    // The request path uses a model's entry, its loaded engine and the cold pool that loads it
    // on demand; never the machinery that names, fetches or reloads models.
    for (from, to) in imports_under(&src, "serve") {
        if to.first().is_some_and(|m| m == "lifecycle")
            && !matches!(to.get(1).map(String::as_str), Some("load" | "registry" | "cold"))
        {
            problems.push(format!("{from} → {}", to.join("::")));
        }
    }
    // A model's life holds the data requests are made of (its queue, admission, tokenizer),
    // never the request call itself or the threads that run it.
    for (from, to) in imports_under(&src, "lifecycle") {
        if to.first().is_some_and(|m| m == "serve") && matches!(to.get(1).map(String::as_str), Some("predict" | "pool"))
        {
            problems.push(format!("{from} → {}", to.join("::")));
        }
    }
    assert!(problems.is_empty(), "imports across the node's flows:\n{}", problems.join("\n"));
}

#[test]
fn the_http_layer_constructs_no_part_of_the_node() {
    // The node is assembled by stowage_node::start; src/http/ binds, routes and renders.
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src/http"), &mut files);
    let mut found = Vec::new();
    for f in files {
        let code = code(&std::fs::read_to_string(&f).unwrap());
        for part in ["Registry::new", "Node::new", "Pool::new", "Reconciler::new", "ColdPool::new", "Loader::new"] {
            if code.contains(part) {
                found.push(format!("{}: {part}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "construction in the HTTP layer:\n{}", found.join("\n"));
}

#[test]
fn no_function_outside_tests_returns_a_string_error() {
    let mut found = Vec::new();
    for krate in CRATES.iter().chain(&["examples", "benches"]) {
        let mut files = Vec::new();
        rust_files(&Path::new(ROOT).join(krate), &mut files);
        for f in files {
            let code = code(&std::fs::read_to_string(&f).unwrap());
            for (n, line) in code.lines().enumerate() {
                let compact: String = line.split_whitespace().collect();
                if compact.contains(",String>") && compact.contains("Result<") {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "Result<_, String> outside tests (use a typed error):\n{}", found.join("\n"));
}
