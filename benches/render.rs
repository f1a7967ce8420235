//! Throughput of the native kustomize renderer on a large generated overlay tree.
//!
//! The tree: several bases (Deployments, Services, ConfigMaps, a configMapGenerator), several
//! overlays that each include *every* base (so bases are shared and must render once), each
//! with a namespace, a name prefix, labels, an image override, a strategic-merge patch, a JSON
//! patch and a generator merge, and a top-level kustomization that aggregates the overlays.
//!
//! A second, "heavy" tree is shaped like the largest real trees (about 10 MB of YAML out, where
//! kubectl needs seconds): big CRD bundles with deep schemas and long descriptions (folded
//! plain/single-quoted and `|-` styles), workloads with long embedded configs, JSON dashboards
//! from a configMapGenerator, and overlays sharing the app bases (see `generate_heavy_tree`).
//! `TRUEUP_BENCH_TREE=heavy` or `=generated` picks one tree; both are benchmarked when unset.
//! Heavy knobs: `TRUEUP_BENCH_CRDS` (default 10), `TRUEUP_BENCH_APPS` (default 6),
//! `TRUEUP_BENCH_OVERLAYS` (default 4).
//!
//! Extra modes, used by `scripts/compare-kustomize.sh`:
//! - `TRUEUP_BENCH_GENERATE=DIR` writes the tree to DIR and prints its resource count;
//! - `TRUEUP_BENCH_RENDER=DIR` prints `render_to_yaml(DIR)` (a stand-in for `trueup build`).
//!
//! Size knobs: `TRUEUP_BENCH_BASES` (default 10), `TRUEUP_BENCH_PER_BASE` (default 90),
//! `TRUEUP_BENCH_OVERLAYS` (default 5): 10 x 90 x 5 = 4,500 output objects plus generated
//! ConfigMaps.

use criterion::{criterion_group, Criterion, Throughput};
use std::fmt::Write as _;
use std::path::Path;
use trueup::appliers::kustomize::{render_to_yaml, RenderOptions};

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create bench dir");
    }
    std::fs::write(path, text).expect("write bench file");
}

fn deployment(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app: {name}
spec:
  replicas: 2
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
      annotations:
        prometheus.io/scrape: "true"
    spec:
      serviceAccountName: default
      containers:
      - name: app
        image: registry.example.com/team/{name}:1.0.0
        args: ["--port=8080", "--log-level=info"]
        ports:
        - containerPort: 8080
          name: http
        env:
        - name: MODE
          value: production
        - name: PASSWORD
          valueFrom:
            secretKeyRef:
              name: shared-secret
              key: password
        envFrom:
        - configMapRef:
            name: {name}-config
        resources:
          requests:
            cpu: 100m
            memory: 128Mi
          limits:
            memory: 256Mi
        readinessProbe:
          httpGet:
            path: /healthz
            port: http
          periodSeconds: 10
        volumeMounts:
        - name: config
          mountPath: /etc/app
      volumes:
      - name: config
        configMap:
          name: {name}-config
"#
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: {name}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
    )
}

fn configmap(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-config\ndata:\n  app.yaml: |\n    server:\n      port: 8080\n      name: {name}\n    features:\n      a: true\n      b: false\n  LOG_LEVEL: info\n"
    )
}

