//! vipcast's controller client, shared by agents, replicators and the tools.
//!
//! ```text
//!  ControllerClient ── typed calls (register, claim, report VRRP, report an
//!        │             assist; any other call by method and path), one
//!        │             retry policy ([`Retry`]); errors carry the
//!        │             controller's {"error":{code,message,field}}
//!        ├── WatchFollower ── GET /v1/watch/... ──NDJSON──► Message::apply ──► watch::Sender<Synced>
//!        │        ▲                                                  │
//!        │        └─ reconnect with ?from=<last revision> (100 ms .. 2 s backoff)
//!        └── heartbeats ── UDP datagram to the controller's port, every interval
//!  ClaimDedup ── which claims to make: no clock inside, `now` is an argument
//! ```

mod dedup;
mod follow;
mod heartbeat;

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use vipcast_api::{AssistRecord, ChassisRegistration, Claim, ClaimAnswer, ReplicatorRegistration, VrrpReport};

pub use dedup::ClaimDedup;
pub use follow::{Synced, WatchFollower};
pub use heartbeat::heartbeats;
pub use reqwest::Method;

/// How long connecting to the controller may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The controller answered with a client error (4xx): retrying the same
    /// call cannot help.
    #[error("{status}: {message} ({code})")]
    Refused {
        status: u16,
        /// The error body's `code` (`not_member`, `forbidden`, ...), or
        /// `error` when the body had none.
        code: String,
        message: String,
        field: Option<String>,
    },
    /// No answer, a server error (5xx), or an answer that cannot be read,
    /// after the retries the policy allows.
    #[error("{0}")]
    Unavailable(String),
}

impl Error {
    /// Whether the controller refused the call (as opposed to not answering).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Error::Refused { .. })
    }
}

/// The one retry policy of calls on the failover path (claims, reports):
/// transport errors and 5xx are retried, refusals are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Pause between attempts.
    pub pause: Duration,
}

impl Retry {
    /// Three attempts, 50 ms apart: a claim is worth little once VRRP's own
    /// timers have run out, so it is not retried for long.
    pub const FAILOVER: Retry = Retry { attempts: 3, pause: Duration::from_millis(50) };
    /// One attempt.
    pub const ONCE: Retry = Retry { attempts: 1, pause: Duration::ZERO };
}

/// A client of one controller (`http://host:port`). Cheap to clone: clones
/// share the connection pool, so a claim on the failover path reuses a
/// kept-alive connection.
#[derive(Debug, Clone)]
pub struct ControllerClient {
    /// Shared by every clone; replaced by [`ControllerClient::reload_tls`].
    http: std::sync::Arc<std::sync::RwLock<reqwest::Client>>,
    base: String,
}

/// The HTTP client: keep-alive, no Nagle, a connect timeout; with `tls`,
/// mutual TLS.
fn http_client(tls: Option<&vipcast_tls::ClientFiles>) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90));
    if let Some(files) = tls {
        let config = files.config().map_err(|e| Error::Unavailable(format!("TLS: {e}")))?;
        builder = builder.tls_backend_preconfigured(config);
    }
    builder.build().map_err(|e| Error::Unavailable(format!("HTTP client: {e}")))
}

