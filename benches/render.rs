//! Throughput of the native kustomize renderer on a large generated overlay tree.
//!
//! The tree: several bases (Deployments, Services, ConfigMaps, a configMapGenerator), several
//! overlays that each include *every* base (so bases are shared and must render once), each
//! with a namespace, a name prefix, labels, an image override, a strategic-merge patch, a JSON
//! patch and a generator merge, and a top-level kustomization that aggregates the overlays.
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

fn bench_render(c: &mut Criterion) {
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

criterion_group!(benches, bench_render);

fn main() {
    if let Ok(dir) = std::env::var("TRUEUP_BENCH_GENERATE") {
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
