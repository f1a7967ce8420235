//! The bundled example operator and CLI: a thin assembly of trueup's parts.
//!
//! ```text
//! trueup demo                      # a full reconcile of the bundled fleet, no cluster needed
//! trueup operator --dir ./cluster --fleet clusters/production [--once]
//! trueup operator --kubeconfig ~/.kube/config [--leader-elect] [--watch-label-selector SEL]
//! trueup operator --in-cluster --leader-elect    # in a pod, with its service account
//! trueup operator ... --health-addr :9440         # /healthz and /readyz, as Flux's controllers
//! trueup get --dir ./cluster
//! trueup events --dir ./cluster
//! trueup build DIR                 # what `kubectl kustomize DIR` prints
//! ```

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trueup::core::api::FluxKind;
use trueup::core::event::Event;
use trueup::core::object::Object;
use trueup::core::runtime::{CancellationToken, Runtime, RuntimeOptions};
use trueup::core::status::{ConditionStatus, Status, READY};
use trueup::core::storage::ArtifactStore;
use trueup::core::traits::{ApplyOptions, Backend, ListParams, Notifier, NotifyError};
use trueup::local::{LocalBackend, LocalOptions};

#[derive(Parser)]
#[command(
    name = "trueup",
    about = "GitOps reconciliation with Flux's objects, on a directory or a cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Reconcile the bundled demo fleet from a real Git repository made in a temporary folder.
    Demo {
        /// Where the local cluster goes (default: a temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run the operator: on the local backend (--dir), or on a Kubernetes cluster
    /// (--kubeconfig or --in-cluster).
    Operator {
        /// The local cluster directory.
        #[arg(long, default_value = "./cluster")]
        dir: PathBuf,
        #[command(flatten)]
        cluster: ClusterArgs,
        /// A folder of Flux objects to load (like clusters/production); may repeat.
        #[arg(long)]
        fleet: Vec<PathBuf>,
        /// Bootstrap like `flux bootstrap`: a GitRepository and a Kustomization named
        /// flux-system that reconcile this repository URL at --path.
        #[arg(long)]
        bootstrap: Option<String>,
        #[arg(long, default_value = "main")]
        branch: String,
        #[arg(long, default_value = "./clusters/production")]
        path: String,
        /// Run until every object is Ready or failed, print the table, exit 0 or 1.
        #[arg(long)]
        once: bool,
        /// Reconciles in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Serve the webhook Receivers on this address (e.g. 127.0.0.1:9292).
        #[arg(long)]
        receiver_addr: Option<std::net::SocketAddr>,
        /// Serve /healthz (liveness) and /readyz (readiness) on this address, as Flux's
        /// controllers do on --health-addr (e.g. :9440, all interfaces, or 127.0.0.1:9440).
        #[arg(long)]
        health_addr: Option<String>,
    },
    /// Print the status of every object, like `flux get all`.
    Get {
        #[arg(long, default_value = "./cluster")]
        dir: PathBuf,
    },
    /// Ask a running operator to reconcile an object now, like `flux reconcile` (sets
    /// `reconcile.fluxcd.io/requestedAt`; the operator echoes it to lastHandledReconcileAt).
    Reconcile {
        /// gitrepository, ocirepository, kustomization, helmrelease, terraform, ...
        kind: String,
        name: String,
        #[arg(short = 'n', long, default_value = "flux-system")]
        namespace: String,
        /// Reconcile the object's source first.
        #[arg(long)]
        with_source: bool,
        #[arg(long, default_value = "./cluster")]
        dir: PathBuf,
    },
    /// Print the recorded events.
    Events {
        #[arg(long, default_value = "./cluster")]
        dir: PathBuf,
    },
    /// Render a Helm chart (a directory or .tgz), as `helm template RELEASE CHART` does.
    Template {
        release: String,
        chart: PathBuf,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(short = 'f', long = "values")]
        values: Vec<PathBuf>,
        #[arg(long)]
        set: Vec<String>,
        #[arg(long = "set-string")]
        set_string: Vec<String>,
        #[arg(long = "kube-version")]
        kube_version: Option<String>,
        #[arg(short = 'a', long = "api-versions", value_delimiter = ',')]
        api_versions: Vec<String>,
        #[arg(long = "include-crds")]
        include_crds: bool,
    },
    /// Render a kustomization directory, as `kubectl kustomize DIR` does.
    Build {
        dir: PathBuf,
        /// Render a directory without kustomization.yaml the way Flux does (all YAML files).
        #[arg(long)]
        flux: bool,
    },
}

