use thiserror::Error;

/// Every way wire data can be refused. Each variant names the offending field, feature, topic or
/// limit, so the message can go straight into an API response or a device event.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    #[error(
        "invalid device id {id:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
    )]
    InvalidDeviceId { id: String },

    #[error(
        "invalid model name {name:?}: use 1 to 64 characters from a-z, 0-9, '_' and '-', starting with a letter"
    )]
    InvalidModelName { name: String },

    #[error("invalid message id {id:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")]
    InvalidMessageId { id: String },

    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: &'static str },

    #[error("{kind} message is {size} bytes, over the {limit}-byte limit; split or trim it")]
    MessageTooLarge {
        kind: &'static str,
        size: usize,
        limit: usize,
    },

    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },

    #[error("{kind} message has schema version {found}; this build understands {supported}")]
    UnsupportedSchema {
        kind: &'static str,
        found: u32,
        supported: u32,
    },

    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },

    #[error("unknown feature {feature:?}: the model's schema has no such feature")]
    UnknownFeature { feature: String },

    #[error("missing required feature {feature:?}")]
    MissingFeature { feature: String },

    #[error("feature {feature:?} must be {expected}, got {found}")]
    WrongFeatureType {
        feature: String,
        expected: &'static str,
        found: &'static str,
    },

    #[error(
        "feature {feature:?} is not a finite number, or is none once scaled into the model's \
         float32 input (|x| up to 3.4e38)"
    )]
    NonFiniteFeature { feature: String },

    #[error("feature {feature:?} has unseen category {value:?}; known: {known}")]
    UnseenCategory {
        feature: String,
        value: String,
        known: String,
    },

    #[error("tensor {tensor:?}: {detail}")]
    TensorMismatch { tensor: String, detail: String },
}

impl Error {
    pub(crate) fn malformed(what: &'static str, err: impl std::fmt::Display) -> Self {
        Error::Malformed {
            what,
            detail: err.to_string(),
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            detail: detail.into(),
        }
    }
}
