//! Webhooks: `/api/v1/webhooks`, signed deliveries of events to SOAR and chat tools.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/webhooks`.
#[derive(Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    pub name: String,
    /// `http://` or `https://`.
    pub url: String,
    /// Event kind patterns; all events when left out.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// The HMAC key; 32 random bytes (hex) when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for CreateWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateWebhook")
            .field("name", &self.name)
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A new webhook, with its secret: the only time the secret is shown.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookCreated {
    #[serde(flatten)]
    pub webhook: WebhookRecord,
    pub secret: String,
}

impl std::fmt::Debug for WebhookCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCreated")
            .field("webhook", &self.webhook)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A stored webhook, without its secret (what the API shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookRecord {
    pub id: String,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub created_at_ms: i64,
    pub created_by: String,
    /// Set once removed; a disabled webhook gets no more deliveries.
    pub disabled_at_ms: Option<i64>,
    pub disabled_by: Option<String>,
}

/// Where a delivery stands.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantArray,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; tried again at `next_attempt_at`.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: every attempt failed, or the webhook was removed.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A stored delivery (without its body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub event_kind: String,
    pub state: DeliveryState,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    /// The HTTP status of the last attempt, if the receiver answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub created_at_ms: i64,
    pub delivered_at_ms: Option<i64>,
}

/// `POST /api/v1/webhooks/{id}/test`: the delivery queued.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TestQueued {
    pub webhook_id: String,
    pub delivery_id: String,
}