/// Operator mode on a Kubernetes cluster.
#[derive(clap::Args)]
struct ClusterArgs {
    /// Reconcile the cluster of this kubeconfig instead of a local directory.
    #[arg(long, conflicts_with = "in_cluster")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, requires = "kubeconfig")]
    context: Option<String>,
    /// Reconcile the cluster this process runs in, with the pod's service account.
    #[arg(long)]
    in_cluster: bool,
    /// Only one replica reconciles: the holder of a coordination.k8s.io/v1 Lease.
    #[arg(long)]
    leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = trueup::kube::leader::DEFAULT_LEASE_NAME)]
    leader_election_id: String,
    /// The Lease's namespace (default: $RUNTIME_NAMESPACE, the pod's namespace, or flux-system).
    #[arg(long)]
    leader_election_namespace: Option<String>,
    /// How long the others wait after the last renewal they saw before taking over.
    #[arg(long, default_value = "35s", value_parser = go_duration)]
    leader_election_lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops.
    #[arg(long, default_value = "30s", value_parser = go_duration)]
    leader_election_renew_deadline: Duration,
    /// Time between tries to acquire or renew.
    #[arg(long, default_value = "5s", value_parser = go_duration)]
    leader_election_retry_period: Duration,
    /// Only the Flux objects this label selector selects (sharding, as Flux's controllers do:
    /// 'sharding.fluxcd.io/key notin (shard1)' or 'sharding.fluxcd.io/key=shard1').
    #[arg(long, default_value = "")]
    watch_label_selector: String,
    /// Where artifacts are kept (default: a temporary directory removed on exit).
    #[arg(long)]
    storage_path: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long reconciles in flight may take to finish.
    #[arg(long, default_value = "30s", value_parser = go_duration)]
    graceful_shutdown_timeout: Duration,
}

impl ClusterArgs {
    fn enabled(&self) -> bool {
        self.kubeconfig.is_some() || self.in_cluster
    }
}

