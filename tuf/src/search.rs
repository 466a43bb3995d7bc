//! Which targets role says what a target path is (§5.7.7): a pre-order depth-first search from
//! `targets`, visiting a role's delegations in the order they are listed, only those whose paths
//! match, stopping at a terminating match, each role at most once and at most
//! [`MAX_DELEGATIONS`] roles in all. The search is a state machine with no I/O: the caller loads
//! each role it asks for (lazily, from disk or the network) and reports what it holds.

use crate::metadata::{DelegatedRole, Targets};

/// The most roles one search visits, as python-tuf and go-tuf bound it: a repository cannot
/// make a device fetch metadata without end.
pub const MAX_DELEGATIONS: usize = 32;

/// A role to visit next: its name and the role that delegated it (`root` for `targets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    pub role: String,
    pub delegator: String,
}

#[derive(Debug)]
pub struct Search {
    path: String,
    stack: Vec<Visit>,
    visited: Vec<String>,
}

impl Search {
    pub fn new(path: &str) -> Self {
        Search {
            path: path.to_string(),
            stack: vec![Visit {
                role: "targets".into(),
                delegator: "root".into(),
            }],
            visited: Vec::new(),
        }
    }

    /// The next role to load and show to [`Search::visit`]; `None` when the search is over
    /// without a match.
    pub fn next_role(&mut self) -> Option<Visit> {
        while self.visited.len() < MAX_DELEGATIONS {
            let next = self.stack.pop()?;
            if !self.visited.contains(&next.role) {
                return Some(next);
            }
        }
        None
    }

    /// Shows the search the role `visit` names. Returns true if that role lists the path (the
    /// answer); otherwise queues the delegations to look at next.
    pub fn visit(&mut self, visit: &Visit, role: &Targets) -> bool {
        if role.targets.contains_key(&self.path) {
            return true;
        }
        self.visited.push(visit.role.clone());
        let Some(delegations) = &role.delegations else {
            return false;
        };
        let mut children = Vec::new();
        for child in &delegations.roles {
            if !delegates(child, &self.path) {
                continue;
            }
            children.push(Visit {
                role: child.name.clone(),
                delegator: visit.role.clone(),
            });
            if child.terminating {
                // Nothing else still waiting may answer for this path.
                self.stack.clear();
                break;
            }
        }
        self.stack.extend(children.into_iter().rev());
        false
    }
}

/// Whether `role` is trusted for `path`: a path pattern matching it segment by segment, or a
/// prefix of the hex sha256 of the path.
pub fn delegates(role: &DelegatedRole, path: &str) -> bool {
    if let Some(patterns) = &role.paths {
        return patterns.iter().any(|p| path_matches(p, path));
    }
    if let Some(prefixes) = &role.path_hash_prefixes {
        let digest = hex::encode(crate::sha256(path.as_bytes()));
        return prefixes.iter().any(|p| digest.starts_with(p.as_str()));
    }
    false
}

/// Shell-style matching per `/`-separated segment (`*` and `?` never cross a `/`, the segment
/// counts must agree), case-sensitive, with `[abc]`, `[a-z]` and `[!abc]` classes.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let patterns: Vec<&str> = pattern.split('/').collect();
    let parts: Vec<&str> = path.split('/').collect();
    patterns.len() == parts.len()
        && patterns.iter().zip(&parts).all(|(p, s)| {
            segment_matches(
                &p.chars().collect::<Vec<_>>(),
                &s.chars().collect::<Vec<_>>(),
            )
        })
}

fn segment_matches(pattern: &[char], text: &[char]) -> bool {
    // Iterative matching with one backtrack point for the last `*`: linear in practice, and no
    // recursion a hostile pattern could deepen.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') => class(pattern, p, text[t]),
            Some(c) if *c == text[t] => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((star_p, star_t))) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Matches `c` against the class starting at `pattern[open]` (a `[`). Returns the index after the
/// class on a match. A `[` with no closing `]` is a literal `[`, as in Python's fnmatch; a `]`
/// first in the class is a member, not its end.
fn class(pattern: &[char], open: usize, c: char) -> Option<usize> {
    let negated = pattern.get(open + 1) == Some(&'!');
    let first = open + 1 + usize::from(negated);
    let Some(close) = (first + 1..pattern.len()).find(|&j| pattern[j] == ']') else {
        return (c == '[').then_some(open + 1);
    };
    let items = &pattern[first..close];
    let mut matched = false;
    let mut k = 0;
    while k < items.len() {
        if k + 2 < items.len() && items[k + 1] == '-' {
            matched |= items[k] <= c && c <= items[k + 2];
            k += 3;
        } else {
            matched |= items[k] == c;
            k += 1;
        }
    }
    (matched != negated).then_some(close + 1)
}

#[cfg(test)]
mod tests;
