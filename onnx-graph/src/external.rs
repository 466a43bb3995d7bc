//! Models saved with external data (ONNX's `save_as_external_data`, the default of MLflow's onnx
//! flavour for any tensor over 1 KiB): the weights live in files beside `model.onnx`, which only
//! names them. A device loads one signed file, so an import puts the weights back inside.
//!
//! Done on the protobuf wire format rather than through a decoded model: everything but the
//! top-level initializers' data references is copied byte for byte, so fields this crate does not
//! know (the whole graph, metadata, functions) cannot be lost by a decode and re-encode.

use std::collections::BTreeMap;

use crate::Error;

/// `ModelProto.graph`, `GraphProto.initializer`, and the `TensorProto` fields involved.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_RAW_DATA: u64 = 9;
const TENSOR_EXTERNAL_DATA: u64 = 13;
const TENSOR_DATA_LOCATION: u64 = 14;
const DATA_LOCATION_EXTERNAL: u64 = 1;
const WIRE_VARINT: u64 = 0;
const WIRE_LEN: u64 = 2;

/// One initializer's data in an external file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    pub tensor: String,
    /// A file name beside the model (never a path: see [`external_refs`]).
    pub location: String,
    pub offset: u64,
    /// `None`: to the end of the file.
    pub length: Option<u64>,
}

fn bad(detail: impl Into<String>) -> Error {
    Error::External(detail.into())
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64, Error> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*at)
            .ok_or_else(|| bad("the model ends inside a number"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(bad("a number in the model is longer than 10 bytes"))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// One field: its number, wire type, the whole encoded field and, for a varint its value, for a
/// length-delimited field its content.
struct Field<'a> {
    number: u64,
    wire: u64,
    whole: &'a [u8],
    content: &'a [u8],
    value: u64,
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, Error> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let key = varint(buf, &mut at)?;
        let (number, wire) = (key >> 3, key & 7);
        let (mut content, mut value): (&[u8], u64) = (&[], 0);
        match wire {
            WIRE_VARINT => value = varint(buf, &mut at)?,
            1 => at += 8,
            WIRE_LEN => {
                let len = usize::try_from(varint(buf, &mut at)?)
                    .map_err(|_| bad("a field length does not fit in memory"))?;
                let end = at
                    .checked_add(len)
                    .filter(|end| *end <= buf.len())
                    .ok_or_else(|| bad("a field runs past the end of the model"))?;
                content = &buf[at..end];
                at = end;
            }
            5 => at += 4,
            other => return Err(bad(format!("wire type {other} is not protobuf"))),
        }
        if at > buf.len() {
            return Err(bad("a field runs past the end of the model"));
        }
        out.push(Field {
            number,
            wire,
            whole: &buf[start..at],
            content,
            value,
        });
    }
    Ok(out)
}

fn put_len_field(out: &mut Vec<u8>, number: u64, content: &[u8]) {
    put_varint(out, (number << 3) | WIRE_LEN);
    put_varint(out, content.len() as u64);
    out.extend_from_slice(content);
}

fn text(bytes: &[u8], what: &str) -> Result<String, Error> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
}

