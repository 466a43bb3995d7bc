//! Files a release carries beside its artifact: the golden cases of its health check and its
//! drift baseline.
//!
//! They stay out of the signed metadata, which names each by length and sha256 (a [`FileRef`]),
//! so a device downloads them only for the release it installs, and a model's golden outputs are
//! bounded by what the operator allows rather than by what a metadata file can hold. This module
//! holds the types and the pure checks; hashing and downloading happen in the TUF crate.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::health::GoldenCase;

/// Which file of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReleaseFileKind {
    /// `golden.json`: a [`GoldenFile`].
    Golden,
    /// `baseline.json`: a [`crate::baseline::Baseline`].
    Baseline,
    /// `card.md`: the model card (Markdown), for people; devices never fetch it.
    Card,
}

impl ReleaseFileKind {
    pub const ALL: [ReleaseFileKind; 3] = [
        ReleaseFileKind::Golden,
        ReleaseFileKind::Baseline,
        ReleaseFileKind::Card,
    ];

    /// The file's name in the release's directory, `models/<model>/<version>/<file_name>`.
    pub fn file_name(self) -> &'static str {
        match self {
            ReleaseFileKind::Golden => "golden.json",
            ReleaseFileKind::Baseline => "baseline.json",
            ReleaseFileKind::Card => "card.md",
        }
    }

    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.file_name() == name)
    }
}

impl std::fmt::Display for ReleaseFileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.file_name())
    }
}

/// A file named by the signed metadata: exactly `length` bytes whose sha256 is `sha256`
/// (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    pub length: u64,
    pub sha256: String,
}

impl FileRef {
    pub fn validate(&self, kind: ReleaseFileKind) -> Result<(), Error> {
        let hex = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(Error::invalid(
                "release file reference",
                format!("{kind}: sha256 must be 64 lowercase hex digits"),
            ));
        }
        if self.length == 0 {
            return Err(Error::invalid(
                "release file reference",
                format!("{kind}: length must be above 0"),
            ));
        }
        Ok(())
    }
}

/// The files a release names, each optional: a release signed before files left the metadata
/// carries its cases and baseline inline and names none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseFileRefs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden: Option<FileRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<FileRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<FileRef>,
}

impl ReleaseFileRefs {
    pub fn is_empty(&self) -> bool {
        self.golden.is_none() && self.baseline.is_none() && self.card.is_none()
    }

    pub fn get(&self, kind: ReleaseFileKind) -> Option<&FileRef> {
        match kind {
            ReleaseFileKind::Golden => self.golden.as_ref(),
            ReleaseFileKind::Baseline => self.baseline.as_ref(),
            ReleaseFileKind::Card => self.card.as_ref(),
        }
    }

    pub fn set(&mut self, kind: ReleaseFileKind, file: FileRef) {
        match kind {
            ReleaseFileKind::Golden => self.golden = Some(file),
            ReleaseFileKind::Baseline => self.baseline = Some(file),
            ReleaseFileKind::Card => self.card = Some(file),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (ReleaseFileKind, &FileRef)> {
        ReleaseFileKind::ALL
            .into_iter()
            .filter_map(|kind| self.get(kind).map(|f| (kind, f)))
    }

    pub fn validate(&self) -> Result<(), Error> {
        self.iter().try_for_each(|(kind, file)| file.validate(kind))
    }
}

/// `golden.json`: the cases of a release's health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenFile {
    pub cases: Vec<GoldenCase>,
}

/// The release directory of a file's target-style name: `models/<m>/<v>/golden.json` gives
/// `models/<m>/<v>/model.onnx` and [`ReleaseFileKind::Golden`]. Anything else is refused, as
/// [`crate::target_name::parse_target_name`] refuses it.
pub fn parse_release_file_name(name: &str) -> Result<(String, ReleaseFileKind), Error> {
    let bad = || {
        Error::invalid(
            "release file name",
            format!(
                "{:?}: expected models/<model>/<version>/golden.json, baseline.json or card.md",
                name.chars().take(200).collect::<String>()
            ),
        )
    };
    let (dir, file) = name.rsplit_once('/').ok_or_else(bad)?;
    let kind = ReleaseFileKind::from_file_name(file).ok_or_else(bad)?;
    let release = format!("{dir}/model.onnx");
    crate::target_name::parse_target_name(&release).map_err(|_| bad())?;
    Ok((release, kind))
}

/// `models/<m>/<v>/<file_name>` for the release target `models/<m>/<v>/model.onnx`.
pub fn release_file_name(release_target: &str, kind: ReleaseFileKind) -> String {
    let dir = release_target
        .rsplit_once('/')
        .map_or(release_target, |(dir, _)| dir);
    format!("{dir}/{}", kind.file_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_map_to_their_release_and_nothing_else_does() {
        let (release, kind) = parse_release_file_name("models/churn/2.0.0/golden.json").unwrap();
        assert_eq!(release, "models/churn/2.0.0/model.onnx");
        assert_eq!(kind, ReleaseFileKind::Golden);
        assert_eq!(
            release_file_name(&release, ReleaseFileKind::Baseline),
            "models/churn/2.0.0/baseline.json"
        );
        for bad in [
            "models/churn/2.0.0/model.onnx",
            "models/churn/2.0.0/other.json",
            "models/../2.0.0/golden.json",
            "models/churn/2.0/golden.json",
            "golden.json",
            "models/churn/2.0.0/x/golden.json",
        ] {
            assert!(parse_release_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_reference_needs_a_lowercase_sha256_and_a_length() {
        let ok = FileRef {
            length: 3,
            sha256: "ab".repeat(32),
        };
        ok.validate(ReleaseFileKind::Golden).unwrap();
        for bad in [
            FileRef {
                length: 3,
                sha256: "AB".repeat(32),
            },
            FileRef {
                length: 3,
                sha256: "ab".repeat(31),
            },
            FileRef {
                length: 0,
                sha256: "ab".repeat(32),
            },
        ] {
            assert!(bad.validate(ReleaseFileKind::Golden).is_err(), "{bad:?}");
        }
    }
}
