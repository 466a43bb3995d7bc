use std::collections::HashMap;

use super::*;
use crate::metadata::{Common, Delegations};

#[test]
fn patterns_match_segment_by_segment_as_the_specification_shows() {
    // The specification's own examples (§2.1.2, "paths").
    assert!(path_matches("targets/*.tgz", "targets/foo.tgz"));
    assert!(!path_matches("targets/*.tgz", "targets/foo.txt"));
    assert!(path_matches("foo-version-?.tgz", "foo-version-2.tgz"));
    assert!(!path_matches("foo-version-?.tgz", "foo-version-alpha.tgz"));
    // `*` and `?` never cross a separator, and the segment counts must agree.
    assert!(!path_matches("*", "a/b"));
    assert!(path_matches("*/*", "a/b"));
    assert!(!path_matches("a/?", "a/bc"));
    assert!(!path_matches("a?b", "a/b"));
    assert!(path_matches("*", ""));
    // Case-sensitive, whatever the platform.
    assert!(!path_matches("Targets/*", "targets/a"));
    // Classes as Python's fnmatch reads them.
    assert!(path_matches("file[0-9].txt", "file7.txt"));
    assert!(!path_matches("file[!0-9].txt", "file7.txt"));
    assert!(path_matches("file[!0-9].txt", "fileX.txt"));
    assert!(path_matches("a[]]b", "a]b"));
    assert!(
        path_matches("a[b", "a[b"),
        "an unclosed class is a literal ["
    );
    assert!(path_matches("*.tar.*", "x.tar.gz"));
    assert!(!path_matches("*.tar.*", "x.tgz"));
}

#[test]
fn a_hostile_pattern_is_matched_in_bounded_time() {
    let pattern = "*a".repeat(200);
    let text = "a".repeat(5000);
    assert!(path_matches(&pattern, &text));
    assert!(!path_matches(&format!("{pattern}b"), &text));
}

fn role(name: &str, paths: &[&str], terminating: bool) -> DelegatedRole {
    DelegatedRole {
        name: name.into(),
        keyids: vec![],
        threshold: 1,
        terminating,
        paths: Some(paths.iter().map(|p| p.to_string()).collect()),
        path_hash_prefixes: None,
    }
}

fn targets(listed: &[&str], delegations: Vec<DelegatedRole>) -> Targets {
    Targets {
        common: Common {
            kind: "targets".into(),
            spec_version: "1.0.0".into(),
            version: 1,
            expires: jiff::Timestamp::MAX,
        },
        targets: listed
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    crate::metadata::TargetFile {
                        length: 0,
                        hashes: Default::default(),
                        custom: None,
                    },
                )
            })
            .collect(),
        delegations: (!delegations.is_empty()).then(|| Delegations {
            keys: HashMap::new(),
            roles: delegations,
        }),
    }
}

/// Runs a search over an in-memory graph; returns the roles visited in order and the answer.
fn run(graph: &HashMap<&str, Targets>, path: &str) -> (Vec<String>, Option<String>) {
    let mut search = Search::new(path);
    let mut order = Vec::new();
    while let Some(visit) = search.next_role() {
        order.push(visit.role.clone());
        if search.visit(&visit, &graph[visit.role.as_str()]) {
            return (order, Some(visit.role));
        }
    }
    (order, None)
}

#[test]
fn roles_are_visited_depth_first_in_listed_order() {
    let graph = HashMap::from([
        (
            "targets",
            targets(
                &[],
                vec![role("A", &["*"], false), role("B", &["*"], false)],
            ),
        ),
        (
            "A",
            targets(
                &[],
                vec![role("C", &["*"], false), role("D", &["*"], false)],
            ),
        ),
        ("B", targets(&["x"], vec![])),
        ("C", targets(&[], vec![])),
        ("D", targets(&[], vec![])),
    ]);
    assert_eq!(
        run(&graph, "x"),
        (
            vec!["targets", "A", "C", "D", "B"]
                .into_iter()
                .map(String::from)
                .collect(),
            Some("B".into())
        )
    );
}

#[test]
fn a_terminating_match_ends_the_search_below_it() {
    let graph = HashMap::from([
        (
            "targets",
            targets(&[], vec![role("A", &["*"], true), role("B", &["*"], false)]),
        ),
        ("A", targets(&[], vec![role("C", &["*"], false)])),
        ("B", targets(&["x"], vec![])),
        ("C", targets(&[], vec![])),
    ]);
    let (order, found) = run(&graph, "x");
    assert_eq!(order, ["targets", "A", "C"]);
    assert_eq!(found, None, "B must not answer: A was terminating");
}

