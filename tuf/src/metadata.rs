//! TUF metadata as the client reads it: parsed from the exact bytes received, with the signed
//! part's canonical form kept for signature checks.
//!
//! We parse into our own types instead of tough's schema because the client workflow needs what
//! that schema refuses or hides: targets hashed with any listed algorithm (tough requires sha256),
//! delegations read role by role, and a role's keys judged per distinct public key. Key material
//! is still decoded by tough's key types (PEM, hex, the legacy ECDSA form).

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;
use serde_json::Value;
use tough::schema::key::Key;

use crate::Error;

/// The four top-level roles; no delegated role may take one of these names.
pub const TOP_LEVEL: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// A metadata file: its signed part, that part in canonical JSON, and its signatures.
#[derive(Debug, Clone)]
pub struct Envelope<T> {
    pub signed: T,
    canonical: Vec<u8>,
    signatures: Signatures,
}

/// What every role's signed part carries.
#[derive(Debug, Clone, Deserialize)]
pub struct Common {
    #[serde(rename = "_type")]
    pub kind: String,
    pub spec_version: String,
    pub version: u64,
    pub expires: jiff::Timestamp,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Root {
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub consistent_snapshot: bool,
    #[serde(deserialize_with = "keys")]
    pub keys: HashMap<String, PublicKey>,
    pub roles: HashMap<String, RoleKeys>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RoleKeys {
    pub keyids: Vec<String>,
    pub threshold: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Timestamp {
    #[serde(flatten)]
    pub common: Common,
    pub meta: HashMap<String, MetaFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Snapshot {
    #[serde(flatten)]
    pub common: Common,
    pub meta: HashMap<String, MetaFile>,
}

/// What timestamp says of snapshot, and snapshot of each targets role.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MetaFile {
    pub version: u64,
    pub length: Option<u64>,
    pub hashes: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Targets {
    #[serde(flatten)]
    pub common: Common,
    pub targets: HashMap<String, TargetFile>,
    pub delegations: Option<Delegations>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TargetFile {
    pub length: u64,
    pub hashes: BTreeMap<String, String>,
    pub custom: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Delegations {
    #[serde(deserialize_with = "keys")]
    pub keys: HashMap<String, PublicKey>,
    #[serde(default)]
    pub roles: Vec<DelegatedRole>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DelegatedRole {
    pub name: String,
    pub keyids: Vec<String>,
    pub threshold: u64,
    #[serde(default)]
    pub terminating: bool,
    pub paths: Option<Vec<String>>,
    pub path_hash_prefixes: Option<Vec<String>>,
}

/// A public key we can verify with. Keys of a type we cannot use are kept as `Unusable`: they
/// never count towards a threshold, but they do not make the whole file unreadable either.
#[derive(Debug, Clone)]
pub enum PublicKey {
    Usable {
        algorithm: &'static dyn VerificationAlgorithm,
        bytes: Vec<u8>,
    },
    Unusable,
}

impl PublicKey {
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Usable { algorithm, bytes } => UnparsedPublicKey::new(*algorithm, bytes)
                .verify(message, signature)
                .is_ok(),
            PublicKey::Unusable => false,
        }
    }

    /// The key material, whatever id it is listed under: a threshold counts keys, not ids.
    fn material(&self) -> Option<&[u8]> {
        match self {
            PublicKey::Usable { bytes, .. } => Some(bytes),
            PublicKey::Unusable => None,
        }
    }
}

fn keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HashMap<String, PublicKey>, D::Error> {
    let raw = HashMap::<String, Value>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(id, value)| (id, public_key(value)))
        .collect())
}

fn public_key(value: Value) -> PublicKey {
    let Ok(key) = serde_json::from_value::<Key>(value) else {
        return PublicKey::Unusable;
    };
    let (algorithm, bytes): (&'static dyn VerificationAlgorithm, &[u8]) = match &key {
        Key::Ed25519 { keyval, .. } => (&signature::ED25519, &keyval.public),
        Key::Rsa { keyval, .. } => (&signature::RSA_PSS_2048_8192_SHA256, &keyval.public),
        Key::Ecdsa { keyval, .. } | Key::EcdsaOld { keyval, .. } => {
            (&signature::ECDSA_P256_SHA256_ASN1, &keyval.public)
        }
    };
    PublicKey::Usable {
        algorithm,
        bytes: bytes.to_vec(),
    }
}

/// A role that can be parsed from a metadata file.
pub trait Role: serde::de::DeserializeOwned {
    const TYPE: &'static str;
    fn common(&self) -> &Common;
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Role for Root {
    const TYPE: &'static str = "root";
    fn common(&self) -> &Common {
        &self.common
    }
    fn check(&self) -> Result<(), String> {
        for role in TOP_LEVEL {
            let keys = self
                .roles
                .get(role)
                .ok_or_else(|| format!("root defines no keys for the {role} role"))?;
            if keys.threshold == 0 {
                return Err(format!("the {role} role has threshold 0"));
            }
        }
        Ok(())
    }
}

impl Role for Timestamp {
    const TYPE: &'static str = "timestamp";
    fn common(&self) -> &Common {
        &self.common
    }
    fn check(&self) -> Result<(), String> {
        if self.meta.contains_key("snapshot.json") {
            Ok(())
        } else {
            Err("timestamp does not list snapshot.json".into())
        }
    }
}

impl Role for Snapshot {
    const TYPE: &'static str = "snapshot";
    fn common(&self) -> &Common {
        &self.common
    }
}

impl Role for Targets {
    const TYPE: &'static str = "targets";
    fn common(&self) -> &Common {
        &self.common
    }
    fn check(&self) -> Result<(), String> {
        if let Some((name, _)) = self.targets.iter().find(|(_, t)| t.hashes.is_empty()) {
            return Err(format!("target {name:?} lists no hash"));
        }
        let Some(delegations) = &self.delegations else {
            return Ok(());
        };
        let mut names = HashSet::new();
        for role in &delegations.roles {
            if TOP_LEVEL.contains(&role.name.as_str()) {
                return Err(format!("a delegated role is named {:?}", role.name));
            }
            if !names.insert(role.name.as_str()) {
                return Err(format!("role {:?} is delegated twice", role.name));
            }
            if role.paths.is_some() && role.path_hash_prefixes.is_some() {
                return Err(format!(
                    "role {:?} has both paths and path_hash_prefixes",
                    role.name
                ));
            }
            if role.threshold == 0 {
                return Err(format!("role {:?} has threshold 0", role.name));
            }
        }
        Ok(())
    }
}

impl Timestamp {
    pub fn snapshot_meta(&self) -> &MetaFile {
        // `check` guarantees the entry.
        &self.meta["snapshot.json"]
    }
}

/// Signatures by key id, at most one per id.
type Signatures = Vec<(String, Vec<u8>)>;

/// Any signed document split into its signed part, that part in canonical JSON, and its
/// signatures, before its schema is looked at.
fn split(bytes: &[u8], what: &str) -> Result<(Value, Vec<u8>, Signatures), Error> {
    let bad = |detail: String| Error::malformed(what, detail);
    #[derive(Deserialize)]
    struct Raw {
        signed: Value,
        signatures: Vec<RawSignature>,
    }
    #[derive(Deserialize)]
    struct RawSignature {
        keyid: String,
        sig: String,
    }
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let mut canonical = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(
        &mut canonical,
        olpc_cjson::CanonicalFormatter::new(),
    );
    serde::Serialize::serialize(&raw.signed, &mut serializer)
        .map_err(|e| bad(format!("no canonical form: {e}")))?;
    let mut seen = HashSet::new();
    let mut signatures = Vec::with_capacity(raw.signatures.len());
    for s in raw.signatures {
        if !seen.insert(s.keyid.clone()) {
            return Err(bad(format!("two signatures by key {}", s.keyid)));
        }
        // A signature that is not hex cannot verify; it simply does not count.
        signatures.push((s.keyid, hex::decode(&s.sig).unwrap_or_default()));
    }
    Ok((raw.signed, canonical, signatures))
}

/// Checks that `threshold` distinct keys among `keyids` (looked up in `keys`) signed
/// `canonical`: the one threshold rule of every check, device, repository and server alike.
fn verify_threshold(
    canonical: &[u8],
    signatures: &[(String, Vec<u8>)],
    role: &str,
    keys: &HashMap<String, PublicKey>,
    keyids: &[String],
    threshold: u64,
) -> Result<(), Error> {
    let mut valid: HashSet<&[u8]> = HashSet::new();
    for (keyid, sig) in signatures {
        if !keyids.contains(keyid) {
            continue;
        }
        let Some(key) = keys.get(keyid) else {
            continue;
        };
        if let Some(material) = key.material()
            && key.verify(canonical, sig)
        {
            valid.insert(material);
        }
    }
    if (valid.len() as u64) < threshold {
        return Err(Error::Signature {
            role: role.to_string(),
            detail: format!(
                "{} valid signature(s) by distinct keys, {threshold} required",
                valid.len()
            ),
        });
    }
    Ok(())
}

impl<T: Role> Envelope<T> {
    /// Parses `bytes` as metadata of role type `T` (the `_type` must say so), with the signed
    /// part kept in canonical form. Nothing is verified yet beyond the shape.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let what = format!("{} metadata", T::TYPE);
        let bad = |detail: String| Error::malformed(&what, detail);
        let (signed, canonical, signatures) = split(bytes, &what)?;
        let kind = signed.get("_type").and_then(Value::as_str);
        if kind != Some(T::TYPE) {
            return Err(bad(format!("_type is {kind:?}, expected {:?}", T::TYPE)));
        }
        let signed: T = serde_json::from_value(signed).map_err(|e| bad(e.to_string()))?;
        let common = signed.common();
        let major = common.spec_version.split('.').next().unwrap_or_default();
        if major != crate::SPEC_VERSION.split('.').next().unwrap_or_default()
            || !(2..=3).contains(&common.spec_version.split('.').count())
        {
            return Err(bad(format!(
                "spec_version {:?} is not one this client implements ({})",
                common.spec_version,
                crate::SPEC_VERSION
            )));
        }
        if common.version == 0 {
            return Err(bad("version 0 (versions start at 1)".into()));
        }
        signed.check().map_err(bad)?;
        Ok(Envelope {
            signed,
            canonical,
            signatures,
        })
    }

    pub fn version(&self) -> u64 {
        self.signed.common().version
    }

    pub fn expires(&self) -> jiff::Timestamp {
        self.signed.common().expires
    }

    /// Checks that `threshold` distinct keys among `keyids` (looked up in `keys`) signed this.
    pub fn verify(
        &self,
        role: &str,
        keys: &HashMap<String, PublicKey>,
        keyids: &[String],
        threshold: u64,
    ) -> Result<(), Error> {
        verify_threshold(
            &self.canonical,
            &self.signatures,
            role,
            keys,
            keyids,
            threshold,
        )
    }
}

/// A signed document of any schema (the repository's own metadata in tough's types, a signed
/// desired state), ready for [`Root::verify_document`].
#[derive(Debug, Clone)]
pub struct SignedDocument {
    canonical: Vec<u8>,
    signatures: Signatures,
}

impl SignedDocument {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, Error> {
        let (_, canonical, signatures) = split(bytes, what)?;
        Ok(Self {
            canonical,
            signatures,
        })
    }
}

impl Root {
    /// Verifies a top-level role's metadata against the keys this root gives that role.
    pub fn verify<T: Role>(&self, envelope: &Envelope<T>) -> Result<(), Error> {
        let role = &self.roles[T::TYPE];
        envelope.verify(T::TYPE, &self.keys, &role.keyids, role.threshold)
    }

    /// Verifies any document signed by the keys this root gives `role`.
    pub fn verify_document(&self, role: &str, document: &SignedDocument) -> Result<(), Error> {
        let keys = self.roles.get(role).ok_or_else(|| Error::Signature {
            role: role.to_string(),
            detail: "root defines no keys for this role".into(),
        })?;
        verify_threshold(
            &document.canonical,
            &document.signatures,
            role,
            &self.keys,
            &keys.keyids,
            keys.threshold,
        )
    }
}

impl Delegations {
    /// Verifies delegated role `name`'s metadata against the keys this delegation gives it.
    pub fn verify(&self, name: &str, envelope: &Envelope<Targets>) -> Result<(), Error> {
        let role = self
            .roles
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::Signature {
                role: name.to_string(),
                detail: "its delegator does not delegate to it".into(),
            })?;
        envelope.verify(name, &self.keys, &role.keyids, role.threshold)
    }
}

/// Checks `bytes` against a signed length and set of hashes; every listed hash must match, and
/// a hash in an algorithm this client does not know fails (it cannot be checked).
pub fn check_length_and_hashes(
    what: &str,
    bytes: &[u8],
    length: Option<u64>,
    hashes: Option<&BTreeMap<String, String>>,
) -> Result<(), Error> {
    let bad = |detail: String| Error::malformed(what, detail);
    if let Some(length) = length
        && bytes.len() as u64 != length
    {
        return Err(bad(format!(
            "{} bytes, the signed length is {length}",
            bytes.len()
        )));
    }
    if let Some(hashes) = hashes {
        let mut digests = Digests::new(hashes.keys().map(String::as_str)).map_err(bad)?;
        digests.update(bytes);
        digests.check(hashes).map_err(bad)?;
    }
    Ok(())
}

/// Running digests in each algorithm a target lists, fed chunk by chunk.
pub struct Digests {
    running: Vec<(String, aws_lc_rs::digest::Context)>,
}

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.running.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_tuple("Digests").field(&names).finish()
    }
}