/// Writes the tree and returns how many objects the top-level render produces.
fn generate_tree(root: &Path, bases: usize, per_base: usize, overlays: usize) -> usize {
    let per_kind = per_base / 3;
    for b in 0..bases {
        let dir = root.join(format!("bases/base-{b}"));
        let mut k = String::from("resources:\n");
        for i in 0..per_kind {
            let name = format!("svc{b}-{i}");
            write(
                &dir.join(format!("{name}.yaml")),
                &format!(
                    "{}---\n{}---\n{}",
                    deployment(&name),
                    service(&name),
                    configmap(&name)
                ),
            );
            let _ = writeln!(k, "- {name}.yaml");
        }
        let _ = write!(k, "configMapGenerator:\n- name: base-{b}-settings\n  literals:\n  - MODE=default\n  - BASE={b}\n");
        write(&dir.join("kustomization.yaml"), &k);
    }
    write(
        &root.join("bases/shared/kustomization.yaml"),
        "secretGenerator:\n- name: shared-secret\n  literals:\n  - password=hunter2\n",
    );
    let mut top = String::from("resources:\n");
    for o in 0..overlays {
        let dir = root.join(format!("overlays/env-{o}"));
        let mut k = format!("namespace: env-{o}\nnamePrefix: e{o}-\ncommonLabels:\n  env: env-{o}\nresources:\n- ../../bases/shared\n");
        for b in 0..bases {
            let _ = writeln!(k, "- ../../bases/base-{b}");
        }
        let _ = write!(
            k,
            "images:\n- name: registry.example.com/team/svc0-0\n  newTag: \"2.0.{o}\"\npatches:\n- path: resources.yaml\n  target:\n    kind: Deployment\n- target:\n    kind: Deployment\n    name: svc0-.*\n  patch: |-\n    - op: replace\n      path: /spec/replicas\n      value: {}\nconfigMapGenerator:\n",
            o + 1
        );
        for b in 0..bases {
            let _ = write!(
                k,
                "- name: base-{b}-settings\n  behavior: merge\n  literals:\n  - ENV=env-{o}\n"
            );
        }
        write(&dir.join("kustomization.yaml"), &k);
        write(
            &dir.join("resources.yaml"),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: any\nspec:\n  template:\n    spec:\n      containers:\n      - name: app\n        resources:\n          limits:\n            memory: 512Mi\n",
        );
        let _ = writeln!(top, "- overlays/env-{o}");
    }
    write(&root.join("kustomization.yaml"), &top);
    overlays * (bases * per_kind * 3 + bases + 1)
}

// ---------------------------------------------------------------------------------------------
// The heavy tree: shaped like the largest real overlay trees (operator CRD bundles, monitoring
// stacks with long embedded configs), where most bytes are long strings, not many small objects.

/// A small deterministic generator (xorshift64*), so the tree is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const WORDS: &[&str] = &[
    "the",
    "resource",
    "specifies",
    "field",
    "value",
    "when",
    "is",
    "set",
    "controller",
    "reconciles",
    "defaults",
    "to",
    "must",
    "be",
    "a",
    "valid",
    "Kubernetes",
    "name",
    "list",
    "of",
    "selector",
    "pods",
    "that",
    "match",
    "this",
    "configuration",
    "endpoint",
    "TLS",
    "secret",
    "key",
    "namespace",
    "in",
    "the",
    "and",
    "or",
    "for",
    "each",
    "object",
    "if",
    "empty",
    "all",
    "are",
    "selected",
    "scrape",
    "interval",
    "timeout",
    "relabeling",
    "rules",
    "applied",
    "before",
    "ingestion",
    "certificate",
    "authority",
    "used",
    "verify",
    "server",
    "more",
    "info",
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/",
    "`spec.replicas`",
    "(optional)",
    "e.g.",
    "\"quoted\"",
    "[DEPRECATED]",
    "100%",
    "x=y,z",
    "it's",
    "0.5",
    "v1.2.3",
    "UTF-8",
    "HTTP/2",
    "--flag",
    "Deprecated:",
];
const FIRST: &[&str] = &[
    "Specifies",
    "Defines",
    "Selects",
    "Configures",
    "Sets",
    "Indicates",
];

/// A sentence of `words` words (the first a plain word, so the text never starts with a YAML
/// indicator).
fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut s = String::from(rng.pick(FIRST));
    for _ in 0..words {
        s.push(' ');
        s.push_str(rng.pick(WORDS));
    }
    s.push('.');
    s
}

/// How the CRD generator of a bundle wrote long descriptions.
#[derive(Clone, Copy)]
enum DescStyle {
    /// Older controller-gen (go-yaml v2): long strings folded at 80 columns, plain when the
    /// text allows it, single-quoted otherwise.
    Folded,
    /// Newer controller-gen: multi-paragraph descriptions as `|-` literal blocks.
    Literal,
}

