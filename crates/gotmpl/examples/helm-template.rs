//! A thin `helm template` work-alike over [`trueup_gotmpl::template`], used
//! by scripts/compare-helm.sh to compare output and speed with real helm:
//! `helm-template RELEASE CHART [-n NS] [-f VALUES]... [--set k=v]...
//! [--set-string k=v]... [--kube-version V] [--api-versions G/V]... [--include-crds]`
use std::io::Write;
use trueup_gotmpl::{template, TemplateOptions};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut opts = TemplateOptions::default();
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        // Both `--flag value` and `--flag=value` forms, like helm (cobra).
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut val = |name: &str| -> String {
            inline.clone().or_else(|| args.next()).unwrap_or_else(|| {
                eprintln!("Error: flag needs an argument: {name}");
                std::process::exit(1)
            })
        };
        match flag.as_str() {
            "-n" | "--namespace" => opts.namespace = Some(val(&flag)),
            "-f" | "--values" => opts.values_files.push(val(&flag).into()),
            "--set" => opts.set.push(val(&flag)),
            "--set-string" => opts.set_string.push(val(&flag)),
            "--kube-version" => opts.kube_version = Some(val(&flag)),
            "-a" | "--api-versions" => opts
                .api_versions
                .extend(val(&flag).split(',').map(str::to_string)),
            "--include-crds" => opts.include_crds = true,
            f if f.starts_with('-') => {
                eprintln!("Error: unknown flag: {f}");
                std::process::exit(1)
            }
            _ => positional.push(a),
        }
    }
    if positional.len() != 2 {
        eprintln!("usage: helm-template RELEASE CHART [flags]");
        std::process::exit(1);
    }
    opts.release_name = positional[0].clone();
    opts.chart = positional[1].clone().into();
    match template(&opts) {
        Ok(out) => {
            let _ = std::io::stdout().lock().write_all(out.as_bytes());
        }
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(1);
        }
    }
}