impl Digests {
    /// Digests for `algorithms` (each once); an algorithm this client does not implement is an
    /// error.
    pub fn new<'a>(algorithms: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut running: Vec<(String, aws_lc_rs::digest::Context)> = Vec::new();
        for name in algorithms {
            if running.iter().any(|(n, _)| n == name) {
                continue;
            }
            let algorithm = match name {
                "sha224" => &aws_lc_rs::digest::SHA224,
                "sha256" => &aws_lc_rs::digest::SHA256,
                "sha384" => &aws_lc_rs::digest::SHA384,
                "sha512" => &aws_lc_rs::digest::SHA512,
                other => {
                    return Err(format!(
                        "hash algorithm {other:?} is not supported (sha224, sha256, sha384, sha512 are)"
                    ));
                }
            };
            running.push((name.to_string(), aws_lc_rs::digest::Context::new(algorithm)));
        }
        Ok(Digests { running })
    }

    pub fn update(&mut self, chunk: &[u8]) {
        for (_, context) in &mut self.running {
            context.update(chunk);
        }
    }

    /// The digests, hex by algorithm name.
    pub fn finish(self) -> BTreeMap<String, String> {
        self.running
            .into_iter()
            .map(|(name, context)| (name, hex::encode(context.finish())))
            .collect()
    }

    /// Compares every digest with the signed value in `expected`.
    pub fn check(self, expected: &BTreeMap<String, String>) -> Result<(), String> {
        matches(&self.finish(), expected)
    }
}

