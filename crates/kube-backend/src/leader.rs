//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles.
//!
//! The rules are client-go's: a candidate takes the Lease when it does not exist, when it has no
//! holder (released), or when the holder has not renewed it for `leaseDurationSeconds` —
//! measured on the candidate's own clock from the moment it last saw the record change, so
//! clock skew between machines does not matter. Every write carries the resourceVersion read,
//! so two candidates cannot both win: the loser's write is rejected with a conflict. The leader
//! renews every retry period; when it cannot renew for `renew_deadline`, or finds another holder
//! in the record, it has lost, and [`Leadership::lost`] fires at once. On shutdown
//! [`Leadership::release`] clears the holder, so a waiting replica takes over on its next try
//! instead of after the lease expires.

use kube::api::{Api, PostParams};
use kube::core::{ApiResource, DynamicObject};
use kube::Client;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use trueup_core::runtime::CancellationToken;

/// Where the Lease lives and how long leadership lasts. The defaults are Flux's.
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity, written to `holderIdentity`; must differ between replicas.
    pub identity: String,
    /// How long a candidate waits after it last saw the record change before it takes over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// Time between tries (renewals of the leader, acquisitions of the others).
    pub retry_period: Duration,
}

/// The Lease's default name.
pub const DEFAULT_LEASE_NAME: &str = "trueup-leader-election";

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            lease_name: DEFAULT_LEASE_NAME.into(),
            namespace: default_namespace(),
            identity: default_identity(),
            lease_duration: Duration::from_secs(35),
            renew_deadline: Duration::from_secs(30),
            retry_period: Duration::from_secs(5),
        }
    }
}

/// The namespace the operator runs in: `$RUNTIME_NAMESPACE` (Flux's variable), else the
/// service account's namespace when in a pod, else `flux-system`.
pub fn default_namespace() -> String {
    if let Ok(ns) = std::env::var("RUNTIME_NAMESPACE") {
        if !ns.trim().is_empty() {
            return ns.trim().to_string();
        }
    }
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "flux-system".into())
}

/// `<hostname>_<random>` as client-go builds it: the pod name tells people which replica
/// leads, the suffix keeps two processes on one host apart.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "trueup".into());
    format!("{host}_{:016x}", fastrand_u64())
}

fn fastrand_u64() -> u64 {
    // No extra dependency for 64 random bits: the std hasher is randomly keyed per process.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("invalid leader election settings: {0}")]
    Config(String),
    #[error("{action} Lease {namespace}/{name}: {source}")]
    Api {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("Lease {namespace}/{name} is not a valid Lease: {message}")]
    Invalid {
        namespace: String,
        name: String,
        message: String,
    },
}

/// The `spec` of a Lease as leader election reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder_identity: String,
    pub lease_duration_seconds: i64,
    pub acquire_time: String,
    pub renew_time: String,
    pub lease_transitions: i64,
}

