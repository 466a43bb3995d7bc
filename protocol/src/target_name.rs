//! The names of model targets in the TUF repository, `models/<model>/<version>/model.onnx`:
//! written by the operator's tools and the server, parsed wherever a name arrives from outside.

use crate::{Error, ModelName};

/// `models/<model>/<version>/model.onnx`.
pub fn target_name(model: &ModelName, version: &semver::Version) -> String {
    format!("models/{model}/{version}/model.onnx")
}

/// Splits a target name back into model and version, refusing anything that is not exactly the
/// canonical form (so `..`, `%2F`, absolute paths and extra levels never reach the file system).
pub fn parse_target_name(name: &str) -> Result<(ModelName, semver::Version), Error> {
    let bad = |detail: &str| {
        Error::invalid(
            "target name",
            format!("{:?}: {detail}", name.chars().take(200).collect::<String>()),
        )
    };
    let mut parts = name.split('/');
    let (Some("models"), Some(model), Some(version), Some("model.onnx"), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad("expected models/<model>/<version>/model.onnx"));
    };
    let model = ModelName::new(model).map_err(|_| bad("model level is not a valid model name"))?;
    let version =
        semver::Version::parse(version).map_err(|_| bad("version level is not semver"))?;
    if version.to_string() != name.split('/').nth(2).unwrap_or_default() {
        return Err(bad("version is not in canonical form"));
    }
    Ok((model, version))
}