/// The external reference of one `TensorProto`, `None` when its data is inline.
fn tensor_ref(tensor: &[u8]) -> Result<Option<ExternalRef>, Error> {
    let mut name = String::new();
    let mut external = false;
    let mut entries = BTreeMap::new();
    for field in fields(tensor)? {
        match (field.number, field.wire) {
            (8, WIRE_LEN) => name = text(field.content, "a tensor name")?,
            (TENSOR_DATA_LOCATION, WIRE_VARINT) => {
                external = field.value == DATA_LOCATION_EXTERNAL;
            }
            (TENSOR_EXTERNAL_DATA, WIRE_LEN) => {
                let (mut key, mut value) = (String::new(), String::new());
                for entry in fields(field.content)? {
                    match (entry.number, entry.wire) {
                        (1, WIRE_LEN) => key = text(entry.content, "an external data key")?,
                        (2, WIRE_LEN) => value = text(entry.content, "an external data value")?,
                        _ => {}
                    }
                }
                entries.insert(key, value);
            }
            _ => {}
        }
    }
    if !external {
        return Ok(None);
    }
    let location = entries
        .get("location")
        .cloned()
        .ok_or_else(|| bad(format!("tensor {name:?} is external but names no location")))?;
    let plain = !location.is_empty()
        && location != "."
        && location != ".."
        && !location.contains(['/', '\\', '\0']);
    if !plain {
        return Err(bad(format!(
            "tensor {name:?}: external data location {location:?} is not a file name beside the model"
        )));
    }
    let number = |key: &str| -> Result<Option<u64>, Error> {
        entries
            .get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| bad(format!("tensor {name:?}: {key} {v:?} is not a number")))
            })
            .transpose()
    };
    Ok(Some(ExternalRef {
        offset: number("offset")?.unwrap_or(0),
        length: number("length")?,
        tensor: name,
        location,
    }))
}

fn graph_of(model: &[u8]) -> Result<Option<&[u8]>, Error> {
    Ok(fields(model)?
        .into_iter()
        .find(|f| f.number == MODEL_GRAPH && f.wire == WIRE_LEN)
        .map(|f| f.content))
}

/// Every external reference of the top-level graph's initializers, in order. Locations are
/// plain file names: one that is a path (`../x`, `/etc/x`, `a/b`) is an error, so a caller
/// fetching them stays in the model's directory.
pub fn external_refs(model: &[u8]) -> Result<Vec<ExternalRef>, Error> {
    let Some(graph) = graph_of(model)? else {
        return Ok(Vec::new());
    };
    let mut refs = Vec::new();
    for field in fields(graph)? {
        if field.number == GRAPH_INITIALIZER && field.wire == WIRE_LEN {
            refs.extend(tensor_ref(field.content)?);
        }
    }
    Ok(refs)
}

