//! `fleetctl import mlflow`: a model version from an MLflow registry (ONNX flavour) as an
//! Edgefleet release directory, ready for `push`.
//!
//! Read over MLflow's REST API (`/api/2.0/mlflow/...`, artifacts through the tracking server's
//! proxy, `mlflow-artifacts:`, or a local `file:` store): the model version, its run's params,
//! metrics and tags, the `MLmodel` file, the ONNX file and the input example. The interface comes
//! from the model's signature (named as the graph names its inputs and outputs where the
//! signature does not); the golden vectors are the input example (or `--sample`) run through ONNX
//! Runtime, the reference runtime, so a device's health check compares against what the model
//! computes where it was trained. Lineage (code commit, data, params, metrics, where it came
//! from) is written into `release.json`, and the model's description into `MODEL_CARD.md`, for
//! `push` to sign.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use edgefleet_inference::{Inputs, Runtime, Tensor};
use edgefleet_protocol::DType;
use edgefleet_protocol::interface::ModelInterface;
use edgefleet_protocol::lineage::{CodeRef, DataRef, Lineage};
use serde_json::{Value, json};

/// Golden cases taken from an example with many rows: enough to catch a wrong runtime, few
/// enough to keep the health check quick on a small device.
const MAX_CASES: usize = 8;

#[derive(Debug)]
pub(crate) struct ImportSpec {
    pub(crate) tracking_uri: String,
    /// `NAME`, `models:/NAME/VERSION` or `models:/NAME@ALIAS`.
    pub(crate) model: String,
    pub(crate) version: Option<String>,
    pub(crate) alias: Option<String>,
    /// The Edgefleet model name (default: the registered model's name).
    pub(crate) name: Option<String>,
    /// Semantic version of the release (default: `N.0.0` for MLflow version N).
    pub(crate) release_version: Option<String>,
    pub(crate) sample: Option<PathBuf>,
    pub(crate) out: Option<PathBuf>,
    pub(crate) onnxruntime_library: PathBuf,
    pub(crate) p99_budget_ms: f64,
}

/// Which registered model version to read.
#[derive(Debug, PartialEq)]
enum Selector {
    Version(String, String),
    Alias(String, String),
}

fn selector(spec: &ImportSpec) -> anyhow::Result<Selector> {
    if let Some(uri) = spec.model.strip_prefix("models:/") {
        if spec.version.is_some() || spec.alias.is_some() {
            bail!(
                "--model {} already names the version; drop --version/--alias",
                spec.model
            );
        }
        if let Some((name, alias)) = uri.split_once('@') {
            return Ok(Selector::Alias(name.into(), alias.into()));
        }
        if let Some((name, version)) = uri.split_once('/') {
            return Ok(Selector::Version(name.into(), version.into()));
        }
        bail!(
            "--model {}: expected models:/NAME/VERSION or models:/NAME@ALIAS",
            spec.model
        );
    }
    match (&spec.version, &spec.alias) {
        (Some(v), None) => Ok(Selector::Version(spec.model.clone(), v.clone())),
        (None, Some(a)) => Ok(Selector::Alias(spec.model.clone(), a.clone())),
        _ => bail!(
            "name the model version: --version N or --alias ALIAS (or --model models:/NAME/N)"
        ),
    }
}

struct Mlflow {
    http: reqwest::Client,
    base: String,
}

impl Mlflow {
    fn new(tracking_uri: &str) -> anyhow::Result<Self> {
        let base = tracking_uri.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--tracking-uri {tracking_uri}: expected the tracking server's http(s) URL");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(600))
            .build()?;
        Ok(Self { http, base })
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base))
            .with_context(|| format!("{}{path} is not a URL", self.base))?;
        url.query_pairs_mut().extend_pairs(query);
        let response = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("cannot reach MLflow at {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "MLflow {path} answered {status}: {} {}",
                body["error_code"].as_str().unwrap_or(""),
                body["message"].as_str().unwrap_or("")
            );
        }
        Ok(body)
    }

    /// A file under an artifact location: through the server's artifact proxy
    /// (`mlflow-artifacts:`) or from a local artifact store (`file:` or a path).
    async fn artifact(&self, location: &str, file: &str) -> anyhow::Result<Vec<u8>> {
        if let Some(path) = location.strip_prefix("mlflow-artifacts:") {
            let path = path.trim_start_matches('/');
            let url = format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{path}/{file}",
                self.base
            );
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .with_context(|| format!("cannot reach MLflow at {}", self.base))?;
            if !response.status().is_success() {
                bail!("MLflow artifact {path}/{file}: {}", response.status());
            }
            return Ok(response.bytes().await?.to_vec());
        }
        let local = location.strip_prefix("file://").unwrap_or(location);
        if local.starts_with('/') {
            let path = Path::new(local).join(file);
            return std::fs::read(&path).with_context(|| path.display().to_string());
        }
        bail!(
            "artifact location {location} is not one fleetctl reads: serve artifacts through the \
             tracking server (mlflow server with artifact proxying, the default) or use a local store"
        )
    }
}

