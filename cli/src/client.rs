//! HTTPS client for the API: trusts only the deployment CA, sends the bearer token, turns API
//! errors into [`CliError`]s with the server's detail.

use std::{sync::Arc, time::Duration};

use reqwest::{Method, StatusCode};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use serde::{de::DeserializeOwned, Serialize};

use cordon_api::{
    error::{ErrorBody, ErrorCode},
    format::error_chain,
};

use crate::{config::Resolved, CliError};

pub struct Client {
    http: reqwest::Client,
    base: String,
    /// None for the one route that needs none (`health`).
    token: Option<String>,
}

impl Client {
    pub fn new(settings: &Resolved) -> Result<Self, CliError> {
        let ca = CertificateDer::from_pem_file(&settings.ca_cert).map_err(|e| {
            CliError::Usage(format!(
                "CA certificate {}: {e}",
                settings.ca_cert.display()
            ))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).map_err(|e| {
            CliError::Usage(format!(
                "CA certificate {}: {e}",
                settings.ca_cert.display()
            ))
        })?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| CliError::Other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| CliError::Other(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: settings.url.trim_end_matches('/').to_string(),
            token: settings.token.as_deref().map(|t| t.trim().to_string()),
        })
    }

    /// `request` with the bearer token, when there is one.
    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.request::<(), T>(Method::GET, path, None).await
    }

    /// A GET with query parameters, encoded for the URL.
    pub async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", self.base);
        send(&url, self.authed(self.http.get(&url).query(query))).await
    }

    /// A GET whose answer is text, not JSON (e.g. a Markdown report). Errors are still JSON.
    pub async fn get_text(&self, path: &str) -> Result<String, CliError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .authed(self.http.get(&url))
            .send()
            .await
            .map_err(|e| send_error(&url, &e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CliError::Unreachable(format!("{url}: reading response: {e}")))?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        String::from_utf8(bytes.to_vec())
            .map_err(|e| CliError::Other(format!("{url}: the answer is not UTF-8: {e}")))
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// A POST whose body is `bytes` as they are (e.g. an alert file, so the controller hashes
    /// exactly what the file holds), sent as JSON.
    pub async fn post_raw<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", self.base);
        let request = self
            .authed(self.http.post(&url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes);
        send(&url, request).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.request(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.request::<(), T>(Method::DELETE, path, None).await
    }

    /// Opens a GET whose answer is a stream that stays open (server-sent events): the
    /// response, once its status is a success, for the caller to read as it arrives.
    pub async fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .authed(self.http.get(&url))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .timeout(STREAM_TIMEOUT);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.map_err(|e| send_error(&url, &e))?;
        if !response.status().is_success() {
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        Ok(response)
    }

    /// Streams `path`'s body into `dest` (created new, never overwritten), hashing it on the
    /// way; returns its length and SHA-256. A failed download leaves no file behind.
    pub async fn download(
        &self,
        path: &str,
        dest: &std::path::Path,
        label: &str,
    ) -> Result<(u64, String), CliError> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;

        let url = format!("{}{path}", self.base);
        let mut response = self
            .authed(self.http.get(&url))
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| send_error(&url, &e))?;
        if !response.status().is_success() {
            let status = response.status();
            let bytes = response.bytes().await.unwrap_or_default();
            return Err(api_error(status, &bytes));
        }
        // Evidence is whatever a host held: readable by this user only.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .await
            .map_err(|e| CliError::Usage(format!("{}: {e}", dest.display())))?;
        let mut progress = crate::progress::Progress::bytes(label, response.content_length());
        let mut hasher = sha2::Sha256::new();
        let mut total = 0u64;
        let result: Result<(), CliError> = async {
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| CliError::Unreachable(format!("{url}: reading: {e}")))?
            {
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| CliError::Other(format!("{}: {e}", dest.display())))?;
                total += chunk.len() as u64;
                progress.advance(chunk.len() as u64);
            }
            file.sync_all()
                .await
                .map_err(|e| CliError::Other(format!("{}: {e}", dest.display())))
        }
        .await;
        progress.finish();
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(e);
        }
        Ok((total, hex::encode(hasher.finalize())))
    }

    async fn request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.authed(self.http.request(method, &url));
        if let Some(body) = body {
            request = request.json(body);
        }
        send(&url, request).await
    }
}

/// Why a request got no answer: [`CliError::Tls`] when TLS itself failed (the controller's
/// certificate does not verify against our CA, or the two sides share no protocol), which no
/// retry mends; otherwise [`CliError::Unreachable`], which a follow mode tries again.
fn send_error(url: &str, e: &reqwest::Error) -> CliError {
    let text = format!("{url}: {}", error_chain(e));
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return CliError::Tls(text);
        }
        // An io::Error's `source()` passes over the error it wraps (often another io::Error
        // around rustls's); `get_ref` has it.
        next = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    CliError::Unreachable(text)
}

/// Sends `request` (to `url`) and reads its JSON answer, or the API's error.
async fn send<T: DeserializeOwned>(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<T, CliError> {
    let response = request.send().await.map_err(|e| send_error(url, &e))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| CliError::Unreachable(format!("{url}: reading response: {e}")))?;
    if status.is_success() {
        return serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Other(format!("{url}: unexpected response: {e}")));
    }
    Err(api_error(status, &bytes))
}

/// Longest a download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Longest an event stream is followed.
const STREAM_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The CLI error for an API error response.
fn api_error(status: StatusCode, bytes: &[u8]) -> CliError {
    let body = serde_json::from_slice::<ErrorBody>(bytes).ok();
    let detail = match &body {
        Some(body) => format!("{}: {}", body.error, body.detail),
        None => String::from_utf8_lossy(bytes).chars().take(500).collect(),
    };
    let unavailable = body
        .as_ref()
        .is_some_and(|b| b.error == ErrorCode::Unavailable);
    match status {
        // A proxy in front of a controller that is away, or a controller whose database is:
        // as good as unreachable, and worth trying again.
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => {
            CliError::Unreachable(format!("{status}: {detail}"))
        }
        StatusCode::SERVICE_UNAVAILABLE if unavailable => CliError::Unreachable(detail),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CliError::Denied(detail),
        StatusCode::NOT_FOUND => CliError::NotFound(detail),
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => CliError::Usage(detail),
        _ => CliError::Other(format!("{status}: {detail}")),
    }
}

/// An id the user gave, as one URL path segment: ids are letters, digits, `-` and `_`, so
/// anything else (a `/`, `..`, `?`) is refused before it can name another route.
pub fn path_segment(id: &str) -> Result<&str, CliError> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(id)
    } else {
        Err(CliError::Usage(format!(
            "{id:?} is not an id: ids are letters, digits, - and _"
        )))
    }
}
