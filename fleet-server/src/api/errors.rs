//! Every failure answers JSON `{"error": "...", "field": "..."}`: what was wrong and, for a bad
//! request, which field, so a script can point at it.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::artifacts::ArtifactError;
use crate::desired::DesiredError;
use crate::store::StoreError;
use crate::tufhost::HostError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            field: None,
        }
    }

    pub fn bad_field(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: error.into(),
            field: Some(field.into()),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error)
    }

    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, error)
    }

    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, error)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {error}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, axum::Json(&self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"edgefleet\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Conflict { .. } => Self::new(StatusCode::CONFLICT, e.to_string()),
            StoreError::Enrollment { .. } => Self::new(StatusCode::FORBIDDEN, e.to_string()),
            StoreError::Backend(_) => Self::internal(e),
        }
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::NotInitialised | HostError::AlreadyInitialised => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            HostError::Tuf(edgefleet_tuf::Error::Concurrent { .. }) => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            HostError::Tuf(edgefleet_tuf::Error::Storage(_))
            | HostError::ForeignKeys { .. }
            | HostError::Import { .. }
            | HostError::Rotation(_) => Self::internal(e),
            HostError::MissingArtifact { .. } | HostError::Tuf(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
        }
    }
}

impl From<ArtifactError> for ApiError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::BadDigest(_) => Self::bad_field("sha256", e.to_string()),
            ArtifactError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            ArtifactError::DigestMismatch { .. } | ArtifactError::Truncated { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            ArtifactError::Body(_) => Self::new(StatusCode::BAD_REQUEST, e.to_string()),
            ArtifactError::Store { .. } | ArtifactError::BadUrl { .. } => Self::internal(e),
        }
    }
}

impl From<DesiredError> for ApiError {
    fn from(e: DesiredError) -> Self {
        let field = e.field();
        let error = match e {
            DesiredError::NotSigned { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            DesiredError::ListedTwice { .. } => Self::new(StatusCode::BAD_REQUEST, e.to_string()),
            DesiredError::UnknownDevice(_) => Self::not_found(e.to_string()),
            DesiredError::NothingSigned | DesiredError::Random => Self::internal(e),
            DesiredError::Store(e) => e.into(),
            DesiredError::Host(e) => e.into(),
        };
        match field {
            Some(field) => error.with_field(field),
            None => error,
        }
    }
}
