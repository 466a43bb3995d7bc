//! The sampled prediction log as the server keeps it: the answers devices' signed sampling
//! policies let leave them ([`edgefleet_protocol::sampling`]), stored per device, model and
//! prediction id, and the review queue among them: low-confidence answers that wait for a person
//! to label (or dismiss) them. A reviewer's label goes to the device like any uploaded label
//! (`crate::api::feedback`), so it counts in the version's accuracy there.

use edgefleet_protocol::feedback::Truth;
use edgefleet_protocol::sampling::PredictionSample;
use serde::{Deserialize, Serialize};

/// How many review items may be open: past a bound, a low-confidence sample is kept as a plain
/// sample and counted (`edgefleet_server_review_overflow_total`), so a flood of doubtful answers
/// cannot bury the queue people work through, and one device (broken or hostile: the review flag
/// is its word) cannot take the whole queue from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReviewBounds {
    pub per_model: u64,
    pub per_device: u64,
}

/// 10,000 open per model, 500 of them from any one device.
pub const REVIEW_BOUNDS: ReviewBounds = ReviewBounds {
    per_model: 10_000,
    per_device: 500,
};

/// Days samples are kept (by arrival).
pub const RETAIN_DAYS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    /// Waiting for a person.
    Open,
    /// Labelled; the label went to the device.
    Labelled,
    /// Looked at and set aside without a label.
    Dismissed,
}

impl ReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Open => "open",
            ReviewState::Labelled => "labelled",
            ReviewState::Dismissed => "dismissed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(ReviewState::Open),
            "labelled" => Some(ReviewState::Labelled),
            "dismissed" => Some(ReviewState::Dismissed),
            _ => None,
        }
    }
}

/// Where a sample stands in the review queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Review {
    pub state: ReviewState,
    /// The reviewer's label, once labelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub truth: Option<Truth>,
    /// Who closed it (the operator token's name), and when (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
}

/// One sample as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredSample {
    pub device: String,
    pub model: String,
    pub version: String,
    /// When the server received it (Unix seconds); `sample.at_unix` is the device's clock.
    pub received_at: i64,
    #[schema(value_type = Object)]
    pub sample: PredictionSample,
    /// For a low-confidence sample that entered the review queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
}

/// Which samples to list, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleFilter {
    pub model: Option<String>,
    pub version: Option<String>,
    pub device: Option<String>,
    pub review: Option<ReviewState>,
    pub limit: u32,
}