/// Wraps `text` (no newlines) into lines of about 80 columns; the first line starts at
/// column `first_col`.
fn fold(text: &str, first_col: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut col = first_col;
    for w in text.split(' ') {
        let cur = lines.last_mut().expect("one line");
        if !cur.is_empty() && col + 1 + w.len() > 80 {
            lines.push(w.to_string());
            col = first_col + w.len();
        } else {
            if !cur.is_empty() {
                cur.push(' ');
                col += 1;
            }
            cur.push_str(w);
            col += w.len();
        }
    }
    lines
}

fn description(out: &mut String, rng: &mut Rng, ind: usize, style: DescStyle) {
    let pad = " ".repeat(ind);
    match style {
        DescStyle::Literal => {
            let paragraphs = 1 + rng.below(3);
            let _ = writeln!(out, "{pad}description: |-");
            for p in 0..paragraphs {
                if p > 0 {
                    out.push('\n');
                }
                let words = 12 + rng.below(40);
                let text = sentence(rng, words);
                for line in fold(&text, ind + 2) {
                    let _ = writeln!(out, "{pad}  {line}");
                }
            }
        }
        DescStyle::Folded => {
            let words = 6 + rng.below(40);
            let text = sentence(rng, words);
            // Plain scalars cannot hold `: `, ` #`, or start with an indicator.
            let plain = !text.contains(": ")
                && !text.contains(" #")
                && !text.contains('\'')
                && !text.contains('"')
                && !text.contains('`')
                && !text.contains('*');
            let (open, body) = if plain {
                ("", text)
            } else {
                ("'", format!("{}'", text.replace('\'', "''")))
            };
            let lines = fold(&format!("{open}{body}"), ind + 13);
            for (i, line) in lines.iter().enumerate() {
                if i == 0 {
                    let _ = writeln!(out, "{pad}description: {line}");
                } else {
                    let _ = writeln!(out, "{pad}  {line}");
                }
            }
        }
    }
}

/// One schema node (`type: object` with properties, or a leaf) at indent `ind`.
fn schema_node(
    out: &mut String,
    rng: &mut Rng,
    ind: usize,
    depth: usize,
    budget: &mut usize,
    style: DescStyle,
) {
    let pad = " ".repeat(ind);
    description(out, rng, ind, style);
    let object = depth < 9 && *budget > 0 && (depth < 3 || rng.below(10) < 4);
    if object {
        let n = 2 + rng.below(if depth < 2 { 10 } else { 5 });
        let _ = writeln!(out, "{pad}properties:");
        let mut names: Vec<String> = (0..n)
            .map(|i| format!("{}{}{i}", rng.pick(PROP), rng.pick(PROP_SUFFIX)))
            .collect();
        names.sort();
        let mut required = Vec::new();
        for name in &names {
            *budget = budget.saturating_sub(1);
            let _ = writeln!(out, "{pad}  {name}:");
            let kind = rng.below(12);
            if kind < 7 && *budget > 0 {
                schema_node(out, rng, ind + 4, depth + 1, budget, style);
            } else if kind < 9 {
                // A list of objects, the heaviest shape in real CRDs (containers, volumes).
                description(out, rng, ind + 4, style);
                let _ = writeln!(out, "{pad}    items:");
                schema_node(out, rng, ind + 6, depth + 1, budget, style);
                let _ = writeln!(out, "{pad}    type: array");
                if rng.below(2) == 0 {
                    let _ = writeln!(out, "{pad}    x-kubernetes-list-type: atomic");
                }
            } else {
                leaf(out, rng, ind + 4, style);
            }
            if rng.below(4) == 0 {
                required.push(name.clone());
            }
        }
        if !required.is_empty() {
            let _ = writeln!(out, "{pad}required:");
            for r in required {
                let _ = writeln!(out, "{pad}- {r}");
            }
        }
        let _ = writeln!(out, "{pad}type: object");
    } else {
        leaf_body(out, rng, ind);
    }
}