fn go_duration(s: &str) -> Result<Duration, String> {
    trueup::core::api::GoDuration::parse(s)
        .map(|d| d.duration())
        .map_err(|e| e.to_string())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Build { dir, flux } => {
            let opts = trueup::appliers::kustomize::RenderOptions {
                generate_missing_kustomization: flux,
                ..Default::default()
            };
            let text = trueup::appliers::kustomize::render_to_yaml(&dir, &opts)?;
            print!("{text}");
            Ok(true)
        }
        Command::Template {
            release,
            chart,
            namespace,
            values,
            set,
            set_string,
            kube_version,
            api_versions,
            include_crds,
        } => {
            let opts = trueup::helm::TemplateOptions {
                release_name: release,
                chart,
                namespace,
                values_files: values,
                set,
                set_string,
                kube_version,
                api_versions,
                include_crds,
            };
            // Helm's own error text, printed the way helm prints it.
            match trueup::helm::template(&opts) {
                Ok(text) => {
                    print!("{text}");
                    Ok(true)
                }
                Err(e) => {
                    eprintln!("Error: {e}");
                    Ok(false)
                }
            }
        }
        Command::Get { dir } => {
            let backend =
                LocalBackend::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
            print!("{}", status_table(&fleet_objects(&backend).await?));
            Ok(true)
        }
        Command::Reconcile {
            kind,
            name,
            namespace,
            with_source,
            dir,
        } => {
            let backend =
                LocalBackend::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
            let Some(kind) = FluxKind::ALL
                .into_iter()
                .find(|k| k.kind().eq_ignore_ascii_case(&kind))
            else {
                bail!("unknown kind '{kind}'");
            };
            let obj = backend
                .get(&kind.ref_to(&namespace, &name))
                .await?
                .with_context(|| format!("{kind}/{namespace}/{name} not found"))?;
            let now = trueup::core::time::rfc3339_nanos(std::time::SystemTime::now());
            if with_source {
                let source = obj
                    .spec()
                    .and_then(|s| s.get("sourceRef"))
                    .and_then(|r| {
                        serde_json::from_value::<
                            trueup::core::api::meta::CrossNamespaceObjectReference,
                        >(r.clone())
                        .ok()
                    })
                    .and_then(|r| trueup::core::reconcile::source_ref(&namespace, &r));
                if let Some(src) = source {
                    if let Some(src_obj) = backend.get(&src).await? {
                        request(&backend, src_obj, &now).await?;
                        println!("requested {src}");
                    }
                }
            }
            request(&backend, obj, &now).await?;
            println!("requested {kind}/{namespace}/{name} at {now}");
            Ok(true)
        }
        Command::Events { dir } => {
            let backend =
                LocalBackend::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
            for ev in backend.events(None)? {
                println!("{}", format_event(&ev));
            }
            Ok(true)
        }
        Command::Operator {
            dir,
            cluster,
            fleet,
            bootstrap,
            branch,
            path,
            once,
            concurrency,
            receiver_addr,
            health_addr,
        } => {
            if cluster.enabled() {
                if !fleet.is_empty() || receiver_addr.is_some() {
                    bail!("--fleet and --receiver-addr work with the local backend (--dir) only");
                }
                return kube_operator(
                    cluster,
                    bootstrap,
                    &branch,
                    &path,
                    once,
                    concurrency,
                    health_addr,
                )
                .await;
            }
            if cluster.leader_elect || !cluster.watch_label_selector.is_empty() {
                bail!("--leader-elect and --watch-label-selector need a cluster: add --kubeconfig PATH or --in-cluster");
            }
            let backend = open_backend(&dir, true)?;
            let _lock = backend
                .acquire_exclusive()
                .with_context(|| format!("locking {}", dir.display()))?;
            // Live from here; ready once the runtime starts (the fleet loaded, the runtime
            // built).
            let health = HealthState::new("starting: loading the fleet");
            if let Some(addr) = &health_addr {
                serve_health(addr, health.clone()).await?;
            }
            for f in &fleet {
                load_fleet(&backend, f).await?;
            }
            if let Some(url) = bootstrap {
                bootstrap_objects(&backend, &url, &branch, &path, "1m").await?;
            }
            let runtime = Arc::new(build_runtime(&backend, concurrency)?);
            health.set_ready();
            if once {
                let ok = settle(&runtime, &backend).await?;
                return Ok(ok);
            }
            println!(
                "trueup operator on {} (ctrl-c to stop)",
                backend.root().display()
            );
            let _receiver = match receiver_addr {
                Some(addr) => Some(serve_receivers(&backend, &runtime, addr).await?),
                None => None,
            };
            let cancel = CancellationToken::new();
            let c2 = cancel.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                c2.cancel();
            });
            let printer = tokio::spawn(print_table_on_change(runtime.clone(), cancel.clone()));
            runtime.run(cancel).await?;
            printer.abort();
            Ok(true)
        }
        Command::Demo { dir } => demo(dir).await,
    }
}

