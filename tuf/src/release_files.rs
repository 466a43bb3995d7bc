//! Golden cases and baselines as files named by hash from a release's signed metadata
//! ([`edgefleet_protocol::release_files`]): cut out where the operator signs ([`detach`]), put
//! back where a device fetched them ([`attach`]), each checked against the length and sha256
//! the signature covers.

use edgefleet_protocol::baseline::Baseline;
use edgefleet_protocol::release_files::{FileRef, GoldenFile, ReleaseFileKind, release_file_name};
use edgefleet_protocol::target::ModelTargetMeta;

use crate::{Error, sha256};

/// A release file cut out of the metadata, to be stored beside the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachedFile {
    pub kind: ReleaseFileKind,
    /// `models/<model>/<version>/<file>`.
    pub name: String,
    pub bytes: Vec<u8>,
    pub sha256_hex: String,
}

/// Moves the golden cases and the baseline of `meta` into files and names each by length and
/// sha256 in `meta` instead. Anything already named stays as it is. Files larger than
/// `max_bytes` are refused with the size, so the operator sees what to trim or allow.
pub fn detach(meta: &mut ModelTargetMeta, max_bytes: u64) -> Result<Vec<DetachedFile>, Error> {
    let release = meta.target_name();
    let mut files = Vec::new();
    for kind in ReleaseFileKind::ALL {
        if meta.files.get(kind).is_some() {
            continue;
        }
        let bytes = match kind {
            ReleaseFileKind::Golden if !meta.health.cases.is_empty() => {
                serde_json::to_vec(&GoldenFile {
                    cases: meta.health.cases.clone(),
                })
            }
            ReleaseFileKind::Baseline => match &meta.baseline {
                Some(baseline) => serde_json::to_vec(baseline),
                None => continue,
            },
            ReleaseFileKind::Golden | ReleaseFileKind::Card => continue,
        }
        .map_err(|e| Error::malformed(format!("{release} {kind}"), e))?;
        if bytes.len() as u64 > max_bytes {
            return Err(Error::Target {
                name: release_file_name(&release, kind),
                detail: format!(
                    "{} bytes, over the limit of {max_bytes}; use fewer or generated golden \
                     inputs, or raise the limit (fleetctl push --max-release-file-mib)",
                    bytes.len()
                ),
            });
        }
        let sha256_hex = hex::encode(sha256(&bytes));
        meta.files.set(
            kind,
            FileRef {
                length: bytes.len() as u64,
                sha256: sha256_hex.clone(),
            },
        );
        files.push(DetachedFile {
            kind,
            name: release_file_name(&release, kind),
            bytes,
            sha256_hex,
        });
    }
    *meta = meta.signed_form();
    Ok(files)
}

/// Puts the content of a fetched release file into `meta`, once it is exactly the file the
/// signed metadata names (length and sha256) and valid for the release's interface.
pub fn attach(
    meta: &mut ModelTargetMeta,
    kind: ReleaseFileKind,
    bytes: &[u8],
) -> Result<(), Error> {
    let name = release_file_name(&meta.target_name(), kind);
    let bad = |detail: String| Error::Target {
        name: name.clone(),
        detail,
    };
    let Some(file) = meta.files.get(kind) else {
        return Err(bad(
            "the release's signed metadata names no such file".into()
        ));
    };
    if bytes.len() as u64 != file.length || hex::encode(sha256(bytes)) != file.sha256 {
        return Err(bad(format!(
            "not the signed file ({} bytes, sha256 {}); refusing it",
            file.length, file.sha256
        )));
    }
    match kind {
        ReleaseFileKind::Golden => {
            let golden: GoldenFile = serde_json::from_slice(bytes)
                .map_err(|e| bad(format!("not a golden file: {e}")))?;
            let mut health = meta.health.clone();
            health.cases = golden.cases;
            health
                .validate_cases(&meta.interface)
                .map_err(|e| bad(e.to_string()))?;
            meta.health = health;
        }
        ReleaseFileKind::Baseline => {
            let baseline: Baseline =
                serde_json::from_slice(bytes).map_err(|e| bad(format!("not a baseline: {e}")))?;
            baseline.validate().map_err(|e| bad(e.to_string()))?;
            meta.baseline = Some(baseline);
        }
        // Markdown for people: the hash is all there is to check.
        ReleaseFileKind::Card => {}
    }
    Ok(())
}

