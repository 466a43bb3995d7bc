//! The module graph of every crate in the workspace has no cycle: a module that needs another
//! must not be needed by it (directly or through others). Read from the sources (`crate::x`
//! paths outside comments and test modules), so a change that brings a cycle back fails here
//! with the modules and files that form it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &[
    "protocol",
    "sealed",
    "files",
    "clock",
    "rollout",
    "onnx-graph",
    "inference",
    "tuf",
    "agent",
    "fleet-server",
    "fleetctl",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comment lines and without `#[cfg(test)]` items (a test module may use
/// anything).
fn production_code(text: &str) -> String {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = String::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let brace = item.find('{');
        let semicolon = item.find(';');
        match (brace, semicolon) {
            (_, Some(s)) if brace.is_none_or(|b| s < b) => rest = &item[s + 1..],
            (Some(b), _) => {
                let mut depth = 0usize;
                let mut end = item.len();
                for (i, c) in item[b..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + i + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                rest = &item[end..];
            }
            _ => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// `crate::<name>` paths in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .filter(|(at, _)| {
            // Not `edgefleet_crate::` or the like.
            !code[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(|(at, m)| {
            code[at + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// Top-level module → (module it uses → a file where it does).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn module_graph(krate: &str) -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(!files.is_empty(), "{}: no sources", src.display());
    let mut graph = Graph::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_owned();
        if matches!(module.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let uses = crate_paths(&production_code(&std::fs::read_to_string(file).unwrap()));
        let entry = graph.entry(module.clone()).or_default();
        for used in uses.into_iter().filter(|u| *u != module) {
            entry
                .entry(used)
                .or_insert_with(|| relative.display().to_string());
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m, _| modules.contains(m));
    }
    graph
}

/// A cycle through the graph, if there is one, as the modules along it.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = path.iter().position(|m| m == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|uses| uses.keys()) {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

#[test]
fn no_crate_has_a_module_cycle() {
    let mut found = Vec::new();
    for krate in CRATES {
        let graph = module_graph(krate);
        if let Some(cycle) = find_cycle(&graph) {
            let edges: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} (in {})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            found.push(format!("{krate}: {}", edges.join(", ")));
        }
    }
    assert!(
        found.is_empty(),
        "module cycles (break each by moving what both need into a module of its own):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_reader_sees_paths_and_skips_comments_and_tests() {
    let code = production_code(
        "use crate::a::X;\n// crate::commented\nlet y = edgefleet_crate::no;\n\
         #[cfg(test)]\nmod tests { use crate::in_test; fn f() { {} } }\n\
         #[cfg(test)]\nuse crate::test_import;\nfn g() { crate::b::call(); }",
    );
    assert_eq!(
        crate_paths(&code),
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    );
    let mut graph = Graph::new();
    graph.insert("a".into(), BTreeMap::from([("b".into(), "a.rs".into())]));
    graph.insert("b".into(), BTreeMap::from([("c".into(), "b.rs".into())]));
    graph.insert("c".into(), BTreeMap::from([("a".into(), "c.rs".into())]));
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    graph.get_mut("c").unwrap().clear();
    assert_eq!(find_cycle(&graph), None);
}