/// What `MLmodel` says about an ONNX model.
#[derive(Debug, PartialEq)]
struct MlModel {
    onnx_file: String,
    inputs: Option<Value>,
    outputs: Option<Value>,
    input_example: Option<String>,
}

fn parse_mlmodel(text: &str) -> anyhow::Result<MlModel> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).context("MLmodel is not YAML")?;
    let doc = docs.first().context("MLmodel is empty")?;
    let onnx = &doc["flavors"]["onnx"];
    if onnx.is_badvalue() {
        bail!("the model has no onnx flavour: log it with mlflow.onnx.log_model");
    }
    let onnx_file = onnx["data"].as_str().unwrap_or("model.onnx").to_owned();
    let signature = |key: &str| -> anyhow::Result<Option<Value>> {
        match &doc["signature"][key] {
            Yaml::String(json) => Ok(Some(
                serde_json::from_str(json).with_context(|| format!("MLmodel signature.{key}"))?,
            )),
            _ => Ok(None),
        }
    };
    Ok(MlModel {
        onnx_file,
        inputs: signature("inputs")?,
        outputs: signature("outputs")?,
        input_example: doc["saved_input_example_info"]["artifact_path"]
            .as_str()
            .map(str::to_owned),
    })
}

/// Interface tensors from a signature's tensor specs, named as the graph names them where the
/// signature does not.
fn tensors(
    what: &str,
    spec: Option<&Value>,
    graph: &[edgefleet_onnx_graph::GraphValue],
) -> anyhow::Result<Vec<Value>> {
    let spec = spec
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("the model's signature has no {what}: log it with a signature (mlflow.models.infer_signature)"))?;
    if spec.len() != graph.len() {
        bail!(
            "the signature lists {} {what}, the ONNX graph {}",
            spec.len(),
            graph.len()
        );
    }
    spec.iter()
        .zip(graph)
        .map(|(s, g)| {
            if s["type"] != "tensor" {
                bail!(
                    "signature {what}: {} is a {} column; only tensor signatures describe an ONNX \
                     model's {what} (infer the signature from numpy arrays)",
                    s["name"],
                    s["type"]
                );
            }
            let dtype: DType = serde_json::from_value(s["tensor-spec"]["dtype"].clone())
                .with_context(|| {
                    format!("signature {what}: dtype {}", s["tensor-spec"]["dtype"])
                })?;
            Ok(json!({
                "name": s["name"].as_str().unwrap_or(&g.name),
                "dtype": dtype,
                "shape": s["tensor-spec"]["shape"],
            }))
        })
        .collect()
}

fn nested_shape(value: &Value) -> Vec<usize> {
    let mut shape = Vec::new();
    let mut at = value;
    while let Value::Array(items) = at {
        shape.push(items.len());
        match items.first() {
            Some(first) => at = first,
            None => break,
        }
    }
    shape
}

/// The example's arrays by input name: a bare array for a single input, `{"inputs": ...}`
/// (MLflow's serving form), a name-to-array object, or a pandas split frame's `data`.
fn example_arrays(
    interface: &ModelInterface,
    example: &Value,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let example = example.get("inputs").unwrap_or(example);
    let single = |array: &Value| -> anyhow::Result<BTreeMap<String, Value>> {
        match interface.inputs.as_slice() {
            [only] => Ok(BTreeMap::from([(only.name.clone(), array.clone())])),
            _ => bail!(
                "the example is one array but the model has {} inputs: name them ({{\"NAME\": [...]}})",
                interface.inputs.len()
            ),
        }
    };
    match example {
        Value::Array(_) => single(example),
        Value::Object(map) if map.contains_key("data") && map.contains_key("columns") => {
            single(&map["data"])
        }
        Value::Object(map) => interface
            .inputs
            .iter()
            .map(|input| {
                map.get(&input.name)
                    .map(|v| (input.name.clone(), v.clone()))
                    .ok_or_else(|| anyhow!("the example has no input {:?}", input.name))
            })
            .collect(),
        _ => bail!("the input example is neither an array nor an object of arrays"),
    }
}

