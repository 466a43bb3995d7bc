//! The audit log: one entry per mutating call to the operator API (who, when, what, the
//! outcome, the request id, and what the handler says changed), chained by hash so an edited,
//! removed or reordered entry shows. The chain is only as trustworthy as its head: `fleetctl
//! audit verify` prints the head hash for the operator to keep elsewhere and compare later
//! (`--expect-head`), since whoever can rewrite the database could rewrite the whole chain.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a call did, as the API records it (before it is sealed into the chain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Unix seconds.
    pub at: i64,
    /// The operator's token name (`device:<id>` for an enrollment).
    pub actor: String,
    /// The operator's role, if an operator called.
    pub role: Option<String>,
    pub method: String,
    /// The route as declared (`/api/v1/devices/{id}`).
    pub route: String,
    /// The path called, without its query.
    pub path: String,
    /// The HTTP status answered: refusals are recorded too.
    pub status: u16,
    pub request_id: String,
    /// What the handler says it acted on (`device dev-01`), when it says.
    pub subject: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

/// A record sealed into the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// 1, 2, 3, ... with no gaps (pruning removes the oldest only).
    pub seq: u64,
    #[serde(flatten)]
    pub record: AuditRecord,
    /// The previous entry's hash (64 zeros for the first).
    pub prev_hash: String,
    /// sha256 of `prev_hash` and this entry's record and sequence number.
    pub hash: String,
}

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Seals `record` as the entry after `last` (`None`: the first entry).
pub fn seal(last: Option<(u64, &str)>, record: AuditRecord) -> AuditEntry {
    let (seq, prev_hash) = match last {
        Some((seq, hash)) => (seq + 1, hash.to_owned()),
        None => (1, GENESIS.to_owned()),
    };
    let hash = hash_of(seq, &prev_hash, &record);
    AuditEntry {
        seq,
        record,
        prev_hash,
        hash,
    }
}