const PROP: &[&str] = &[
    "alertmanager",
    "basicAuth",
    "bearerToken",
    "container",
    "endpoint",
    "honorLabels",
    "metricRelabeling",
    "namespaceSelector",
    "podMonitor",
    "probe",
    "queryConfig",
    "remoteWrite",
    "retention",
    "ruleSelector",
    "sampleLimit",
    "scrapeClass",
    "securityContext",
    "storage",
    "tlsConfig",
    "tolerations",
    "topologySpread",
    "volumeMount",
    "webConfig",
    "issuerRef",
    "acme",
    "solver",
    "dns01",
    "http01",
    "privateKey",
    "usages",
    "duration",
    "renewBefore",
];
const PROP_SUFFIX: &[&str] = &[
    "", "Spec", "Ref", "Config", "Selector", "Template", "Status",
];

fn leaf(out: &mut String, rng: &mut Rng, ind: usize, style: DescStyle) {
    description(out, rng, ind, style);
    leaf_body(out, rng, ind);
}

fn leaf_body(out: &mut String, rng: &mut Rng, ind: usize) {
    let pad = " ".repeat(ind);
    match rng.below(9) {
        0 => {
            let _ = writeln!(
                out,
                "{pad}format: int32\n{pad}minimum: 0\n{pad}type: integer"
            );
        }
        1 => {
            let _ = writeln!(out, "{pad}type: boolean");
        }
        2 => {
            let _ = writeln!(
                out,
                "{pad}enum:\n{pad}- Always\n{pad}- Never\n{pad}- IfNotPresent\n{pad}type: string"
            );
        }
        3 => {
            let _ = writeln!(
                out,
                "{pad}anyOf:\n{pad}- type: integer\n{pad}- type: string\n{pad}pattern: ^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$\n{pad}x-kubernetes-int-or-string: true"
            );
        }
        4 => {
            let _ = writeln!(
                out,
                "{pad}additionalProperties:\n{pad}  type: string\n{pad}type: object"
            );
        }
        5 => {
            let _ = writeln!(
                out,
                "{pad}type: object\n{pad}x-kubernetes-preserve-unknown-fields: true"
            );
        }
        6 => {
            let _ = writeln!(out, "{pad}items:\n{pad}  type: string\n{pad}type: array");
        }
        7 => {
            let _ = writeln!(
                out,
                "{pad}pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'\n{pad}type: string"
            );
        }
        _ => {
            let _ = writeln!(out, "{pad}type: string");
        }
    }
}

/// A CRD of about `nodes` schema properties, served in two versions (as operators do during a
/// migration), so the schema text appears twice.
fn crd(rng: &mut Rng, group: &str, kind: &str, nodes: usize, style: DescStyle) -> String {
    let plural = format!("{}s", kind.to_lowercase());
    let mut out = format!(
        "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  annotations:\n    controller-gen.kubebuilder.io/version: v0.16.1\n    operator.example.com/version: 0.76.0\n  name: {plural}.{group}\nspec:\n  group: {group}\n  names:\n    categories:\n    - all\n    kind: {kind}\n    listKind: {kind}List\n    plural: {plural}\n    singular: {}\n  scope: Namespaced\n  versions:\n",
        kind.to_lowercase()
    );
    for (i, version) in ["v1", "v1beta1"].iter().enumerate() {
        let _ = write!(
            out,
            "  - additionalPrinterColumns:\n    - description: The desired replicas\n      jsonPath: .spec.replicas\n      name: Replicas\n      type: integer\n    - jsonPath: .status.conditions[?(@.type==\"Ready\")].status\n      name: Ready\n      type: string\n    - jsonPath: .metadata.creationTimestamp\n      name: Age\n      type: date\n    name: {version}\n    schema:\n      openAPIV3Schema:\n"
        );
        let mut budget = nodes;
        schema_node(&mut out, rng, 8, 0, &mut budget, style);
        let _ = write!(
            out,
            "    served: true\n    storage: {}\n    subresources:\n      status: {{}}\n",
            i == 0
        );
    }
    out
}