/// Golden cases: one per example row (up to [`MAX_CASES`]) when every input has a dynamic batch
/// axis, else the whole example as one case; outputs computed with ONNX Runtime.
fn golden_cases(
    interface: &ModelInterface,
    arrays: &BTreeMap<String, Value>,
    model: &dyn edgefleet_inference::LoadedModel,
) -> anyhow::Result<Vec<Value>> {
    let batched = interface
        .inputs
        .iter()
        .all(|i| i.shape.first() == Some(&-1));
    let rows = arrays
        .values()
        .map(|a| a.as_array().map_or(0, Vec::len))
        .min()
        .unwrap_or(0);
    let groups: Vec<BTreeMap<String, Value>> = if batched && rows > 0 {
        (0..rows.min(MAX_CASES))
            .map(|row| {
                arrays
                    .iter()
                    .map(|(name, a)| (name.clone(), json!([a[row].clone()])))
                    .collect()
            })
            .collect()
    } else {
        vec![arrays.clone()]
    };
    let mut cases = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let mut inputs = Inputs::new();
        for spec in &interface.inputs {
            let data = &group[&spec.name];
            let tensor = Tensor::from_json(spec.dtype, nested_shape(data), data, &spec.name)
                .with_context(|| format!("example input {:?}", spec.name))?;
            inputs.insert(spec.name.clone(), tensor);
        }
        let outputs = model
            .run(&inputs)
            .with_context(|| format!("ONNX Runtime on example {index}"))?;
        cases.push(json!({
            "name": format!("example-{index}"),
            "inputs": inputs,
            "expected": outputs,
        }));
    }
    Ok(cases)
}

fn lineage(tracking_uri: &str, selected: &str, run: &Value) -> Lineage {
    let pairs = |key: &str| -> Vec<(String, Value)> {
        run["data"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| Some((kv["key"].as_str()?.to_owned(), kv["value"].clone())))
            .collect()
    };
    let tags: BTreeMap<String, String> = pairs("tags")
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
        .collect();
    let hex = |v: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&v.len()) && v.bytes().all(|b| b.is_ascii_hexdigit())
    };
    let code = CodeRef {
        repository: tags.get("mlflow.source.git.repoURL").cloned(),
        commit: tags
            .get("mlflow.source.git.commit")
            .map(|c| c.to_ascii_lowercase())
            .filter(|c| hex(c, 7..=64)),
        path: tags.get("mlflow.source.name").cloned(),
        sha256: None,
    };
    let dataset = &run["inputs"]["dataset_inputs"][0]["dataset"];
    let data = DataRef {
        sha256: tags
            .get("data_sha256")
            .map(|s| s.to_ascii_lowercase())
            .filter(|s| hex(s, 64..=64)),
        window: tags.get("data_window").cloned().or_else(|| {
            dataset["digest"]
                .as_str()
                .map(|d| format!("MLflow dataset digest {d}"))
        }),
        uri: dataset["source"]
            .as_str()
            .or(dataset["name"].as_str())
            .map(str::to_owned),
        rows: None,
    };
    let run_id = run["info"]["run_id"].as_str().unwrap_or("?");
    Lineage {
        code: (code != CodeRef::default()).then_some(code),
        data: (data != DataRef::default()).then_some(data),
        params: pairs("params")
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_str()?.chars().take(1024).collect())))
            .take(edgefleet_protocol::lineage::MAX_ENTRIES)
            .collect(),
        metrics: pairs("metrics")
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_f64().filter(|f| f.is_finite())?)))
            .take(edgefleet_protocol::lineage::MAX_ENTRIES)
            .collect(),
        source: Some(format!("mlflow {tracking_uri} {selected} (run {run_id})")),
    }
}