/// The model with every top-level initializer's external data read from `files` (by location)
/// and stored inline; every other byte as it was.
pub fn inline_external_data(
    model: &[u8],
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(model.len() + files.values().map(Vec::len).sum::<usize>());
    for field in fields(model)? {
        if field.number != MODEL_GRAPH || field.wire != WIRE_LEN {
            out.extend_from_slice(field.whole);
            continue;
        }
        let mut graph = Vec::with_capacity(field.content.len());
        for g in fields(field.content)? {
            let reference = if g.number == GRAPH_INITIALIZER && g.wire == WIRE_LEN {
                tensor_ref(g.content)?
            } else {
                None
            };
            let Some(reference) = reference else {
                graph.extend_from_slice(g.whole);
                continue;
            };
            let file = files.get(&reference.location).ok_or_else(|| {
                bad(format!(
                    "tensor {:?}: external data file {:?} is missing",
                    reference.tensor, reference.location
                ))
            })?;
            let start = usize::try_from(reference.offset).unwrap_or(usize::MAX);
            let end = match reference.length {
                Some(length) => start.saturating_add(usize::try_from(length).unwrap_or(usize::MAX)),
                None => file.len(),
            };
            let data = file.get(start..end).ok_or_else(|| {
                bad(format!(
                    "tensor {:?}: bytes {start}..{end} are past the end of {:?} ({} bytes)",
                    reference.tensor,
                    reference.location,
                    file.len()
                ))
            })?;
            let mut tensor = Vec::with_capacity(g.content.len() + data.len());
            for t in fields(g.content)? {
                if !matches!(
                    t.number,
                    TENSOR_RAW_DATA | TENSOR_EXTERNAL_DATA | TENSOR_DATA_LOCATION
                ) {
                    tensor.extend_from_slice(t.whole);
                }
            }
            put_len_field(&mut tensor, TENSOR_RAW_DATA, data);
            put_len_field(&mut graph, GRAPH_INITIALIZER, &tensor);
        }
        put_len_field(&mut out, MODEL_GRAPH, &graph);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(number: u64, content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_len_field(&mut out, number, content);
        out
    }

    fn entry(key: &str, value: &str) -> Vec<u8> {
        let mut e = len_field(1, key.as_bytes());
        e.extend(len_field(2, value.as_bytes()));
        len_field(TENSOR_EXTERNAL_DATA, &e)
    }

    /// A model of one graph with an inline tensor `a` and an external one `w`, plus fields this
    /// module does not know (ir_version, a node) that must come through unchanged.
    fn model(location: &str) -> Vec<u8> {
        let mut inline = len_field(8, b"a");
        inline.extend(len_field(TENSOR_RAW_DATA, &[1, 2, 3, 4]));
        let mut external = vec![0x08, 0x04, 0x10, 0x01]; // dims [4], data_type FLOAT
        external.extend(len_field(8, b"w"));
        external.extend(entry("location", location));
        external.extend(entry("offset", "4"));
        external.extend(entry("length", "8"));
        external.extend([(TENSOR_DATA_LOCATION << 3) as u8, 1]);
        let mut graph = len_field(1, b"node-bytes");
        graph.extend(len_field(GRAPH_INITIALIZER, &inline));
        graph.extend(len_field(GRAPH_INITIALIZER, &external));
        let mut model = vec![0x08, 0x09]; // ir_version 9
        model.extend(len_field(MODEL_GRAPH, &graph));
        model
    }

    #[test]
    fn external_weights_are_inlined_and_everything_else_kept() {
        let m = model("weights.bin");
        let refs = external_refs(&m).unwrap();
        assert_eq!(
            refs,
            [ExternalRef {
                tensor: "w".into(),
                location: "weights.bin".into(),
                offset: 4,
                length: Some(8),
            }]
        );
        let files = BTreeMap::from([("weights.bin".to_string(), (0u8..16).collect::<Vec<_>>())]);
        let inlined = inline_external_data(&m, &files).unwrap();
        assert!(external_refs(&inlined).unwrap().is_empty());
        let graph = graph_of(&inlined).unwrap().unwrap();
        let tensors: Vec<_> = fields(graph)
            .unwrap()
            .into_iter()
            .filter(|f| f.number == GRAPH_INITIALIZER)
            .map(|f| f.content.to_vec())
            .collect();
        let raw = |t: &[u8]| {
            fields(t)
                .unwrap()
                .into_iter()
                .find(|f| f.number == TENSOR_RAW_DATA)
                .map(|f| f.content.to_vec())
        };
        assert_eq!(raw(&tensors[0]), Some(vec![1, 2, 3, 4]));
        assert_eq!(raw(&tensors[1]), Some((4u8..12).collect::<Vec<_>>()));
        assert!(graph.starts_with(&len_field(1, b"node-bytes")));
        assert!(inlined.starts_with(&[0x08, 0x09]));
        // A model without external data comes back byte for byte.
        assert_eq!(
            inline_external_data(&inlined, &BTreeMap::new()).unwrap(),
            inlined
        );
    }

    #[test]
    fn paths_missing_files_and_short_files_are_refused() {
        for location in ["../weights.bin", "/etc/passwd", "a/b", ".."] {
            let err = external_refs(&model(location)).unwrap_err();
            assert!(
                err.to_string().contains("not a file name"),
                "{location}: {err}"
            );
        }
        let m = model("weights.bin");
        let err = inline_external_data(&m, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        let short = BTreeMap::from([("weights.bin".to_string(), vec![0u8; 6])]);
        let err = inline_external_data(&m, &short).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_are_an_error_or_a_model_never_a_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = external_refs(&bytes);
            let _ = inline_external_data(&bytes, &BTreeMap::new());
        }
    }
}
