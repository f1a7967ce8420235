//! Renders the large `operator` fixture (160 templates, heavy include/tpl
//! through a library chart) and the library-heavy fixture end to end, as
//! `helm template` does: load, values, render, sort, format.
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::Path;
use trueup_gotmpl::{template, TemplateOptions};

fn bench(c: &mut Criterion) {
    let charts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts");
    for name in ["operator", "libheavy"] {
        let opts = TemplateOptions {
            release_name: "bench".into(),
            chart: charts.join(name),
            ..TemplateOptions::default()
        };
        // Fail loudly (outside the timed loop) if the fixture stops rendering.
        let out = template(&opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!out.is_empty());
        c.bench_function(&format!("helm_template_{name}"), |b| {
            b.iter(|| template(black_box(&opts)).map(|s| s.len()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
