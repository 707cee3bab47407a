//! The WHEP exchange from the viewer's side (RFC 9725): POST the offer, take the answer and the
//! session's `Location`, DELETE the session at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{StatusCode, Url};

const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client for one viewer's WHEP requests.
pub(crate) struct WhepClient {
    http: reqwest::Client,
}

/// What a successful POST gave us.
pub(crate) struct Session {
    /// The session's absolute URL (the `Location`, resolved against the WHEP URL).
    pub(crate) url: String,
    pub(crate) answer_sdp: String,
    /// When the offer was sent: where a viewer's wait for its first picture starts.
    pub(crate) posted: Instant,
}

impl WhepClient {
    pub(crate) fn new() -> anyhow::Result<WhepClient> {
        // No proxy: a proxy from the environment must not intercept loopback or LAN requests.
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(WhepClient { http })
    }

    /// POSTs `offer_sdp`; Err says the HTTP status and the server's text on anything but 201.
    pub(crate) async fn post_offer(&self, url: &Url, offer_sdp: String) -> anyhow::Result<Session> {
        let posted = Instant::now();
        let response = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer_sdp)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status();
        let location = response.headers().get(LOCATION).cloned();
        let body = response
            .text()
            .await
            .with_context(|| format!("reading the answer to POST {url}"))?;
        if status != StatusCode::CREATED {
            bail!("POST {url} answered {status}: {}", body.trim());
        }
        let location =
            location.ok_or_else(|| anyhow!("POST {url} answered 201 without a Location header"))?;
        let location = location
            .to_str()
            .context("the Location header is not text")?;
        let session_url = url
            .join(location)
            .with_context(|| format!("bad Location {location:?}"))?;
        Ok(Session {
            url: session_url.to_string(),
            answer_sdp: body,
            posted,
        })
    }

    /// DELETEs a session; Err if the request fails or is refused.
    pub(crate) async fn delete(&self, session_url: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(session_url)
            .send()
            .await
            .with_context(|| format!("DELETE {session_url}"))?;
        if !response.status().is_success() {
            bail!("DELETE {session_url} answered {}", response.status());
        }
        Ok(())
    }
}

/// Parses a WHEP endpoint URL.
pub(crate) fn parse_url(whep_url: &str) -> anyhow::Result<Url> {
    Url::parse(whep_url).with_context(|| format!("invalid WHEP URL {whep_url:?}"))
}
