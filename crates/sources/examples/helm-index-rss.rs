//! Peak memory of the streaming index reader: generates a ~100 MB
//! index.yaml (thousands of charts x versions, the shape of big public
//! repositories), reads it from disk with `read_chart_entries` for one chart
//! and prints the peak RSS (VmHWM). `cargo run --release -p trueup-sources
//! --example helm-index-rss [MB]`
use std::io::{BufWriter, Write};
use trueup_sources::helm::index::read_chart_entries;

fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

fn main() -> std::io::Result<()> {
    let mb: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("index.yaml");
    let mut w = BufWriter::new(std::fs::File::create(&path)?);
    writeln!(w, "apiVersion: v1\nentries:")?;
    let mut written = 0u64;
    let mut chart = 0;
    while written < mb * 1024 * 1024 {
        let name = format!("chart-{chart:05}");
        let mut block = format!("  {name}:\n");
        for v in 0..60 {
            block.push_str(&format!(
                "  - apiVersion: v2\n    appVersion: 1.{v}.0\n    created: \"2024-01-01T00:00:00.000000000Z\"\n    description: A Helm chart for Kubernetes, generated entry {v} of {name}\n    digest: {:064x}\n    name: {name}\n    urls:\n    - https://charts.example.com/{name}-0.{v}.0.tgz\n    version: 0.{v}.0\n",
                chart * 1000 + v
            ));
        }
        written += block.len() as u64;
        w.write_all(block.as_bytes())?;
        chart += 1;
    }
    writeln!(w, "generated: \"2024-01-01T00:00:00Z\"")?;
    w.flush()?;
    drop(w);
    let size = std::fs::metadata(&path)?.len();
    let before = vm_hwm();
    let want = format!("chart-{:05}", chart / 2);
    let t = std::time::Instant::now();
    let f = std::io::BufReader::with_capacity(64 * 1024, std::fs::File::open(&path)?);
    let entries = read_chart_entries(f, &want).map_err(std::io::Error::other)?;
    println!(
        "index: {:.1} MB, {chart} charts; {want}: {} versions in {:.2?}; peak RSS before parse {before}, after {}",
        size as f64 / 1048576.0,
        entries.len(),
        t.elapsed(),
        vm_hwm()
    );
    Ok(())
}