/// An embedded configuration file of about `lines` lines (alerting rules, as monitoring
/// stacks ship them inside ConfigMaps).
fn rules_text(rng: &mut Rng, lines: usize, ind: usize) -> String {
    let pad = " ".repeat(ind);
    let mut out = format!("{pad}groups:\n");
    let mut n = 1;
    while n < lines {
        let _ = write!(out, "{pad}- name: group-{n}.rules\n{pad}  rules:\n");
        n += 2;
        for r in 0..6 {
            let _ = write!(
                out,
                "{pad}  - alert: Alert{n}x{r}\n{pad}    annotations:\n{pad}      description: {}\n{pad}      runbook_url: https://runbooks.example.com/alerts/alert{n}x{r}\n{pad}      summary: {}\n{pad}    expr: |\n{pad}      sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{job=\"kubelet\", image!=\"\"}}[5m])) > {r}.5\n{pad}        and on (namespace) kube_namespace_labels{{label_team=~\".+\"}}\n{pad}    for: 15m\n{pad}    labels:\n{pad}      severity: warning\n",
                sentence(rng, 20).replace(": ", " "),
                sentence(rng, 8).replace(": ", " "),
            );
            n += 12;
        }
    }
    out
}

/// A Grafana-style JSON dashboard of about `panels` panels.
fn dashboard(rng: &mut Rng, panels: usize) -> String {
    let mut out = String::from(
        "{\n  \"annotations\": {\"list\": []},\n  \"editable\": true,\n  \"panels\": [\n",
    );
    for p in 0..panels {
        let _ = write!(
            out,
            "    {{\n      \"datasource\": \"$datasource\",\n      \"description\": \"{}\",\n      \"gridPos\": {{\"h\": 8, \"w\": 12, \"x\": {}, \"y\": {}}},\n      \"id\": {p},\n      \"targets\": [\n        {{\"expr\": \"sum(rate(http_requests_total{{namespace=\\\"$namespace\\\", code=~\\\"5..\\\"}}[5m])) by (pod)\", \"legendFormat\": \"{{{{pod}}}}\", \"refId\": \"A\"}}\n      ],\n      \"title\": \"Panel {p}\",\n      \"type\": \"timeseries\"\n    }}{}\n",
            sentence(rng, 10).replace('"', ""),
            (p % 2) * 12,
            (p / 2) * 8,
            if p + 1 < panels { "," } else { "" }
        );
    }
    out.push_str("  ],\n  \"schemaVersion\": 39,\n  \"title\": \"Generated\"\n}\n");
    out
}

fn heavy_workload(rng: &mut Rng, name: &str) -> String {
    let mut args = String::new();
    for a in 0..12 {
        let _ = writeln!(
            args,
            "        - --{}-option-{a}=value-{}",
            rng.pick(PROP),
            rng.below(1000)
        );
    }
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {name}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {name}
rules:
- apiGroups:
  - ""
  resources:
  - configmaps
  - secrets
  - services
  - endpoints
  - pods
  verbs:
  - get
  - list
  - watch
- apiGroups:
  - monitoring.example.com
  resources:
  - '*'
  verbs:
  - '*'
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {name}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {name}
subjects:
- kind: ServiceAccount
  name: {name}
  namespace: default
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: {name}
    app.kubernetes.io/component: controller
spec:
  replicas: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {name}
      annotations:
        kubectl.kubernetes.io/default-container: {name}
        checksum/config: 3f6b8e2a9c1d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f
    spec:
      serviceAccountName: {name}
      securityContext:
        runAsNonRoot: true
        runAsUser: 65534
        seccompProfile:
          type: RuntimeDefault
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector:
                matchLabels:
                  app.kubernetes.io/name: {name}
      containers:
      - name: {name}
        image: quay.io/example/{name}:v0.76.0
        args:
{args}        ports:
        - containerPort: 8080
          name: http
        - containerPort: 9090
          name: metrics
        env:
        - name: GOMAXPROCS
          valueFrom:
            resourceFieldRef:
              resource: limits.cpu
        - name: TOKEN
          valueFrom:
            secretKeyRef:
              name: {name}-token
              key: token
        resources:
          limits:
            cpu: "1"
            memory: 512Mi
          requests:
            cpu: 100m
            memory: 128Mi
        livenessProbe:
          httpGet:
            path: /healthz
            port: http
        securityContext:
          allowPrivilegeEscalation: false
          capabilities:
            drop:
            - ALL
          readOnlyRootFilesystem: true
        volumeMounts:
        - name: rules
          mountPath: /etc/rules
        - name: dashboards
          mountPath: /var/lib/dashboards
      volumes:
      - name: rules
        configMap:
          name: {name}-rules
      - name: dashboards
        configMap:
          name: {name}-dashboards
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  ports:
  - name: http
    port: 8080
    targetPort: http
  - name: metrics
    port: 9090
    targetPort: metrics
  selector:
    app.kubernetes.io/name: {name}
---
apiVersion: v1
kind: Secret
metadata:
  name: {name}-token
type: Opaque
stringData:
  token: not-a-real-token
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-rules
data:
  rules.yaml: |
{rules}"#,
        rules = rules_text(rng, 400, 4)
    )
}