impl LeaseRecord {
    fn from_spec(spec: Option<&Value>) -> LeaseRecord {
        let s = |k: &str| {
            spec.and_then(|s| s.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let i = |k: &str| {
            spec.and_then(|s| s.get(k))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        LeaseRecord {
            holder_identity: s("holderIdentity"),
            lease_duration_seconds: i("leaseDurationSeconds"),
            acquire_time: s("acquireTime"),
            renew_time: s("renewTime"),
            lease_transitions: i("leaseTransitions"),
        }
    }

    fn to_spec(&self) -> Value {
        let mut spec = json!({
            "leaseDurationSeconds": self.lease_duration_seconds,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.lease_transitions,
        });
        if !self.holder_identity.is_empty() {
            spec["holderIdentity"] = Value::String(self.holder_identity.clone());
        }
        spec
    }
}

/// What a candidate last saw of the Lease, and when (on its own clock).
#[derive(Default)]
struct Observed {
    record: Option<LeaseRecord>,
    at: Option<Instant>,
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<DynamicObject>,
    config: LeaderElectionConfig,
    observed: Mutex<Observed>,
}

/// The outcome of one try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease (acquired or renewed).
    Leading,
    /// Another replica holds a Lease that has not expired.
    HeldBy(String),
    /// Another replica wrote the Lease between our read and our write.
    Conflict,
}

fn lease_resource() -> ApiResource {
    ApiResource {
        group: "coordination.k8s.io".into(),
        version: "v1".into(),
        api_version: "coordination.k8s.io/v1".into(),
        kind: "Lease".into(),
        plural: "leases".into(),
    }
}

/// `MicroTime` as the API server writes it: RFC 3339 with exactly six fractional digits.
fn micro_time(t: SystemTime) -> String {
    let micros = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .subsec_micros();
    let whole = trueup_core::time::rfc3339(t);
    format!("{}.{micros:06}Z", whole.trim_end_matches('Z'))
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaderElectionConfig) -> Result<Self, LeaderError> {
        if config.identity.is_empty() {
            return Err(LeaderError::Config("the identity must not be empty".into()));
        }
        if config.lease_name.is_empty() || config.namespace.is_empty() {
            return Err(LeaderError::Config(
                "the Lease name and namespace must not be empty".into(),
            ));
        }
        // client-go's rules: the leader must give up before a candidate may take over, and
        // must be able to retry within its deadline.
        if config.lease_duration <= config.renew_deadline {
            return Err(LeaderError::Config(format!(
                "the lease duration ({:?}) must be greater than the renew deadline ({:?})",
                config.lease_duration, config.renew_deadline
            )));
        }
        if config.renew_deadline <= config.retry_period {
            return Err(LeaderError::Config(format!(
                "the renew deadline ({:?}) must be greater than the retry period ({:?})",
                config.renew_deadline, config.retry_period
            )));
        }
        if config.retry_period.is_zero() {
            return Err(LeaderError::Config(
                "the retry period must be positive".into(),
            ));
        }
        let api = Api::namespaced_with(client, &config.namespace, &lease_resource());
        Ok(LeaderElector {
            api,
            config,
            observed: Mutex::new(Observed::default()),
        })
    }

    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    fn api_err(&self, action: &'static str, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            action,
            namespace: self.config.namespace.clone(),
            name: self.config.lease_name.clone(),
            source: Box::new(source),
        }
    }

    fn observe(&self, record: LeaseRecord) {
        let mut o = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        if o.record.as_ref() != Some(&record) {
            o.record = Some(record);
            o.at = Some(Instant::now());
        }
    }

    fn record(&self, holder: &str, acquire_time: String, transitions: i64) -> LeaseRecord {
        LeaseRecord {
            holder_identity: holder.to_string(),
            lease_duration_seconds: self.config.lease_duration.as_secs().max(1) as i64,
            acquire_time,
            renew_time: micro_time(SystemTime::now()),
            lease_transitions: transitions,
        }
    }

    /// The Lease as stored now, if it exists.
    pub async fn current(&self) -> Result<Option<LeaseRecord>, LeaderError> {
        let lease = self
            .api
            .get_opt(&self.config.lease_name)
            .await
            .map_err(|e| self.api_err("reading", e))?;
        Ok(lease.map(|l| LeaseRecord::from_spec(l.data.get("spec"))))
    }