impl ControllerClient {
    /// A client of the controller at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<ControllerClient, Error> {
        ControllerClient::with_tls(base, None)
    }

    /// A client of the controller at `base`; with `tls`, over mutual TLS
    /// (`https://host:port`): the controller verified against the CA, this
    /// client's certificate presented. Connections are kept alive, so a
    /// claim on the failover path costs no handshake.
    pub fn with_tls(base: &str, tls: Option<&vipcast_tls::ClientFiles>) -> Result<ControllerClient, Error> {
        let base = base.trim().trim_end_matches('/').to_string();
        let scheme = if tls.is_some() { "https://" } else { "http://" };
        if !base.starts_with(scheme) || base.len() <= scheme.len() {
            let hint = if tls.is_some() {
                "with --ca/--cert/--key the URL is https://"
            } else {
                "without --ca/--cert/--key the URL is http://"
            };
            return Err(Error::Unavailable(format!("controller URL {base:?} is not {scheme}host:port ({hint})")));
        }
        let http = std::sync::Arc::new(std::sync::RwLock::new(http_client(tls)?));
        Ok(ControllerClient { http, base })
    }

    /// Reads `tls`'s files again (SIGHUP: a renewed certificate): the
    /// connections made from now on, by this client and every clone of
    /// it, present the new certificate. On error nothing changes.
    pub fn reload_tls(&self, tls: &vipcast_tls::ClientFiles) -> Result<(), Error> {
        let fresh = http_client(Some(tls))?;
        *self.http.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// The controller's base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client (for streams).
    pub fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Any call: `method` on `path` (e.g. `/v1/vpcs`) with an optional JSON
    /// body, under `retry`. The answer's JSON (`Null` for an empty body).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
        retry: Retry,
    ) -> Result<serde_json::Value, Error> {
        let url = format!("{}{path}", self.base);
        let mut last = Error::Unavailable(format!("{method} {path}: not sent"));
        for attempt in 0..retry.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(retry.pause).await;
            }
            let mut req = self.http().request(method.clone(), &url);
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let text = match resp.text().await {
                        Ok(t) => t,
                        Err(e) => {
                            last = Error::Unavailable(format!("{method} {path}: reading the answer: {e}"));
                            continue;
                        }
                    };
                    let value = if text.is_empty() {
                        serde_json::Value::Null
                    } else {
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                    };
                    if status.is_success() {
                        return Ok(value);
                    }
                    let err = answer_error(status, &value);
                    if status.is_client_error() {
                        return Err(err);
                    }
                    tracing::warn!(%method, path, attempt, %status, "controller error; retrying");
                    last = err;
                }
                Err(e) => {
                    tracing::warn!(%method, path, attempt, error = %e, "controller unreachable; retrying");
                    last = Error::Unavailable(format!("cannot reach the controller at {}: {e}", self.base));
                }
            }
        }
        Err(last)
    }

    /// [`ControllerClient::call`], its answer decoded as `T`.
    pub async fn call_typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + Sync)>,
        retry: Retry,
    ) -> Result<T, Error> {
        let value = self.call(method.clone(), path, body, retry).await?;
        serde_json::from_value(value)
            .map_err(|e| Error::Unavailable(format!("{method} {path}: unexpected answer: {e}")))
    }

    /// Registers chassis `name` once.
    pub async fn register_chassis(&self, name: &str, reg: &ChassisRegistration) -> Result<(), Error> {
        self.call(Method::PUT, &format!("/v1/chassis/{name}"), Some(reg), Retry::ONCE).await.map(drop)
    }

    /// Registers chassis `name`, retrying (100 ms doubling to 2 s apart)
    /// until the controller accepts it or refuses it for good.
    pub async fn register_chassis_until_accepted(&self, name: &str, reg: &ChassisRegistration) -> Result<(), Error> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.register_chassis(name, reg).await {
                Ok(()) => return Ok(()),
                Err(e @ Error::Refused { .. }) => return Err(e),
                Err(e) => tracing::warn!(error = %e, "registering: controller unavailable; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Registers replicator `name` once.
    pub async fn register_replicator(&self, name: &str, reg: &ReplicatorRegistration) -> Result<(), Error> {
        self.call(Method::PUT, &format!("/v1/replicators/{name}"), Some(reg), Retry::ONCE).await.map(drop)
    }

    /// Claims VIP `vip` ([`Retry::FAILOVER`]).
    pub async fn claim(&self, vip: &str, claim: &Claim) -> Result<ClaimAnswer, Error> {
        self.call_typed(Method::POST, &format!("/v1/vips/{vip}/claims"), Some(claim), Retry::FAILOVER).await
    }

    /// Reports a VRRP master ([`Retry::FAILOVER`]).
    pub async fn report_vrrp(&self, report: &VrrpReport) -> Result<(), Error> {
        self.call(Method::POST, "/v1/vrrp", Some(report), Retry::FAILOVER).await.map(drop)
    }

    /// Records an assisted handover on router `router_id` of `vpc`
    /// ([`Retry::FAILOVER`]).
    pub async fn report_assist(&self, vpc: &str, router_id: &str, record: &AssistRecord) -> Result<(), Error> {
        self.call(Method::POST, &format!("/v1/vrrp/{vpc}/{router_id}/assists"), Some(record), Retry::FAILOVER)
            .await
            .map(drop)
    }
}

/// The error an answer with status `status` and body `body` stands for.
fn answer_error(status: reqwest::StatusCode, body: &serde_json::Value) -> Error {
    let text = |p: &str| body.pointer(p).and_then(serde_json::Value::as_str).map(str::to_string);
    let message = text("/error/message").unwrap_or_else(|| match body {
        serde_json::Value::Null => status.canonical_reason().unwrap_or("no reason given").to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if status.is_client_error() {
        Error::Refused {
            status: status.as_u16(),
            code: text("/error/code").unwrap_or_else(|| "error".into()),
            message,
            field: text("/error/field"),
        }
    } else {
        Error::Unavailable(format!("controller answered {status}: {message}"))
    }
}