/// The operator on a Kubernetes cluster: the same reconcilers, on the Kubernetes backend.
async fn kube_operator(
    args: ClusterArgs,
    bootstrap: Option<String>,
    branch: &str,
    path: &str,
    once: bool,
    concurrency: usize,
    health_addr: Option<String>,
) -> Result<bool> {
    use trueup::kube::{KubeBackend, LabelSelector, LeaderElectionConfig, LeaderElector};
    let selector: LabelSelector = args.watch_label_selector.parse()?;
    let backend = match &args.kubeconfig {
        Some(kc) => KubeBackend::from_kubeconfig_context(kc, args.context.as_deref()).await?,
        None => KubeBackend::in_cluster()?,
    };
    let flux_kinds = FluxKind::ALL.map(|k| (k.group().to_string(), k.kind().to_string()));
    let backend = Arc::new(backend.with_watch_selector(selector.clone(), flux_kinds));
    // Live from here; ready once the API server answers and serves every Flux kind, whether
    // or not this replica leads (as controller-runtime's managers: a standby is ready).
    let health = HealthState::new("connecting to the API server");
    let readiness = match &health_addr {
        Some(addr) => {
            serve_health(addr, health.clone()).await?;
            let (backend, health) = (backend.clone(), health.clone());
            Some(tokio::spawn(async move {
                await_flux_kinds(backend.as_ref(), &health).await
            }))
        }
        None => None,
    };
    let _readiness = AbortOnDrop(readiness);

    // SIGTERM (Kubernetes stopping the pod) and SIGINT: stop taking new work, let reconciles in
    // flight finish, release the Lease, exit 0.
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => println!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => println!("SIGINT: shutting down"),
            }
            shutdown.cancel();
        });
    }

    let leadership = if args.leader_elect {
        let config = LeaderElectionConfig {
            lease_name: args.leader_election_id.clone(),
            namespace: args
                .leader_election_namespace
                .clone()
                .unwrap_or_else(trueup::kube::leader::default_namespace),
            lease_duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
            retry_period: args.leader_election_retry_period,
            ..LeaderElectionConfig::default()
        };
        let elector = Arc::new(LeaderElector::new(backend.client().clone(), config)?);
        let c = elector.config();
        println!(
            "leader election: waiting for Lease {}/{} as {}",
            c.namespace, c.lease_name, c.identity
        );
        match elector.acquire(&shutdown).await? {
            Some(l) => {
                println!(
                    "leader election: acquired Lease {}/{}",
                    c.namespace, c.lease_name
                );
                Some(l)
            }
            None => return Ok(true),
        }
    } else {
        None
    };

    if let Some(url) = bootstrap {
        bootstrap_objects(backend.as_ref(), &url, branch, path, "1m").await?;
    }
    let (_tmp, storage) = match &args.storage_path {
        Some(p) => (None, p.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("trueup-artifacts")
                .tempdir()?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let store = ArtifactStore::new(&storage)
        .with_context(|| format!("opening the artifact storage {}", storage.display()))?;
    let options = RuntimeOptions {
        concurrency,
        shutdown_grace: args.graceful_shutdown_timeout,
        ..RuntimeOptions::default()
    };
    let dyn_backend: Arc<dyn Backend> = backend.clone();
    let runtime = Arc::new(
        trueup::presets::gitops(dyn_backend.clone(), store)
            .notifier(ConsoleNotifier)
            .notifier(trueup::notifiers::AlertRouter::new(dyn_backend))
            .options(options)
            .build(),
    );
    if once {
        let snap = runtime.run_until_settled(shutdown.clone()).await?;
        print!("{}", status_table(&fleet_objects(backend.as_ref()).await?));
        if let Some(l) = leadership {
            l.release().await?;
        }
        return Ok(snap.iter().all(|s| s.suspended || s.is_ready()));
    }
    println!(
        "trueup operator on {}{}",
        backend.describe(),
        if selector.is_empty() {
            String::new()
        } else {
            format!(" (objects selected by '{selector}')")
        }
    );
    let triggers = {
        let (backend, runtime, cancel) = (backend.clone(), runtime.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) =
                trueup::kube::triggers::retrigger_on_config_changes(&backend, &runtime, cancel)
                    .await
            {
                eprintln!("watching labelled Secrets and ConfigMaps: {e}");
            }
        })
    };
    let lost = leadership.as_ref().map(|l| l.lost()).unwrap_or_default();
    let outcome = tokio::select! {
        r = runtime.run(shutdown.clone()) => r.map(|()| true),
        // Dropping the runtime's future aborts the reconciles in flight: another replica leads.
        _ = lost.cancelled() => Ok(false),
    };
    triggers.abort();
    if lost.is_cancelled() {
        eprintln!("error: leader election lost: stopped reconciling");
        return Ok(false);
    }
    if let Some(l) = leadership {
        if l.release().await? {
            println!("leader election: released the Lease");
        }
    }
    println!("stopped");
    Ok(outcome?)
}

fn open_backend(dir: &Path, durable: bool) -> Result<LocalBackend> {
    let opts = LocalOptions {
        durable,
        ..LocalOptions::default()
    };
    LocalBackend::open_with(dir, opts)
        .with_context(|| format!("opening the local cluster at {}", dir.display()))
}