/// A stored entry that no longer decodes: kept in the walk so [`verify`] names it.
pub fn unreadable(seq: u64) -> AuditEntry {
    AuditEntry {
        seq,
        record: AuditRecord {
            at: 0,
            actor: String::new(),
            role: None,
            method: String::new(),
            route: String::new(),
            path: String::new(),
            status: 0,
            request_id: String::new(),
            subject: None,
            before: None,
            after: None,
        },
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn hash_of(seq: u64, prev_hash: &str, record: &AuditRecord) -> String {
    // serde_json writes a struct's fields in declaration order and a `Value`'s maps sorted, so
    // the same record always hashes the same.
    let body = serde_json::to_string(record).unwrap_or_default();
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    digest.update(prev_hash.as_bytes());
    digest.update(b"\n");
    digest.update(seq.to_string().as_bytes());
    digest.update(b"\n");
    digest.update(body.as_bytes());
    hex::encode(digest.finish().as_ref())
}

/// Which entries `GET /api/v1/audit` returns, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// A route as declared, e.g. `/api/v1/devices/{id}`.
    pub route: Option<String>,
    /// Unix seconds.
    pub since: Option<i64>,
    /// Entries before this sequence number (paging back).
    pub before: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

impl AuditFilter {
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

/// What a walk of the chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChainCheck {
    pub entries: u64,
    /// The oldest entry kept (older ones were pruned by retention), if any.
    pub first_seq: Option<u64>,
    pub head_seq: Option<u64>,
    /// Keep this somewhere else: a later check that finds another head at the same sequence
    /// number means the log was rewritten.
    pub head_hash: Option<String>,
    /// The first entry that does not follow from the one before it, and why.
    pub broken: Option<Broken>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Broken {
    pub seq: u64,
    pub reason: String,
}

/// Walks `entries` (oldest first). The first entry kept is trusted as the anchor when older ones
/// were pruned; every later one must carry the previous entry's hash, the next sequence number
/// and a hash that matches its own content.
pub fn verify(entries: &[AuditEntry]) -> ChainCheck {
    let mut broken = None;
    let mut previous: Option<&AuditEntry> = None;
    for entry in entries {
        let problem = match previous {
            _ if entry.hash.is_empty() => Some("cannot be read (edited)".to_owned()),
            None if entry.seq == 1 && entry.prev_hash != GENESIS => {
                Some("the first entry does not start the chain".to_owned())
            }
            Some(p) if entry.seq != p.seq + 1 => Some(format!(
                "follows entry {} (entries between are missing or reordered)",
                p.seq
            )),
            Some(p) if entry.prev_hash != p.hash => {
                Some(format!("does not carry entry {}'s hash", p.seq))
            }
            _ if hash_of(entry.seq, &entry.prev_hash, &entry.record) != entry.hash => {
                Some("its content does not match its hash (edited)".to_owned())
            }
            _ => None,
        };
        if let Some(reason) = problem {
            broken = Some(Broken {
                seq: entry.seq,
                reason,
            });
            break;
        }
        previous = Some(entry);
    }
    ChainCheck {
        entries: entries.len() as u64,
        first_seq: entries.first().map(|e| e.seq),
        head_seq: entries.last().map(|e| e.seq),
        head_hash: entries.last().map(|e| e.hash.clone()),
        broken,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(i: i64) -> AuditRecord {
        AuditRecord {
            at: 1_800_000_000 + i,
            actor: "alice".into(),
            role: Some("operator".into()),
            method: "PATCH".into(),
            route: "/api/v1/devices/{id}".into(),
            path: format!("/api/v1/devices/dev-{i}"),
            status: 200,
            request_id: format!("req-{i}"),
            subject: Some(format!("device dev-{i}")),
            before: Some(serde_json::json!({"group": "lab"})),
            after: Some(serde_json::json!({"group": "prod"})),
        }
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for i in 0..n {
            let last = out.last().map(|e| (e.seq, e.hash.as_str()));
            let entry = seal(last, record(i));
            out.push(entry);
        }
        out
    }

    #[test]
    fn an_untouched_chain_verifies_and_names_its_head() {
        let entries = chain(5);
        let check = verify(&entries);
        assert_eq!(check.broken, None);
        assert_eq!((check.first_seq, check.head_seq), (Some(1), Some(5)));
        assert_eq!(check.head_hash.as_deref(), Some(entries[4].hash.as_str()));
        assert_eq!(entries[0].prev_hash, GENESIS);
    }

    #[test]
    fn an_edited_entry_is_found() {
        let mut entries = chain(5);
        entries[2].record.actor = "mallory".into();
        let broken = verify(&entries).broken.unwrap();
        assert_eq!(broken.seq, 3);
        assert!(broken.reason.contains("edited"), "{broken:?}");
    }

    #[test]
    fn an_edit_that_rehashes_the_entry_breaks_the_next_link() {
        let mut entries = chain(5);
        entries[2].record.status = 403;
        entries[2].hash = hash_of(3, &entries[2].prev_hash.clone(), &entries[2].record);
        let broken = verify(&entries).broken.unwrap();
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("entry 3's hash"), "{broken:?}");
    }

    #[test]
    fn a_removed_or_reordered_entry_is_found_and_pruning_the_oldest_is_not() {
        let mut removed = chain(5);
        removed.remove(2);
        assert_eq!(verify(&removed).broken.unwrap().seq, 4);
        let mut reordered = chain(5);
        reordered.swap(1, 2);
        assert!(verify(&reordered).broken.is_some());
        let pruned = chain(5).split_off(2);
        let check = verify(&pruned);
        assert_eq!(check.broken, None);
        assert_eq!(check.first_seq, Some(3));
        assert!(verify(&[]).broken.is_none());
        let mut garbled = chain(3);
        garbled[1] = unreadable(2);
        let broken = verify(&garbled).broken.unwrap();
        assert_eq!(
            (broken.seq, broken.reason.as_str()),
            (2, "cannot be read (edited)")
        );
    }
}
