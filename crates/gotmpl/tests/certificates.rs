//! Sprig's certificate functions produce certificates that real tools accept:
//! `openssl verify` chains the signed certificates to their CA, the keys
//! parse, and `openssl x509 -text` shows the same fields as Helm's own
//! certificates (serials, keys, signatures and times aside).
//!
//! Needs `openssl` (and helm, from `TRUEUP_HELM`, for the comparison); skips
//! without them unless `TRUEUP_REQUIRE_ORACLES` is set.

use std::path::{Path, PathBuf};
use std::process::Command;
use trueup_gotmpl::{Templates, Value};

const TEMPLATE: &str = r#"
{{- $ca := genCA "trueup-ca" 365 -}}
{{- $leaf := genSignedCert "svc" (list "10.0.0.1" "::1") (list "svc.example.com" "svc") 30 $ca -}}
{{- $self := genSelfSignedCert "self.local" nil (list "self.local") 10 -}}
{{- $ec := genPrivateKey "ecdsa" -}}
{{- $ecCA := genCAWithKey "ec-ca" 30 $ec -}}
{{- $ecLeaf := genSignedCertWithKey "ec-leaf" nil (list "ec.local") 5 $ecCA (genPrivateKey "ed25519") -}}
{{- $edSelf := genSelfSignedCertWithKey "ed-self" (list "192.168.1.1") nil 5 (genPrivateKey "ed25519") -}}
{{- range (list $ca $leaf $self $ecCA $ecLeaf $edSelf) }}{{ .Cert }}{{ .Key }}{{ end -}}
"#;

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn require(what: &str) {
    assert!(
        std::env::var_os("TRUEUP_REQUIRE_ORACLES").is_none(),
        "{what} is required (TRUEUP_REQUIRE_ORACLES is set)"
    );
    println!("SKIP: no {what}");
}

fn helm() -> Option<PathBuf> {
    let p = std::env::var("TRUEUP_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/work/tools/helm/helm"));
    p.exists().then_some(p)
}

/// The PEM blocks of a text, in order.
fn blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN") {
            cur.clear();
        }
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END") {
            out.push(cur.clone());
        }
    }
    out
}