/// Whether every hash in `expected` is the one computed (`computed` may hold more).
pub fn matches(
    computed: &BTreeMap<String, String>,
    expected: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (name, want) in expected {
        if !computed
            .get(name)
            .is_some_and(|got| got.eq_ignore_ascii_case(want))
        {
            return Err(format!("{name} does not match the signed hash"));
        }
    }
    Ok(())
}

/// A role name as it appears in a URL or file name: everything but `A-Za-z0-9_.-~`
/// percent-encoded, so `../x` or `a/b` stay one path segment.
pub fn quote_role(name: &str) -> String {
    percent_encode(name, b"_.-~")
}

/// `text` with every byte but ASCII letters, digits and `keep` percent-encoded.
pub fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Any target: what the signed metadata says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainTarget {
    pub name: String,
    pub length: u64,
    /// Every hash the metadata lists, hex by algorithm name; all are checked.
    pub hashes: BTreeMap<String, String>,
}

impl PlainTarget {
    /// A target of these bytes, hashed with sha256 (tests, local sources).
    pub fn of_bytes(name: &str, bytes: &[u8]) -> Self {
        PlainTarget {
            name: name.to_string(),
            length: bytes.len() as u64,
            hashes: BTreeMap::from([("sha256".to_string(), crate::sha256_hex(bytes))]),
        }
    }

