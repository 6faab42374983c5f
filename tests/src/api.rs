//! A minimal HTTPS client of the controller's API for assertions; every JSON answer it gets is
//! held to the OpenAPI document ([`crate::contract`]).

use std::{path::Path, time::Duration};

use crate::contract;

/// A minimal API client for assertions.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// An API error response.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Api {
    pub fn new(base: &str, ca_cert: &Path, token: &str) -> Self {
        use rustls_pki_types::{pem::PemObject, CertificateDer};
        let ca = CertificateDer::from_pem_file(ca_cert).expect("CA cert");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("CA into root store");
        let tls = rustls::ClientConfig::builder_with_provider(cordon_controller::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        Self {
            http,
            base: base.to_string(),
            token: token.to_string(),
        }
    }

    pub fn with_token(&self, token: &str) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            token: token.to_string(),
        }
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ApiFailure> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, ApiFailure> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn put_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, ApiFailure> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn patch_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, ApiFailure> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub async fn delete_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, ApiFailure> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// A GET whose body is bytes (evidence downloads): status and body.
    pub async fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let response = self.get_response(path).await;
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("body").to_vec();
        (status, body)
    }

    /// A GET whose body is text (reports): status, content type and body.
    pub async fn get_text(&self, path: &str) -> (u16, String, String) {
        let response = self.get_response(path).await;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, content_type, response.text().await.expect("body"))
    }

    /// Sends raw bytes as a JSON body (for malformed-input tests).
    pub async fn post_raw(&self, path: &str, body: &'static str) -> ApiFailure {
        self.post_bytes(path, body.as_bytes().to_vec()).await
    }

    /// POSTs `body` as JSON bytes as they are: the status and the JSON answer, whatever the
    /// status (for alert payloads, whose exact bytes matter).
    pub async fn post_bytes(&self, path: &str, body: Vec<u8>) -> ApiFailure {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        contract::check("POST", path, status, &body);
        ApiFailure { status, body }
    }

    /// The answer to a GET of `path`, whatever its status.
    async fn get_response(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("request")
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiFailure> {
        let request = request
            .bearer_auth(&self.token)
            .build()
            .map_err(|e| ApiFailure {
                status: 0,
                body: serde_json::json!({ "error": e.to_string() }),
            })?;
        let (method, path) = (
            request.method().to_string(),
            request.url().path().to_owned(),
        );
        let response = self.http.execute(request).await.map_err(|e| ApiFailure {
            status: 0,
            body: serde_json::json!({ "error": e.to_string() }),
        })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        contract::check(&method, &path, status, &body);
        if (200..300).contains(&status) {
            // From the bytes, as a client reads them (receipts keep their signed JSON exactly).
            serde_json::from_slice(&bytes).map_err(|e| ApiFailure {
                status,
                body: serde_json::json!({ "error": format!("decode: {e}"), "body": body }),
            })
        } else {
            Err(ApiFailure { status, body })
        }
    }
}
