//! The few admin-API calls the operator makes, with its own API key: mint enrolment tokens for its
//! region, list the region's data planes, remove the ones it scaled away.

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the control plane at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the control plane refused {what} ({status}): {body}")]
    Refused { what: String, status: u16, body: String },
}

/// A data plane as the control plane lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct RegisteredDataPlane {
    pub id: String,
    pub region: String,
    pub hostname: String,
    pub version: String,
    /// Unix milliseconds.
    pub last_heartbeat_at: Option<i64>,
    pub acked_revision: i64,
}

pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl ControlPlane {
    pub fn new(http: reqwest::Client, admin_url: &str, key: &str) -> Self {
        ControlPlane { http, base: admin_url.trim_end_matches('/').to_string(), key: key.to_string() }
    }

    async fn call(&self, what: &str, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let response = request
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| Error::Unreachable { url: self.base.clone(), message: e.to_string() })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Err(Error::Refused { what: what.into(), status, body: body.chars().take(500).collect() })
    }

    /// A one-time enrolment token for `region`.
    pub async fn enrollment_token(&self, region: &str) -> Result<String, Error> {
        let what = "an enrolment token";
        let r = self
            .call(
                what,
                self.http.post(format!("{}/v1/enrollment-tokens", self.base)).json(&serde_json::json!({"region": region})),
            )
            .await?;
        let body: serde_json::Value =
            r.json().await.map_err(|e| Error::Unreachable { url: self.base.clone(), message: e.to_string() })?;
        body["token"].as_str().map(str::to_string).ok_or_else(|| Error::Refused {
            what: what.into(),
            status: 200,
            body: body.to_string(),
        })
    }

    /// The data planes enrolled in `region`.
    pub async fn data_planes(&self, region: &str) -> Result<Vec<RegisteredDataPlane>, Error> {
        let r = self.call("the list of data planes", self.http.get(format!("{}/v1/data-planes", self.base))).await?;
        let all: Vec<RegisteredDataPlane> =
            r.json().await.map_err(|e| Error::Unreachable { url: self.base.clone(), message: e.to_string() })?;
        Ok(all.into_iter().filter(|d| d.region == region).collect())
    }

    pub async fn remove(&self, id: &str) -> Result<(), Error> {
        match self
            .call(&format!("removing data plane {id}"), self.http.delete(format!("{}/v1/data-planes/{id}", self.base)))
            .await
        {
            Err(Error::Refused { status: 404, .. }) => Ok(()),
            other => other.map(|_| ()),
        }
    }
}