    /// The hash that names this target's download under consistent snapshots and its part
    /// file: sha256 when listed, otherwise the first listed.
    pub fn key_hex(&self) -> &str {
        self.hashes
            .get("sha256")
            .or_else(|| self.hashes.values().next())
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub(crate) fn from_file(name: &str, file: &TargetFile) -> Self {
        PlainTarget {
            name: name.to_string(),
            length: file.length,
            hashes: file.hashes.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_stay_one_path_segment() {
        assert_eq!(quote_role("../delegatedrole"), "..%2Fdelegatedrole");
        assert_eq!(quote_role("/a?#"), "%2Fa%3F%23");
        assert_eq!(quote_role("role-1_x.y~"), "role-1_x.y~");
    }

    #[test]
    fn every_listed_hash_must_match_and_unknown_algorithms_fail() {
        let bytes = b"abc";
        let sha512 = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, bytes));
        let only512 = BTreeMap::from([("sha512".to_string(), sha512.clone())]);
        check_length_and_hashes("t", bytes, Some(3), Some(&only512)).unwrap();
        let err = check_length_and_hashes("t", bytes, Some(4), Some(&only512)).unwrap_err();
        assert!(err.to_string().contains("signed length is 4"), "{err}");
        let wrong = BTreeMap::from([
            ("sha512".to_string(), sha512),
            ("sha256".to_string(), "00".repeat(32)),
        ]);
        let err = check_length_and_hashes("t", bytes, None, Some(&wrong)).unwrap_err();
        assert!(err.to_string().contains("sha256 does not match"), "{err}");
        let unknown = BTreeMap::from([("md5".to_string(), "00".into())]);
        let err = check_length_and_hashes("t", bytes, None, Some(&unknown)).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}