/// The model card `bytes` as the release's `card.md` file, named by hash in `meta` (it is not
/// part of the signed form's content, only its reference). Refused over `max_bytes`.
pub fn card(
    meta: &mut ModelTargetMeta,
    bytes: Vec<u8>,
    max_bytes: u64,
) -> Result<DetachedFile, Error> {
    let name = release_file_name(&meta.target_name(), ReleaseFileKind::Card);
    if bytes.len() as u64 > max_bytes {
        return Err(Error::Target {
            name,
            detail: format!(
                "{} bytes, over the limit of {max_bytes}; shorten the model card or raise the \
                 limit (fleetctl push --max-release-file-mib)",
                bytes.len()
            ),
        });
    }
    let sha256_hex = hex::encode(sha256(&bytes));
    meta.files.set(
        ReleaseFileKind::Card,
        FileRef {
            length: bytes.len() as u64,
            sha256: sha256_hex.clone(),
        },
    );
    Ok(DetachedFile {
        kind: ReleaseFileKind::Card,
        name,
        bytes,
        sha256_hex,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn churn() -> ModelTargetMeta {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/churn/2.0.0");
        crate::operator::read_release_dir(&dir).unwrap().1
    }

    #[test]
    fn detached_files_attach_back_to_the_same_metadata() {
        let full = churn();
        let mut signed = full.clone();
        let files = detach(&mut signed, u64::MAX).unwrap();
        let kinds: Vec<_> = files.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, [ReleaseFileKind::Golden, ReleaseFileKind::Baseline]);
        assert_eq!(files[0].name, "models/churn/2.0.0/golden.json");
        assert!(signed.health.cases.is_empty() && signed.baseline.is_none());
        assert_eq!(signed.pending(), kinds);
        signed.validate().unwrap();
        let mut fetched = signed.clone();
        for file in &files {
            attach(&mut fetched, file.kind, &file.bytes).unwrap();
        }
        assert!(fetched.pending().is_empty());
        assert_eq!(fetched.health.cases, full.health.cases);
        assert_eq!(fetched.baseline, full.baseline);
        assert_eq!(
            fetched.signed_form(),
            signed,
            "one release, one signed form"
        );
        // Detaching again changes nothing: the files are already named.
        let mut again = fetched.clone();
        assert!(detach(&mut again, u64::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_file_that_is_not_the_signed_one_is_refused_and_leaves_the_metadata_alone() {
        let mut signed = churn();
        let files = detach(&mut signed, u64::MAX).unwrap();
        let before = signed.clone();
        let mut tampered = files[0].bytes.clone();
        tampered[10] ^= 1;
        for (kind, bytes) in [
            (ReleaseFileKind::Golden, tampered.as_slice()),
            (ReleaseFileKind::Golden, &files[0].bytes[1..]),
            (ReleaseFileKind::Golden, files[1].bytes.as_slice()),
        ] {
            let err = attach(&mut signed, kind, bytes).unwrap_err().to_string();
            assert!(err.contains("not the signed file"), "{err}");
            assert_eq!(signed, before);
        }
    }

    proptest::proptest! {
        /// Whatever bytes arrive under a reference that matches them, attaching never panics,
        /// and what attaches leaves metadata that validates.
        #[test]
        fn arbitrary_bytes_under_a_matching_reference_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 1..512),
            golden in proptest::bool::ANY,
        ) {
            let kind = if golden { ReleaseFileKind::Golden } else { ReleaseFileKind::Baseline };
            let mut meta = churn();
            detach(&mut meta, u64::MAX).unwrap();
            meta.files.set(kind, FileRef { length: bytes.len() as u64, sha256: hex::encode(sha256(&bytes)) });
            if attach(&mut meta, kind, &bytes).is_ok() {
                proptest::prop_assert!(meta.validate().is_ok());
            }
        }
    }

    #[test]
    fn a_file_over_the_operators_limit_is_refused_with_its_size() {
        let mut meta = churn();
        let err = detach(&mut meta, 100).unwrap_err().to_string();
        assert!(
            err.contains("golden.json") && err.contains("over the limit of 100"),
            "{err}"
        );
    }
}