fn build_runtime(backend: &LocalBackend, concurrency: usize) -> Result<Runtime> {
    let store = ArtifactStore::new(backend.state_dir().join("artifacts"))?;
    let options = RuntimeOptions {
        concurrency,
        ..RuntimeOptions::default()
    };
    let backend: Arc<dyn Backend> = Arc::new(backend.clone());
    // Alerts route events to their Providers; every delivery is printed.
    let alerts = trueup::notifiers::AlertRouter::new(backend.clone()).on_delivery(|r| {
        let outcome = match &r.outcome {
            Ok(()) => "sent".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        println!(
            "alert {} -> provider {} ({}): {} {}: {outcome}",
            r.alert,
            r.provider,
            r.provider_type.as_str(),
            r.object,
            r.reason
        );
    });
    Ok(trueup::presets::gitops(backend, store)
        .notifier(ConsoleNotifier)
        .notifier(alerts)
        .options(options)
        .build())
}

/// What `/readyz` answers: ready, or why not (the 503's body).
struct HealthState {
    not_ready: std::sync::Mutex<Option<String>>,
}

impl HealthState {
    fn new(why: &str) -> Arc<HealthState> {
        Arc::new(HealthState {
            not_ready: std::sync::Mutex::new(Some(why.to_string())),
        })
    }

    fn set_ready(&self) {
        *self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn set_not_ready(&self, why: String) {
        *self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }

    fn not_ready(&self) -> Option<String> {
        self.not_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Aborts the task when dropped (the operator returning, whichever way).
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

/// Retries until the API server answers and serves every Flux kind (their CRDs installed and
/// discovered), then marks the operator ready.
async fn await_flux_kinds(backend: &trueup::kube::KubeBackend, health: &HealthState) {
    use trueup::core::traits::BackendError;
    loop {
        let mut missing = Vec::new();
        let mut failure = None;
        for kind in FluxKind::ALL {
            // A get of a name nobody uses: discovery of the kind, then a 404 (or the object).
            match backend
                .get(&kind.ref_to("flux-system", "trueup-readiness-check"))
                .await
            {
                Ok(_) => {}
                Err(BackendError::Invalid { .. }) => {
                    missing.push(format!("{}.{}", kind.kind(), kind.group()))
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        match (failure, missing.is_empty()) {
            (None, true) => {
                health.set_ready();
                return;
            }
            (Some(e), _) => health.set_not_ready(format!("the API server: {e}")),
            (None, false) => health.set_not_ready(format!(
                "kinds not served (CRDs not installed?): {}",
                missing.join(", ")
            )),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Serves `/healthz` (200 while the process serves) and `/readyz` (200 once ready, 503 with the
/// reason before) on `addr`, in the background; anything else is 404. Go's `:PORT` means all
/// interfaces, as in Flux's `--health-addr=:9440`.
async fn serve_health(addr: &str, health: Arc<HealthState>) -> Result<std::net::SocketAddr> {
    let bind = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .with_context(|| format!("binding the health endpoints on {addr}"))?;
    let local = listener.local_addr()?;
    println!("health endpoints: http://{local}/healthz, http://{local}/readyz");
    tokio::spawn(async move {
        loop {
            let mut stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let health = health.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    answer_health(&mut stream, &health),
                )
                .await;
            });
        }
    });
    Ok(local)
}

/// One HTTP/1.1 request, one response, then the connection closes (what probes need).
async fn answer_health(
    stream: &mut tokio::net::TcpStream,
    health: &HealthState,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() <= 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut line = text.lines().next().unwrap_or("").split(' ');
    let method = line.next().unwrap_or("");
    let path = line.next().unwrap_or("").split('?').next().unwrap_or("");
    let (code, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => (200, "ok".to_string()),
        ("GET" | "HEAD", "/readyz") => match health.not_ready() {
            None => (200, "ok".to_string()),
            Some(why) => (503, format!("not ready: {why}")),
        },
        (_, "/healthz" | "/readyz") => (405, "method not allowed".to_string()),
        _ => (404, "not found".to_string()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let body = format!("{body}\n");
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Serves the Receivers' webhooks; a valid call reconciles the objects the Receiver lists.
async fn serve_receivers(
    backend: &LocalBackend,
    runtime: &Arc<Runtime>,
    addr: std::net::SocketAddr,
) -> Result<trueup::notifiers::RunningReceiver> {
    let rt = runtime.clone();
    let server = trueup::notifiers::ReceiverServer::new(Arc::new(backend.clone()), move |r| {
        rt.request_reconcile(&r)
    });
    let running = server
        .clone()
        .bind(addr)
        .await
        .with_context(|| format!("binding the receiver on {addr}"))?;
    for (receiver, path) in server.webhook_paths().await.map_err(anyhow::Error::msg)? {
        println!("receiver {receiver}: http://{}{path}", running.local_addr);
    }
    Ok(running)
}

/// Sets `reconcile.fluxcd.io/requestedAt` on an object; a running operator sees the change
/// (its watch also notices writes from other processes) and reconciles it at once.
async fn request(backend: &LocalBackend, mut obj: Object, at: &str) -> Result<()> {
    obj.0.remove("status");
    obj.set_annotation(trueup::core::runtime::REQUESTED_AT, at);
    backend.apply(&obj, &ApplyOptions::default()).await?;
    Ok(())
}

/// Prints events as they happen.
struct ConsoleNotifier;

#[async_trait::async_trait]
impl Notifier for ConsoleNotifier {
    async fn notify(&self, event: &Event) -> Result<(), NotifyError> {
        println!("{}", format_event(event));
        Ok(())
    }
}

fn format_event(ev: &Event) -> String {
    let mut lines = ev.message.lines();
    let first = lines.next().unwrap_or("");
    let mut out = format!(
        "{}  {:<5} {}  {}: {}",
        ev.timestamp,
        ev.severity.as_str(),
        ev.involved_object,
        ev.reason,
        first
    );
    for l in lines {
        out.push_str("\n      ");
        out.push_str(l);
    }
    out
}

async fn fleet_objects(backend: &dyn Backend) -> Result<Vec<Object>> {
    let mut all = Vec::new();
    for kind in FluxKind::ALL {
        all.extend(
            backend
                .list(&ListParams::kind(kind.group(), kind.kind()))
                .await?,
        );
    }
    Ok(all)
}

/// The `flux get all` table: one line per object.
fn status_table(objects: &[Object]) -> String {
    let mut rows = vec![[
        "NAMESPACE",
        "NAME",
        "REVISION",
        "SUSPENDED",
        "READY",
        "MESSAGE",
    ]
    .map(String::from)];
    for o in objects {
        let st = Status::from_value(o.status());
        let revision = st
            .artifact
            .as_ref()
            .map(|a| a.revision.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| st.last_applied_revision.clone());
        let ready = match st.condition(READY).map(|c| c.status) {
            Some(ConditionStatus::True) => "True",
            Some(ConditionStatus::False) => "False",
            _ => "Unknown",
        };
        let message = st
            .condition(READY)
            .map(|c| c.message.replace('\n', " "))
            .unwrap_or_default();
        let suspended = o
            .spec()
            .and_then(|s| s.get("suspend"))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        rows.push([
            o.namespace().unwrap_or("").to_string(),
            format!("{}/{}", o.kind().to_lowercase(), o.name()),
            revision,
            if suspended { "True" } else { "False" }.to_string(),
            ready.to_string(),
            message,
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i == 5 {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

async fn print_table_on_change(runtime: Arc<Runtime>, cancel: CancellationToken) {
    let mut last = String::new();
    while !cancel.is_cancelled() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(objs) = fleet_objects(runtime.backend().as_ref()).await else {
            continue;
        };
        let table = status_table(&objs);
        if table != last {
            println!("\n{table}");
            last = table;
        }
    }
}

/// Runs until settled and prints the table; true when everything is Ready.
async fn settle(runtime: &Runtime, backend: &LocalBackend) -> Result<bool> {
    let snap = runtime.run_until_settled(CancellationToken::new()).await?;
    println!();
    print!("{}", status_table(&fleet_objects(backend).await?));
    Ok(snap.iter().all(|s| s.suspended || s.is_ready()))
}

/// Applies every object found under `dir` (rendered like a Flux Kustomization path).
async fn load_fleet(backend: &LocalBackend, dir: &Path) -> Result<()> {
    let dir2 = dir.to_path_buf();
    let set = tokio::task::spawn_blocking(move || {
        trueup::appliers::kustomize::render_dir(
            &dir2,
            &trueup::appliers::kustomize::RenderOptions::flux(),
        )
    })
    .await??;
    for o in set.in_apply_order() {
        let mut o = o.clone();
        if o.namespace().is_none()
            && trueup::core::scope::is_cluster_scoped(o.group(), o.kind()) == Some(false)
        {
            o.set_namespace("flux-system");
        }
        backend.apply(&o, &ApplyOptions::default()).await?;
    }
    println!("loaded {} objects from {}", set.len(), dir.display());
    Ok(())
}

/// What `flux bootstrap` leaves behind: a GitRepository and a Kustomization, both named
/// flux-system, that reconcile the fleet repository itself.
async fn bootstrap_objects(
    backend: &dyn Backend,
    url: &str,
    branch: &str,
    path: &str,
    interval: &str,
) -> Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flux-system\n---\n\
         apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: {interval}\n  url: {url}\n  ref:\n    branch: {branch}\n---\n\
         apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: {path}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n"
    );
    for o in trueup::core::yaml::parse_objects(&text, "bootstrap")? {
        backend.apply(&o, &ApplyOptions::default()).await?;
    }
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=trueup demo",
            "-c",
            "user.email=demo@trueup.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), dest.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// The demo: the bundled fleet in a real Git repository, reconciled from scratch, then a commit
/// that deletes a manifest, reconciled again to show the prune.
async fn demo(dir: Option<PathBuf>) -> Result<bool> {
    let tmp = tempfile::tempdir()?;
    let repo = tmp.path().join("fleet-infra");
    let fleet_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet");
    copy_dir(&fleet_src, &repo).with_context(|| format!("copying {}", fleet_src.display()))?;
    git(&repo, &["init", "-q"])?;
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-q", "-m", "Add the production fleet"])?;
    let cluster = dir.unwrap_or_else(|| tmp.path().join("cluster"));
    println!(
        "fleet repository: {} (a real Git repository)",
        repo.display()
    );
    println!("local cluster:    {}\n", cluster.display());

    // Durable writes cost an fsync per file; the demo's cluster is throwaway.
    let backend = open_backend(&cluster, false)?;
    let url = format!("file://{}", repo.display());
    bootstrap_objects(&backend, &url, "main", "./clusters/production", "1m").await?;
    let runtime = build_runtime(&backend, 4)?;

    let t = Instant::now();
    let ok = settle(&runtime, &backend).await?;
    let first = t.elapsed();
    let files = count_files(backend.root(), &[".trueup"]);
    println!(
        "\nfirst reconcile: {first:.2?}, {files} object files written under {}\n",
        cluster.display()
    );

    let t = Instant::now();
    request_all(&runtime, &backend).await?;
    let ok2 = settle_quiet(&runtime).await?;
    let noop = t.elapsed();
    println!("no-op reconcile of everything (nothing changed in Git): {noop:.2?}\n");

    println!("-- commit: delete apps/overlays/production/hpa.yaml --");
    std::fs::remove_file(repo.join("apps/overlays/production/hpa.yaml"))?;
    let kfile = repo.join("apps/overlays/production/kustomization.yaml");
    let k = std::fs::read_to_string(&kfile)?.replace("  - hpa.yaml\n", "");
    std::fs::write(&kfile, k)?;
    git(
        &repo,
        &["commit", "-q", "-am", "Drop the HorizontalPodAutoscaler"],
    )?;
    let t = Instant::now();
    request_all(&runtime, &backend).await?;
    let ok3 = settle(&runtime, &backend).await?;
    println!("\nreconcile of the new commit: {:.2?}", t.elapsed());
    let hpa = backend.object_path(&trueup::core::ObjectRef::new(
        "autoscaling",
        "HorizontalPodAutoscaler",
        "apps",
        "podinfo",
    ))?;
    println!("{} exists: {}", hpa.display(), hpa.exists());
    Ok(ok && ok2 && ok3 && !hpa.exists())
}

/// Like `flux reconcile --with-source` for everything, from inside the operator process.
async fn request_all(runtime: &Runtime, backend: &LocalBackend) -> Result<()> {
    for o in fleet_objects(backend).await? {
        runtime.request_reconcile(&o.object_ref());
    }
    Ok(())
}

async fn settle_quiet(runtime: &Runtime) -> Result<bool> {
    let snap = runtime.run_until_settled(CancellationToken::new()).await?;
    Ok(snap.iter().all(|s| s.is_ready()))
}

fn count_files(root: &Path, skip: &[&str]) -> usize {
    let Ok(rd) = std::fs::read_dir(root) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter(|e| !skip.iter().any(|s| e.file_name() == *s))
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path(), skip)
            } else {
                1
            }
        })
        .sum()
}