/// Reads the model version and writes its release directory; returns the directory.
pub(crate) async fn import(spec: &ImportSpec) -> anyhow::Result<PathBuf> {
    let selected = selector(spec)?;
    let mlflow = Mlflow::new(&spec.tracking_uri)?;
    let (version, selected_text) = match &selected {
        Selector::Version(name, version) => (
            mlflow
                .get(
                    "/api/2.0/mlflow/model-versions/get",
                    &[("name", name), ("version", version)],
                )
                .await?,
            format!("models:/{name}/{version}"),
        ),
        Selector::Alias(name, alias) => (
            mlflow
                .get(
                    "/api/2.0/mlflow/registered-models/alias",
                    &[("name", name), ("alias", alias)],
                )
                .await?,
            format!("models:/{name}@{alias}"),
        ),
    };
    let version = &version["model_version"];
    let registered = version["name"]
        .as_str()
        .context("model version without a name")?;
    let number: u64 = version["version"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .context("model version without a version number")?;
    let run_id = version["run_id"].as_str().unwrap_or_default();
    let run = if run_id.is_empty() {
        Value::Null
    } else {
        mlflow
            .get("/api/2.0/mlflow/runs/get", &[("run_id", run_id)])
            .await?["run"]
            .clone()
    };
    let source = version["source"]
        .as_str()
        .context("model version without a source")?;
    // MLflow 3 registers a logged model (`models:/m-…`), whose files are at its artifact location.
    let location = match source.strip_prefix("models:/") {
        Some(id) => mlflow
            .get(&format!("/api/2.0/mlflow/logged-models/{id}"), &[])
            .await?["model"]["info"]["artifact_uri"]
            .as_str()
            .context("the logged model has no artifact location")?
            .to_owned(),
        None => source.to_owned(),
    };
    let mlmodel = parse_mlmodel(&String::from_utf8_lossy(
        &mlflow.artifact(&location, "MLmodel").await?,
    ))?;
    let mut onnx = mlflow.artifact(&location, &mlmodel.onnx_file).await?;
    // MLflow saves weights over 1 KiB beside the graph by default; a device loads one file.
    let external = edgefleet_onnx_graph::external_refs(&onnx).context("the ONNX file")?;
    if !external.is_empty() {
        let mut files = BTreeMap::new();
        for reference in &external {
            if !files.contains_key(&reference.location) {
                let bytes = mlflow.artifact(&location, &reference.location).await?;
                files.insert(reference.location.clone(), bytes);
            }
        }
        onnx = edgefleet_onnx_graph::inline_external_data(&onnx, &files)
            .context("putting the model's external weights inside it")?;
    }
    let graph = edgefleet_onnx_graph::read(&onnx).context("the ONNX file")?;
    let interface: ModelInterface = serde_json::from_value(json!({
        "inputs": tensors("inputs", mlmodel.inputs.as_ref(), &graph.inputs)?,
        "outputs": tensors("outputs", mlmodel.outputs.as_ref(), &graph.outputs)?,
    }))
    .context("the interface from the signature")?;
    interface.validate()?;

    let example: Value = match (&spec.sample, &mlmodel.input_example) {
        (Some(path), _) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| path.display().to_string())?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?,
        (None, Some(file)) => serde_json::from_slice(&mlflow.artifact(&location, file).await?)
            .context("the logged input example")?,
        (None, None) => bail!(
            "the model was logged without an input example: pass --sample FILE (JSON arrays by \
             input name) for the golden vectors"
        ),
    };
    let arrays = example_arrays(&interface, &example)?;
    let runtime = edgefleet_inference::onnxruntime::OnnxRuntime::open(&spec.onnxruntime_library, 1)
        .context("golden vectors are computed with ONNX Runtime: pass --onnxruntime-library")?;
    let loaded = runtime.load(&onnx, &interface)?;
    let cases = golden_cases(&interface, &arrays, loaded.model.as_ref())?;

    let name = spec.name.clone().unwrap_or_else(|| registered.to_owned());
    edgefleet_protocol::ModelName::new(name.clone()).with_context(|| {
        format!("{name:?} is not an Edgefleet model name; choose one with --as")
    })?;
    let release_version = spec
        .release_version
        .clone()
        .unwrap_or_else(|| format!("{number}.0.0"));
    let lineage = lineage(&spec.tracking_uri, &selected_text, &run);
    let description = version["description"].as_str().unwrap_or("").trim();
    let card = format!(
        "# {name} {release_version}\n\nImported from MLflow: {} (registered model {registered}, \
         version {number}).\n\n{}\n",
        lineage.source.as_deref().unwrap_or(""),
        if description.is_empty() {
            "No description was given in the registry."
        } else {
            description
        }
    );

    let out = spec
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}-{release_version}")));
    if out.exists() {
        bail!("{} already exists; choose another --out", out.display());
    }
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    let write = |file: &str, bytes: &[u8]| {
        let path = out.join(file);
        std::fs::write(&path, bytes).with_context(|| path.display().to_string())
    };
    write("model.onnx", &onnx)?;
    write("interface.json", &serde_json::to_vec_pretty(&interface)?)?;
    write(
        "health.json",
        &serde_json::to_vec_pretty(&json!({
            "p99_budget_ms": spec.p99_budget_ms,
            "tolerance": {"abs": 1e-5, "rel": 1e-4},
            "cases": cases,
        }))?,
    )?;
    write(
        "release.json",
        &serde_json::to_vec_pretty(&json!({
            "model": name,
            "version": release_version,
            "sequence": number,
            "lineage": lineage,
        }))?,
    )?;
    write("MODEL_CARD.md", card.as_bytes())?;
    // Everything `push` will check, checked now, naming the file.
    edgefleet_tuf::operator::read_release_dir(&out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlmodel_of_the_onnx_flavour_gives_file_signature_and_example() {
        let text = r#"
artifact_path: model
flavors:
  onnx:
    code: null
    data: model.onnx
    onnx_version: 1.17.0
  python_function:
    loader_module: mlflow.onnx
saved_input_example_info:
  artifact_path: input_example.json
  type: ndarray
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]'
  params: null
"#;
        let m = parse_mlmodel(text).unwrap();
        assert_eq!(m.onnx_file, "model.onnx");
        assert_eq!(m.input_example.as_deref(), Some("input_example.json"));
        assert_eq!(m.inputs.unwrap()[0]["tensor-spec"]["shape"], json!([-1, 4]));
        let sklearn = "flavors:\n  sklearn:\n    pickled_model: model.pkl\n";
        assert!(
            parse_mlmodel(sklearn)
                .unwrap_err()
                .to_string()
                .contains("onnx flavour")
        );
    }

    #[test]
    fn a_version_is_named_by_number_alias_or_models_uri() {
        let spec = |model: &str, version: Option<&str>, alias: Option<&str>| ImportSpec {
            tracking_uri: "http://127.0.0.1:5000".into(),
            model: model.into(),
            version: version.map(Into::into),
            alias: alias.map(Into::into),
            name: None,
            release_version: None,
            sample: None,
            out: None,
            onnxruntime_library: PathBuf::new(),
            p99_budget_ms: 50.0,
        };
        assert_eq!(
            selector(&spec("iris", Some("3"), None)).unwrap(),
            Selector::Version("iris".into(), "3".into())
        );
        assert_eq!(
            selector(&spec("models:/iris@champion", None, None)).unwrap(),
            Selector::Alias("iris".into(), "champion".into())
        );
        assert_eq!(
            selector(&spec("models:/iris/3", None, None)).unwrap(),
            Selector::Version("iris".into(), "3".into())
        );
        assert!(selector(&spec("iris", None, None)).is_err());
        assert!(selector(&spec("models:/iris/3", Some("4"), None)).is_err());
    }

    #[test]
    fn examples_come_bare_wrapped_named_or_as_a_split_frame() {
        let interface: ModelInterface = serde_json::from_value(json!({
            "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 2]}],
            "outputs": [{"name": "y", "dtype": "float32", "shape": [-1, 1]}],
        }))
        .unwrap();
        let rows = json!([[1.0, 2.0], [3.0, 4.0]]);
        for example in [
            rows.clone(),
            json!({"inputs": rows.clone()}),
            json!({"x": rows.clone()}),
            json!({"columns": ["a", "b"], "data": rows.clone()}),
        ] {
            assert_eq!(example_arrays(&interface, &example).unwrap()["x"], rows);
        }
        assert!(example_arrays(&interface, &json!({"z": rows})).is_err());
        assert_eq!(nested_shape(&json!([[1, 2, 3], [4, 5, 6]])), [2, 3]);
    }
}
