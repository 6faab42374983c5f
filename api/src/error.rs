//! Every error answer of the API: its status, and `{"error": CODE, "detail": TEXT}`.

use serde::{Deserialize, Serialize};

/// An error as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A short, stable, machine-readable code, e.g. `not_found`, `forbidden`, `conflict`.
    pub error: String,
    /// What went wrong, for a person: names the input at fault.
    pub detail: String,
}