/// Writes the heavy tree and returns how many objects the top-level render produces.
///
/// - `crds/`: a bundle of `crds` CRDs in two multi-document files (one per description style),
///   each CRD with a deep schema of long descriptions, served in two versions;
/// - `apps/app-N`: `apps` bases, each with several components (ServiceAccount, RBAC,
///   Deployment, Service, Secret, a ConfigMap of embedded alerting rules) and a
///   configMapGenerator of JSON dashboards read from files;
/// - `clusters/cluster-N`: `overlays` overlays over all the app bases, each with a namespace,
///   a name prefix, commonLabels, a strategic-merge patch, a JSON patch, an image override and
///   a generator merge;
/// - the top level includes the CRDs once and every overlay.
fn generate_heavy_tree(root: &Path, crds: usize, apps: usize, overlays: usize) -> usize {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut objects = 0;
    let mut k = String::from("resources:\n");
    for (f, style) in [
        ("bundle-a.yaml", DescStyle::Folded),
        ("bundle-b.yaml", DescStyle::Literal),
    ] {
        let mut text = String::new();
        for c in 0..crds / 2 + (crds % 2) * usize::from(f == "bundle-a.yaml") {
            let kind = format!(
                "{}{c}",
                ["Monitor", "Issuer", "Probe", "Alertmanager"][c % 4]
            );
            let group = if f == "bundle-a.yaml" {
                "monitoring.example.com"
            } else {
                "cert.example.io"
            };
            text.push_str(&crd(&mut rng, group, &kind, 300, style));
            objects += 1;
        }
        write(&root.join("crds").join(f), &text);
        let _ = writeln!(k, "- {f}");
    }
    write(&root.join("crds/kustomization.yaml"), &k);

    let components = 3;
    for a in 0..apps {
        let dir = root.join(format!("apps/app-{a}"));
        let mut k = String::from("resources:\n");
        for c in 0..components {
            let name = format!("app{a}-c{c}");
            write(
                &dir.join(format!("{name}.yaml")),
                &heavy_workload(&mut rng, &name),
            );
            let _ = writeln!(k, "- {name}.yaml");
        }
        k.push_str("configMapGenerator:\n");
        for c in 0..components {
            let _ = write!(k, "- name: app{a}-c{c}-dashboards\n  files:\n");
            for d in 0..2 {
                let f = format!("dashboards/c{c}-d{d}.json");
                write(&dir.join(&f), &dashboard(&mut rng, 12));
                let _ = writeln!(k, "  - {f}");
            }
        }
        write(&dir.join("kustomization.yaml"), &k);
    }
    let per_overlay = apps * components * 7 + apps * components;
    let mut top = String::from("resources:\n- crds\n");
    for o in 0..overlays {
        let dir = root.join(format!("clusters/cluster-{o}"));
        let mut k = format!(
            "namespace: cluster-{o}\nnamePrefix: c{o}-\ncommonLabels:\n  cluster: cluster-{o}\n  app.kubernetes.io/part-of: platform\nresources:\n"
        );
        for a in 0..apps {
            let _ = writeln!(k, "- ../../apps/app-{a}");
        }
        let _ = write!(
            k,
            "images:\n- name: quay.io/example/app0-c0\n  newTag: v0.77.{o}\npatches:\n- path: resources.yaml\n  target:\n    kind: Deployment\n- target:\n    kind: Deployment\n    name: app0-.*\n  patch: |-\n    - op: replace\n      path: /spec/replicas\n      value: {}\nconfigMapGenerator:\n",
            o + 2
        );
        for a in 0..apps {
            let _ = write!(
                k,
                "- name: app{a}-c0-dashboards\n  behavior: merge\n  literals:\n  - cluster=cluster-{o}\n"
            );
        }
        write(&dir.join("kustomization.yaml"), &k);
        write(
            &dir.join("resources.yaml"),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: any\nspec:\n  template:\n    spec:\n      tolerations:\n      - key: dedicated\n        operator: Equal\n        value: monitoring\n        effect: NoSchedule\n      nodeSelector:\n        kubernetes.io/os: linux\n",
        );
        let _ = writeln!(top, "- clusters/cluster-{o}");
        objects += per_overlay;
    }
    write(&root.join("kustomization.yaml"), &top);
    objects
}