    /// One try to acquire or renew the Lease.
    pub async fn try_acquire_or_renew(&self) -> Result<Attempt, LeaderError> {
        let name = &self.config.lease_name;
        let me = &self.config.identity;
        let Some(lease) = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| self.api_err("reading", e))?
        else {
            let record = self.record(me, micro_time(SystemTime::now()), 0);
            let body = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": self.config.namespace},
                "spec": record.to_spec(),
            });
            let obj: DynamicObject =
                serde_json::from_value(body).map_err(|e| LeaderError::Invalid {
                    namespace: self.config.namespace.clone(),
                    name: name.clone(),
                    message: e.to_string(),
                })?;
            return match self.api.create(&PostParams::default(), &obj).await {
                Ok(_) => {
                    self.observe(record);
                    Ok(Attempt::Leading)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(self.api_err("creating", e)),
            };
        };
        let old = LeaseRecord::from_spec(lease.data.get("spec"));
        self.observe(old.clone());
        let held_by_other = !old.holder_identity.is_empty() && &old.holder_identity != me;
        if held_by_other {
            let duration = if old.lease_duration_seconds > 0 {
                Duration::from_secs(old.lease_duration_seconds as u64)
            } else {
                self.config.lease_duration
            };
            let seen = {
                let o = self.observed.lock().unwrap_or_else(|p| p.into_inner());
                o.at.unwrap_or_else(Instant::now)
            };
            if seen + duration > Instant::now() {
                return Ok(Attempt::HeldBy(old.holder_identity));
            }
        }
        let record = if &old.holder_identity == me {
            self.record(me, old.acquire_time.clone(), old.lease_transitions)
        } else {
            // Taken over (expired or released): a new term.
            self.record(me, micro_time(SystemTime::now()), old.lease_transitions + 1)
        };
        let mut body = lease;
        body.data["spec"] = record.to_spec();
        // The resourceVersion read stays in the body: a write by anyone else in between makes
        // this replace fail with 409 Conflict instead of overwriting it.
        match self.api.replace(name, &PostParams::default(), &body).await {
            Ok(_) => {
                self.observe(record);
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(self.api_err("updating", e)),
        }
    }

    /// Waits until this replica leads (trying every retry period), then keeps renewing in the
    /// background. `None` when `cancel` fires first.
    pub async fn acquire(
        self: &Arc<Self>,
        cancel: &CancellationToken,
    ) -> Result<Option<Leadership>, LeaderError> {
        let mut announced = String::new();
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => break,
                Ok(Attempt::HeldBy(holder)) => {
                    if holder != announced {
                        tracing::info!(lease = %self.config.lease_name, %holder, "waiting for the leader election Lease");
                        announced = holder;
                    }
                }
                Ok(Attempt::Conflict) => {}
                // A transient API error is retried; a permanent one (no RBAC for Leases) is
                // worth seeing in the log while the replica keeps trying.
                Err(e) => tracing::warn!(error = %e, "leader election: trying to acquire"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(jittered(self.config.retry_period)) => {}
            }
        }
        tracing::info!(
            lease = %format!("{}/{}", self.config.namespace, self.config.lease_name),
            identity = %self.config.identity,
            "acquired the leader election Lease"
        );
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(renew_loop(self.clone(), lost.clone(), stop.clone()));
        Ok(Some(Leadership {
            elector: self.clone(),
            lost,
            stop,
            task: Some(task),
        }))
    }

    /// Gives the Lease up if this replica holds it: the holder is cleared (client-go writes a
    /// one-second duration too), so the next candidate takes it on its next try.
    pub async fn release(&self) -> Result<bool, LeaderError> {
        let name = &self.config.lease_name;
        let Some(mut lease) = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| self.api_err("reading", e))?
        else {
            return Ok(false);
        };
        let old = LeaseRecord::from_spec(lease.data.get("spec"));
        if old.holder_identity != self.config.identity {
            return Ok(false);
        }
        let now = micro_time(SystemTime::now());
        let record = LeaseRecord {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: now.clone(),
            renew_time: now,
            lease_transitions: old.lease_transitions,
        };
        lease.data["spec"] = record.to_spec();
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Someone wrote it meanwhile: it is not ours to clear any more.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.api_err("releasing", e)),
        }
    }
}

/// client-go waits between one and 2.2 retry periods, so candidates do not move in lockstep.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + fastrand_u64() as f64 / u64::MAX as f64 * 1.2)
}

/// Renews every retry period until stopped; fires `lost` when another replica holds the Lease
/// or when no renewal succeeded within the renew deadline.
async fn renew_loop(elector: Arc<LeaderElector>, lost: CancellationToken, stop: CancellationToken) {
    let cfg = elector.config.clone();
    let mut last_renew = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(cfg.retry_period) => {}
        }
        let deadline = last_renew + cfg.renew_deadline;
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout_at(deadline, elector.try_acquire_or_renew()) => r,
        };
        match outcome {
            Ok(Ok(Attempt::Leading)) => last_renew = Instant::now(),
            Ok(Ok(Attempt::HeldBy(holder))) => {
                tracing::error!(%holder, "leader election lost: another replica holds the Lease");
                lost.cancel();
                return;
            }
            Ok(Ok(Attempt::Conflict)) => {
                tracing::warn!("leader election: conflict while renewing, retrying");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewing failed"),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            tracing::error!(
                "leader election lost: the Lease was not renewed within {:?}",
                cfg.renew_deadline
            );
            lost.cancel();
            return;
        }
    }
}

/// Held while this replica leads.
pub struct Leadership {
    elector: Arc<LeaderElector>,
    lost: CancellationToken,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Leadership {
    /// Fires when leadership is lost; reconciling must stop at once.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and clears the holder (when still held), so another replica takes over
    /// at once. Returns whether the Lease was released.
    pub async fn release(mut self) -> Result<bool, LeaderError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if self.lost.is_cancelled() {
            return Ok(false);
        }
        self.elector.release().await
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Dropped without release (a crash path): stop renewing; the Lease expires.
        self.stop.cancel();
    }
}