#[test]
fn branches_whose_paths_do_not_match_are_never_loaded() {
    let graph = HashMap::from([
        (
            "targets",
            targets(
                &[],
                vec![role("A", &["a/*"], false), role("B", &["b/*"], false)],
            ),
        ),
        ("A", targets(&["a/x"], vec![])),
        ("B", targets(&["b/x"], vec![])),
    ]);
    assert_eq!(run(&graph, "b/x").0, ["targets", "B"]);
    assert_eq!(run(&graph, "c/x"), (vec!["targets".to_string()], None));
}

#[test]
fn a_role_never_answers_for_a_path_outside_what_it_was_delegated() {
    // The churn role lists a vision target (a churn-only key signing another model's release):
    // no search for that path ever reaches it.
    let graph = HashMap::from([
        (
            "targets",
            targets(
                &[],
                vec![
                    role("model-churn", &["models/churn/*/*"], true),
                    role("model-vision", &["models/vision/*/*"], true),
                ],
            ),
        ),
        (
            "model-churn",
            targets(&["models/vision/9.0.0/model.onnx"], vec![]),
        ),
        ("model-vision", targets(&[], vec![])),
    ]);
    let (order, found) = run(&graph, "models/vision/9.0.0/model.onnx");
    assert_eq!(order, ["targets", "model-vision"]);
    assert_eq!(found, None);
}

#[test]
fn a_role_reached_twice_is_visited_once_and_cycles_end() {
    let graph = HashMap::from([
        (
            "targets",
            targets(
                &[],
                vec![role("A", &["*"], false), role("B", &["*"], false)],
            ),
        ),
        ("A", targets(&[], vec![role("C", &["*"], false)])),
        (
            "B",
            targets(
                &[],
                vec![role("C", &["*"], false), role("targets", &["*"], false)],
            ),
        ),
        ("C", targets(&[], vec![role("A", &["*"], false)])),
    ]);
    assert_eq!(
        run(&graph, "x"),
        (
            ["targets", "A", "C", "B"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            None
        )
    );
}

#[test]
fn the_search_stops_after_the_delegation_bound() {
    // A chain longer than the bound: targets -> r0 -> r1 -> ... ; the target sits at its end.
    let mut graph = HashMap::new();
    let names: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    graph.insert("targets", targets(&[], vec![role("r0", &["*"], false)]));
    for i in 0..40 {
        let next = names
            .get(i + 1)
            .map(|n| vec![role(n, &["*"], false)])
            .unwrap_or_default();
        let listed: &[&str] = if i == 39 { &["x"] } else { &[] };
        graph.insert(names[i].as_str(), targets(listed, next));
    }
    let (order, found) = run(&graph, "x");
    assert_eq!(order.len(), MAX_DELEGATIONS);
    assert_eq!(found, None);
}

#[test]
fn hash_prefixes_delegate_by_the_sha256_of_the_path() {
    let digest = hex::encode(crate::sha256(b"models/churn/1/model.onnx"));
    let mut bin = role("bin", &[], false);
    bin.paths = None;
    bin.path_hash_prefixes = Some(vec![digest[..2].to_string()]);
    assert!(delegates(&bin, "models/churn/1/model.onnx"));
    bin.path_hash_prefixes = Some(vec![if digest.starts_with('0') { "1" } else { "0" }.into()]);
    assert!(!delegates(&bin, "models/churn/1/model.onnx"));
}

mod properties {
    use proptest::prelude::*;

    use super::super::path_matches;

    fn segment() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._*?\\[\\]!-]{0,8}"
    }

    proptest! {
        /// Without wildcards a pattern is the path itself.
        #[test]
        fn a_literal_pattern_matches_only_itself(a in "[a-z0-9./-]{0,20}", b in "[a-z0-9./-]{0,20}") {
            prop_assert_eq!(path_matches(&a, &b), a == b);
        }

        /// `*` segments match any path with as many segments, and no other.
        #[test]
        fn star_segments_match_by_segment_count(parts in proptest::collection::vec(segment(), 1..5), extra in 0usize..3) {
            let path = parts.join("/");
            let stars = vec!["*"; parts.len() + extra].join("/");
            prop_assert_eq!(path_matches(&stars, &path), extra == 0);
        }

        /// Whatever the pattern, matching ends and never panics.
        #[test]
        fn any_pattern_is_answered(pattern in "[a-c*?\\[\\]!/-]{0,24}", path in "[a-c/\\[\\]-]{0,24}") {
            let _ = path_matches(&pattern, &path);
        }
    }
}