/// Which tree: `TRUEUP_BENCH_TREE=heavy` the heavy one, `generated` the many-objects one;
/// the benchmark runs both when unset.
fn tree_choice() -> String {
    std::env::var("TRUEUP_BENCH_TREE").unwrap_or_default()
}

fn generate_heavy_default(root: &Path) -> usize {
    generate_heavy_tree(
        root,
        knob("TRUEUP_BENCH_CRDS", 10),
        knob("TRUEUP_BENCH_APPS", 6),
        knob("TRUEUP_BENCH_OVERLAYS", 4),
    )
}

fn bench_heavy(c: &mut Criterion) {
    if tree_choice() == "generated" {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let objects = generate_heavy_default(tmp.path());
    let opts = RenderOptions::default();
    let out = render_to_yaml(tmp.path(), &opts).expect("the heavy tree renders");
    let rendered = out.matches("\n---\n").count() + 1;
    assert_eq!(rendered, objects, "the heavy tree renders every object");
    eprintln!(
        "heavy tree: {objects} objects, {} bytes of YAML out",
        out.len()
    );
    let mut g = c.benchmark_group("kustomize-heavy");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(out.len() as u64));
    g.bench_function(format!("render_to_yaml/{objects}_objects"), |b| {
        b.iter(|| render_to_yaml(tmp.path(), &opts).expect("renders"))
    });
    g.finish();
}

fn bench_render(c: &mut Criterion) {
    if tree_choice() == "heavy" {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (bases, per_base, overlays) = (
        knob("TRUEUP_BENCH_BASES", 10),
        knob("TRUEUP_BENCH_PER_BASE", 90),
        knob("TRUEUP_BENCH_OVERLAYS", 5),
    );
    let objects = generate_tree(tmp.path(), bases, per_base, overlays);
    let opts = RenderOptions::default();
    let out = render_to_yaml(tmp.path(), &opts).expect("the generated tree renders");
    let rendered = out.matches("\n---\n").count() + 1;
    assert_eq!(rendered, objects, "the bench tree renders every object");
    eprintln!(
        "bench tree: {objects} objects, {} bytes of YAML out",
        out.len()
    );

    let mut g = c.benchmark_group("kustomize");
    g.sample_size(10);
    g.throughput(Throughput::Elements(objects as u64));
    g.bench_function(format!("render_to_yaml/{objects}_objects"), |b| {
        b.iter(|| render_to_yaml(tmp.path(), &opts).expect("renders"))
    });
    g.finish();
}

criterion_group!(benches, bench_render, bench_heavy);

fn main() {
    if let Ok(dir) = std::env::var("TRUEUP_BENCH_GENERATE") {
        if tree_choice() == "heavy" {
            println!("{}", generate_heavy_default(Path::new(&dir)));
            return;
        }
        let n = generate_tree(
            Path::new(&dir),
            knob("TRUEUP_BENCH_BASES", 10),
            knob("TRUEUP_BENCH_PER_BASE", 90),
            knob("TRUEUP_BENCH_OVERLAYS", 5),
        );
        println!("{n}");
        return;
    }
    if let Ok(dir) = std::env::var("TRUEUP_BENCH_RENDER") {
        match render_to_yaml(Path::new(&dir), &RenderOptions::default()) {
            Ok(text) => print!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
