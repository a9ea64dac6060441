//! A small client of Prometheus' HTTP API: instant and range queries, and the alerts list.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// How long one API call may take: Prometheus answers locally in milliseconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a Prometheus call failed.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The base URL is not `http://HOST:PORT`.
    #[error("--prometheus must be http://HOST:PORT, got {0:?}")]
    BadUrl(String),
    /// Connecting or exchanging the request failed.
    #[error("{0}")]
    Transport(String),
    /// No answer within the call timeout.
    #[error("no answer from Prometheus within {CALL_TIMEOUT:?}")]
    Timeout,
    /// Prometheus answered with an error, e.g. a query that does not parse.
    #[error("Prometheus refused {what}: {error}")]
    Refused {
        /// The query or path.
        what: String,
        /// Prometheus' words.
        error: String,
    },
}

/// One series of a range query: its labels and its (unix seconds, value) samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels, `__name__` included where the result keeps it.
    pub labels: BTreeMap<String, String>,
    /// Samples in time order; NaN and infinities are dropped.
    pub samples: Vec<(f64, f64)>,
}

/// An alert as `/api/v1/alerts` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct Alert {
    /// Its labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
}

#[derive(Deserialize)]
struct Envelope<T> {
    status: String,
    data: Option<T>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Matrix {
    result: Vec<RawSeries>,
}

#[derive(Deserialize)]
struct RawSeries {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    value: Option<(f64, String)>,
}

#[derive(Deserialize)]
struct Alerts {
    alerts: Vec<Alert>,
}

/// A Prometheus server.
#[derive(Debug, Clone)]
pub struct Prometheus {
    authority: String,
}

impl Prometheus {
    /// The server at `url` (`http://HOST:PORT`).
    pub fn new(url: &str) -> Result<Self, PromError> {
        let authority = url
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| PromError::BadUrl(url.to_owned()))?;
        Ok(Prometheus {
            authority: authority.to_owned(),
        })
    }

    /// Every series `expr` gives from `start` to `end` (unix seconds), one sample per `step`.
    pub async fn range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<Series>, PromError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .append_pair("start", &format!("{start:.3}"))
            .append_pair("end", &format!("{end:.3}"))
            .append_pair("step", &format!("{step}"))
            .finish();
        let m: Matrix = self.call("/api/v1/query_range", Some(form), expr).await?;
        Ok(m.result.into_iter().map(series).collect())
    }

    /// What `expr` gives now.
    pub async fn instant(&self, expr: &str) -> Result<Vec<Series>, PromError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .finish();
        let m: Matrix = self.call("/api/v1/query", Some(form), expr).await?;
        Ok(m.result.into_iter().map(series).collect())
    }

    /// The alerts pending or firing now.
    pub async fn alerts(&self) -> Result<Vec<Alert>, PromError> {
        let a: Alerts = self.call("/api/v1/alerts", None, "/api/v1/alerts").await?;
        Ok(a.alerts)
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        form: Option<String>,
        what: &str,
    ) -> Result<T, PromError> {
        let body = tokio::time::timeout(CALL_TIMEOUT, self.exchange(path, form))
            .await
            .map_err(|_| PromError::Timeout)??;
        let env: Envelope<T> = serde_json::from_slice(&body)
            .map_err(|e| PromError::Transport(format!("{path}: not an API answer: {e}")))?;
        match (env.status.as_str(), env.data) {
            ("success", Some(data)) => Ok(data),
            _ => Err(PromError::Refused {
                what: what.to_owned(),
                error: env.error.unwrap_or(env.status),
            }),
        }
    }

    async fn exchange(&self, path: &str, form: Option<String>) -> Result<Bytes, PromError> {
        let t = |e: &dyn std::fmt::Display| PromError::Transport(format!("{path}: {e}"));
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| t(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| t(&e))?;
        tokio::spawn(conn);
        let builder = Request::builder().uri(path).header("host", &self.authority);
        let req = match form {
            Some(form) => builder
                .method("POST")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form))),
            None => builder.method("GET").body(Full::new(Bytes::new())),
        }
        .map_err(|e| t(&e))?;
        let resp = sender.send_request(req).await.map_err(|e| t(&e))?;
        let body = resp.into_body().collect().await.map_err(|e| t(&e))?;
        Ok(body.to_bytes())
    }
}

fn series(raw: RawSeries) -> Series {
    let samples = raw
        .values
        .into_iter()
        .chain(raw.value)
        .filter_map(|(t, v)| {
            v.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| (t, v))
        })
        .collect();
    Series {
        labels: raw.metric,
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_base_urls_are_taken() {
        assert!(Prometheus::new("http://127.0.0.1:9099").is_ok());
        assert!(Prometheus::new("http://127.0.0.1:9099/").is_ok());
        assert!(Prometheus::new("https://p:9090").is_err());
        assert!(Prometheus::new("http://p:9090/prom").is_err());
    }

    #[test]
    fn a_matrix_keeps_finite_samples_in_order() {
        let raw: RawSeries = serde_json::from_str(
            r#"{"metric":{"room":"1"},"values":[[1,"0.5"],[2,"NaN"],[3,"+Inf"],[4,"2"]]}"#,
        )
        .unwrap();
        let s = series(raw);
        assert_eq!(s.samples, vec![(1.0, 0.5), (4.0, 2.0)]);
        assert_eq!(s.labels["room"], "1");
    }
}
