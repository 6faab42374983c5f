//! `cordon webhooks add|list|remove|deliveries|test` (admin): outgoing webhooks signed with
//! HMAC-SHA256, and how their deliveries went.

use clap::Subcommand;

use cordon_api::webhooks::{
    CreateWebhook, DeliveryRecord, TestQueued, WebhookCreated, WebhookRecord,
};

use crate::{
    client::{path_segment, Client},
    output, CliError,
};

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Add a webhook and print its secret (shown this once).
    Add {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// Where to POST events: https://, or http:// to a receiver on the controller's own
        /// host. (Positional: `--url` names the controller.)
        #[arg(value_name = "URL")]
        endpoint: String,
        /// Event kinds to send, e.g. `incident.*`, `task.failed` (repeat, or comma-separate);
        /// every event when left out.
        #[arg(long = "event", value_delimiter = ',')]
        events: Vec<String>,
        /// The HMAC secret (16-256 characters); a random one when left out.
        #[arg(long, env = "CORDON_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// List webhooks (never with their secrets).
    List {
        /// Include removed ones.
        #[arg(long)]
        all: bool,
    },
    /// Remove a webhook: it gets no more events; its pending deliveries are given up.
    Remove { id: String },
    /// A webhook's deliveries, newest first: state, attempts, last status and error.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue a `webhook.test` event for one webhook.
    Test { id: String },
}

pub async fn run(
    client: &Client,
    command: WebhooksCommand,
    json: bool,
) -> Result<String, CliError> {
    match command {
        WebhooksCommand::Add {
            name,
            endpoint,
            events,
            secret,
        } => {
            let request = CreateWebhook {
                name,
                url: endpoint,
                events: (!events.is_empty()).then_some(events),
                secret,
            };
            let created: WebhookCreated = client.post("/api/v1/webhooks", &request).await?;
            if json {
                return Ok(output::json(&created));
            }
            let w = &created.webhook;
            Ok(format!(
                "id:     {}\nname:   {}\nurl:    {}\nevents: {}\nsecret: {}\n\n\
                 The secret is shown only now. Each delivery carries\n  \
                 X-Cordon-Signature: sha256=HEX(HMAC-SHA256(secret, TIMESTAMP + \".\" + BODY))\n\
                 with TIMESTAMP from the X-Cordon-Timestamp header.\n",
                w.id,
                w.name,
                w.url,
                w.events.join(","),
                created.secret
            ))
        }
        WebhooksCommand::List { all } => {
            let path = if all {
                "/api/v1/webhooks?all=true"
            } else {
                "/api/v1/webhooks"
            };
            let webhooks: Vec<WebhookRecord> = client.get(path).await?;
            if json {
                return Ok(output::json(&webhooks));
            }
            let rows: Vec<Vec<String>> = webhooks
                .iter()
                .map(|w| {
                    vec![
                        w.id.clone(),
                        w.name.clone(),
                        if w.disabled_at_ms.is_some() {
                            "removed".into()
                        } else {
                            "enabled".into()
                        },
                        w.events.join(","),
                        output::time(Some(w.created_at_ms)),
                        w.url.clone(),
                    ]
                })
                .collect();
            Ok(output::table(
                &["ID", "NAME", "STATE", "EVENTS", "CREATED", "URL"],
                &rows,
            ))
        }
        WebhooksCommand::Remove { id } => {
            let webhook: WebhookRecord = client
                .delete(&format!("/api/v1/webhooks/{}", path_segment(&id)?))
                .await?;
            if json {
                return Ok(output::json(&webhook));
            }
            Ok(format!(
                "webhook {} ({}) removed\n",
                webhook.id, webhook.name
            ))
        }
        WebhooksCommand::Deliveries { id, limit } => {
            let deliveries: Vec<DeliveryRecord> = client
                .get(&format!(
                    "/api/v1/webhooks/{}/deliveries?limit={}",
                    path_segment(&id)?,
                    limit.clamp(1, 1000)
                ))
                .await?;
            if json {
                return Ok(output::json(&deliveries));
            }
            let rows: Vec<Vec<String>> = deliveries
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.event_kind.clone(),
                        d.state.as_str().to_owned(),
                        d.attempts.to_string(),
                        d.last_status.map_or_else(|| "-".into(), |s| s.to_string()),
                        output::time(Some(d.created_at_ms)),
                        d.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            Ok(output::table(
                &[
                    "ID",
                    "EVENT",
                    "STATE",
                    "ATTEMPTS",
                    "STATUS",
                    "CREATED",
                    "LAST ERROR",
                ],
                &rows,
            ))
        }
        WebhooksCommand::Test { id } => {
            let queued: TestQueued = client
                .post(
                    &format!("/api/v1/webhooks/{}/test", path_segment(&id)?),
                    &serde_json::json!({}),
                )
                .await?;
            if json {
                return Ok(output::json(&queued));
            }
            Ok(format!(
                "test delivery {} queued; see `cordon webhooks deliveries {}`\n",
                queued.delivery_id, queued.webhook_id
            ))
        }
    }
}