fn ours() -> Vec<String> {
    let mut t = Templates::new();
    t.add("c/templates/certs.yaml", TEMPLATE).unwrap();
    blocks(
        &t.render("c/templates/certs.yaml", &Value::empty_map())
            .unwrap(),
    )
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_all(dir: &Path, pems: &[String]) {
    let names = [
        "ca.crt",
        "ca.key",
        "leaf.crt",
        "leaf.key",
        "self.crt",
        "self.key",
        "ecca.crt",
        "ecca.key",
        "ecleaf.crt",
        "ecleaf.key",
        "edself.crt",
        "edself.key",
    ];
    assert_eq!(pems.len(), names.len(), "PEM blocks: {pems:?}");
    for (n, p) in names.iter().zip(pems) {
        std::fs::write(dir.join(n), p).unwrap();
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("trueup-certs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn certificates_verify_and_keys_parse_with_openssl() {
    if !have("openssl") {
        return require("openssl");
    }
    let dir = tempdir("ours");
    write_all(&dir, &ours());
    let v = openssl(&dir, &["verify", "-CAfile", "ca.crt", "leaf.crt"]);
    assert!(v.contains("leaf.crt: OK"), "{v}");
    let v = openssl(&dir, &["verify", "-CAfile", "ecca.crt", "ecleaf.crt"]);
    assert!(v.contains("ecleaf.crt: OK"), "{v}");
    for self_signed in ["ca.crt", "self.crt", "ecca.crt", "edself.crt"] {
        let v = openssl(&dir, &["verify", "-CAfile", self_signed, self_signed]);
        assert!(v.contains(": OK"), "{self_signed}: {v}");
    }
    // A leaf is not a CA: nothing chains to it.
    let bad = Command::new("openssl")
        .args(["verify", "-CAfile", "leaf.crt", "ecleaf.crt"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    for key in ["ca.key", "leaf.key", "ecca.key", "ecleaf.key", "edself.key"] {
        openssl(&dir, &["pkey", "-in", key, "-noout"]);
    }
    // Each certificate holds the public half of its key.
    for (crt, key) in [
        ("leaf.crt", "leaf.key"),
        ("ecca.crt", "ecca.key"),
        ("edself.crt", "edself.key"),
    ] {
        let a = openssl(&dir, &["x509", "-in", crt, "-noout", "-pubkey"]);
        let b = openssl(&dir, &["pkey", "-in", key, "-pubout"]);
        assert_eq!(a, b, "{crt} vs {key}");
    }
    let text = openssl(&dir, &["x509", "-in", "leaf.crt", "-noout", "-text"]);
    assert!(
        text.contains(
            "DNS:svc.example.com, DNS:svc, IP Address:10.0.0.1, IP Address:0:0:0:0:0:0:0:1"
        ),
        "{text}"
    );
    assert!(
        text.contains("Subject: CN = svc") && text.contains("Issuer: CN = trueup-ca"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `openssl x509 -text` without what is random or time-dependent.
fn shape(dir: &Path, crt: &str) -> String {
    let text = openssl(dir, &["x509", "-in", crt, "-noout", "-text"]);
    text.lines()
        .filter(|l| {
            let t = l.trim();
            let hex_dump = t.len() > 2
                && t.as_bytes()[2] == b':'
                && t.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
            !(t.starts_with("Not Before") || t.starts_with("Not After") || hex_dump)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn certificates_have_the_fields_of_helms() {
    if !have("openssl") {
        return require("openssl");
    }
    let Some(helm) = helm() else {
        return require("helm");
    };
    let chart = tempdir("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: c\nversion: 0.1.0\n",
    )
    .unwrap();
    // Helm parses the output as YAML: emit the PEM blocks as one string.
    let t = TEMPLATE.replace(
        "{{- range (list $ca $leaf $self $ecCA $ecLeaf $edSelf) }}{{ .Cert }}{{ .Key }}{{ end -}}",
        "pems: {{ range (list $ca $leaf $self $ecCA $ecLeaf $edSelf) }}{{ print .Cert .Key | b64enc }} {{ end }}",
    );
    std::fs::write(chart.join("templates/certs.yaml"), t).unwrap();
    let out = Command::new(helm)
        .args(["template", "x"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("pems: ")).unwrap();
    let mut pems = Vec::new();
    for b in line["pems: ".len()..].split_whitespace() {
        let decoded = Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        pems.extend(blocks(&String::from_utf8_lossy(&decoded.stdout)));
    }
    let helm_dir = tempdir("helm");
    write_all(&helm_dir, &pems);
    let our_dir = tempdir("ours-shape");
    write_all(&our_dir, &ours());
    for crt in [
        "ca.crt",
        "leaf.crt",
        "self.crt",
        "ecca.crt",
        "ecleaf.crt",
        "edself.crt",
    ] {
        assert_eq!(shape(&our_dir, crt), shape(&helm_dir, crt), "{crt}");
    }
    for d in [chart, helm_dir, our_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `genPrivateKey "dsa"` twice, as PEM blocks.
fn our_dsa_keys() -> Vec<String> {
    let mut t = Templates::new();
    t.add(
        "c/templates/dsa.yaml",
        r#"{{ genPrivateKey "dsa" }}{{ genPrivateKey "dsa" }}"#,
    )
    .unwrap();
    blocks(
        &t.render("c/templates/dsa.yaml", &Value::empty_map())
            .unwrap(),
    )
}

/// The INTEGERs of a DSA key's DER (version, p, q, g, y, x), from
/// `openssl asn1parse`, checking that nothing else is in it.
fn dsa_integers(dir: &Path, key: &str) -> Vec<dsa::BigUint> {
    let text = openssl(dir, &["asn1parse", "-in", key]);
    let mut lines = text.lines();
    let top = lines.next().unwrap();
    assert!(
        top.contains("d=0") && top.contains("cons: SEQUENCE"),
        "{text}"
    );
    lines
        .map(|l| {
            assert!(l.contains("d=1") && l.contains("prim: INTEGER"), "{text}");
            let hex = l.rsplit(':').next().unwrap().trim();
            dsa::BigUint::parse_bytes(hex.as_bytes(), 16).unwrap()
        })
        .collect()
}

/// What a DSA key PEM shows regardless of its random numbers: its PEM
/// type, the bit sizes of p and q, and the fields `openssl pkey -text` names.
fn dsa_shape(dir: &Path, key: &str) -> (String, usize, usize, String) {
    let pem = std::fs::read_to_string(dir.join(key)).unwrap();
    let armor = pem
        .lines()
        .filter(|l| l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n");
    let ints = dsa_integers(dir, key);
    assert_eq!(ints.len(), 6, "{key}: version, p, q, g, y, x");
    let text = openssl(dir, &["pkey", "-in", key, "-noout", "-text"]);
    let fields = text
        .lines()
        .filter(|l| !l.starts_with(' '))
        .collect::<Vec<_>>()
        .join("\n");
    (armor, ints[1].bits(), ints[2].bits(), fields)
}

#[test]
fn dsa_private_keys_are_valid_and_new_each_time() {
    if !have("openssl") {
        return require("openssl");
    }
    let start = std::time::Instant::now();
    let keys = our_dsa_keys();
    println!("two DSA keys in {:?}", start.elapsed());
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(keys[0], keys[1]);
    let dir = tempdir("dsa");
    let mut params = Vec::new();
    for (i, pem) in keys.iter().enumerate() {
        assert!(
            pem.starts_with("-----BEGIN DSA PRIVATE KEY-----\n"),
            "{pem}"
        );
        assert!(pem.ends_with("\n-----END DSA PRIVATE KEY-----\n"), "{pem}");
        assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
        let key = format!("k{i}.pem");
        std::fs::write(dir.join(&key), pem).unwrap();
        // OpenSSL reads it as a DSA key and checks it (parameters and that
        // the public value belongs to the private one).
        let text = openssl(&dir, &["pkey", "-in", &key, "-noout", "-text"]);
        assert!(text.starts_with("Private-Key: (2048 bit)"), "{text}");
        openssl(&dir, &["pkey", "-in", &key, "-check", "-noout"]);
        openssl(&dir, &["dsa", "-in", &key, "-noout"]);

        let ints = dsa_integers(&dir, &key);
        let [version, p, q, g, y, x] = <[dsa::BigUint; 6]>::try_from(ints).unwrap();
        assert_eq!(version, dsa::BigUint::from(0u8));
        assert_eq!((p.bits(), q.bits()), (2048, 256));
        let one = dsa::BigUint::from(1u8);
        assert_eq!((&p - &one) % &q, dsa::BigUint::from(0u8), "q divides p-1");
        assert!(g > one && g < p && g.modpow(&q, &p) == one, "g has order q");
        assert!(x >= one && x < q);
        assert_eq!(g.modpow(&x, &p), y, "y = g^x mod p");
        params.push(p);

        // A signature made with the key verifies with its public half, and
        // not for another message.
        std::fs::write(dir.join("msg"), format!("message {i}")).unwrap();
        std::fs::write(dir.join("other"), "another message").unwrap();
        let sig = format!("k{i}.sig");
        let public = format!("k{i}.pub");
        openssl(&dir, &["pkey", "-in", &key, "-pubout", "-out", &public]);
        openssl(
            &dir,
            &["dgst", "-sha256", "-sign", &key, "-out", &sig, "msg"],
        );
        let v = openssl(
            &dir,
            &[
                "dgst",
                "-sha256",
                "-verify",
                &public,
                "-signature",
                &sig,
                "msg",
            ],
        );
        assert!(v.contains("Verified OK"), "{v}");
        let bad = Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                &public,
                "-signature",
                &sig,
                "other",
            ])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(!bad.status.success());
    }
    // Each call makes new parameters, like Sprig's.
    assert_ne!(params[0], params[1]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dsa_private_keys_have_the_shape_of_helms() {
    if !have("openssl") {
        return require("openssl");
    }
    let Some(helm) = helm() else {
        return require("helm");
    };
    let chart = tempdir("dsa-chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: c\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        chart.join("templates/key.yaml"),
        "key: |\n{{ genPrivateKey \"dsa\" | indent 2 }}\n",
    )
    .unwrap();
    let out = Command::new(helm)
        .args(["template", "x"])
        .arg(&chart)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let helm_keys = blocks(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(helm_keys.len(), 1, "{helm_keys:?}");
    std::fs::write(chart.join("helm.pem"), &helm_keys[0]).unwrap();
    std::fs::write(chart.join("ours.pem"), &our_dsa_keys()[0]).unwrap();
    let helms = dsa_shape(&chart, "helm.pem");
    assert_eq!((helms.1, helms.2), (2048, 256), "{helms:?}");
    assert_eq!(dsa_shape(&chart, "ours.pem"), helms);
    let _ = std::fs::remove_dir_all(&chart);
}

/// Sprig reads DSA keys but Go's `x509.CreateCertificate` takes none:
/// certificate functions given one fail with helm's errors.
#[test]
fn certificates_with_dsa_keys_fail_like_helms() {
    let Some(helm) = helm() else {
        return require("helm");
    };
    let cases = [
        r#"{{ genCAWithKey "x" 3 (genPrivateKey "dsa") }}"#,
        r#"{{ genSelfSignedCertWithKey "x" nil nil 3 (genPrivateKey "dsa") }}"#,
        r#"{{ genSignedCertWithKey "x" nil nil 3 (genCA "ca" 3) (genPrivateKey "dsa") }}"#,
        r#"{{ genSelfSignedCertWithKey "x" (list "bad") nil 3 (genPrivateKey "dsa") }}"#,
        "{{ genCAWithKey \"x\" 3 \"-----BEGIN DSA PRIVATE KEY-----\\nMAMCAQA=\\n-----END DSA PRIVATE KEY-----\\n\" }}",
    ];
    let chart = tempdir("dsa-errors");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: c\nversion: 0.1.0\n",
    )
    .unwrap();
    // The error as Sprig words it, after the template position.
    let error_text = |e: &str| e[e.find("error calling ").expect(e)..].trim().to_string();
    for case in cases {
        std::fs::write(chart.join("templates/t.yaml"), case).unwrap();
        let out = Command::new(&helm)
            .args(["template", "x"])
            .arg(&chart)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{case}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let helms = error_text(stderr.lines().next().unwrap());

        let mut t = Templates::new();
        t.add("c/templates/t.yaml", case).unwrap();
        let ours = t
            .render("c/templates/t.yaml", &Value::empty_map())
            .unwrap_err()
            .to_string();
        assert_eq!(error_text(&ours), helms, "{case}");
    }
    let _ = std::fs::remove_dir_all(&chart);
}
