//! The less used Sprig functions: dates and durations, paths, URLs, random
//! values, encodings, and (in `crypto`) keys, certificates and ciphers.

use crate::crypto;
use crate::encoding::b64_encode;
use crate::funcs::{FnError, PlainFn};
use crate::gotime::{as_time, duration_string, parse_duration, Loc, Time};
use crate::value::Value;
use std::rc::Rc;

type R = Result<Value, FnError>;

/// The extra functions, registered after the core table.
pub(crate) fn functions() -> Vec<(&'static str, PlainFn)> {
    vec![
        ("now", f_now),
        ("date", f_date),
        ("dateInZone", f_date_in_zone),
        ("date_in_zone", f_date_in_zone),
        ("htmlDate", f_html_date),
        ("htmlDateInZone", f_html_date_in_zone),
        ("dateModify", f_date_modify),
        ("date_modify", f_date_modify),
        ("mustDateModify", f_must_date_modify),
        ("must_date_modify", f_must_date_modify),
        ("toDate", f_to_date),
        ("mustToDate", f_must_to_date),
        ("unixEpoch", f_unix_epoch),
        ("ago", f_ago),
        ("duration", f_duration),
        ("durationRound", f_duration_round),
        // crypto
        ("genPrivateKey", crypto::f_gen_private_key),
        ("genCA", crypto::f_gen_ca),
        ("genCAWithKey", crypto::f_gen_ca_with_key),
        ("genSelfSignedCert", crypto::f_gen_self_signed_cert),
        (
            "genSelfSignedCertWithKey",
            crypto::f_gen_self_signed_cert_with_key,
        ),
        ("genSignedCert", crypto::f_gen_signed_cert),
        ("genSignedCertWithKey", crypto::f_gen_signed_cert_with_key),
        ("buildCustomCert", crypto::f_build_custom_cert),
        ("encryptAES", crypto::f_encrypt_aes),
        ("decryptAES", crypto::f_decrypt_aes),
        ("bcrypt", crypto::f_bcrypt),
        ("htpasswd", crypto::f_htpasswd),
        ("derivePassword", crypto::f_derive_password),
        // random
        ("randBytes", f_rand_bytes),
        ("randInt", f_rand_int),
        ("shuffle", f_shuffle),
        // paths (path and path/filepath: the same on Unix)
        ("base", f_base),
        ("dir", f_dir),
        ("clean", f_clean),
        ("ext", f_ext),
        ("isAbs", f_is_abs),
        ("osBase", f_base),
        ("osDir", f_dir),
        ("osClean", f_clean),
        ("osExt", f_ext),
        ("osIsAbs", f_is_abs),
        // URLs
        ("urlParse", f_url_parse),
        ("urlJoin", f_url_join),
        // strings and conversions
        ("abbrevboth", f_abbrevboth),
        ("trimall", f_trimall),
        ("b32dec", f_b32dec),
        ("toDecimal", f_to_decimal),
        ("hello", f_hello),
        ("mustFromJson", f_must_from_json),
        ("getHostByName", f_get_host_by_name),
    ]
}

/// Parameter signatures (see `funcs::signature`); `t` is a `time.Time`.
pub(crate) fn signature(name: &str) -> Option<&'static str> {
    Some(match name {
        "now" => "",
        "date" => "sa",
        "dateInZone" | "date_in_zone" => "sas",
        "htmlDate" | "ago" | "duration" | "durationRound" => "a",
        "htmlDateInZone" => "as",
        "dateModify" | "date_modify" | "mustDateModify" | "must_date_modify" => "st",
        "toDate" | "mustToDate" => "ss",
        "unixEpoch" => "t",
        "genPrivateKey" | "bcrypt" | "shuffle" | "urlParse" | "b32dec" | "mustFromJson"
        | "getHostByName" | "base" | "dir" | "clean" | "ext" | "isAbs" | "osBase" | "osDir"
        | "osClean" | "osExt" | "osIsAbs" => "s",
        "genCA" => "si",
        "genCAWithKey" => "sis",
        "genSelfSignedCert" => "slli",
        "genSelfSignedCertWithKey" => "sllis",
        "genSignedCert" => "sllic",
        "genSignedCertWithKey" => "sllics",
        "buildCustomCert" | "encryptAES" | "decryptAES" | "htpasswd" | "trimall" => "ss",
        "derivePassword" => "issss",
        "randBytes" => "i",
        "randInt" => "ii",
        "urlJoin" => "m",
        "abbrevboth" => "iis",
        "toDecimal" => "a",
        "hello" => "",
        _ => return None,
    })
}

fn time_value(t: Time) -> Value {
    Value::Object(Rc::new(t))
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn t(v: &Value) -> Time {
    as_time(v).cloned().unwrap_or_else(Time::zero)
}

fn f_now(_a: &[Value]) -> R {
    Ok(time_value(Time::now()))
}

/// Sprig's `dateInZone`: times as they are, Go ints as Unix seconds, anything
/// else (floats from YAML included) as now; an unknown zone is UTC.
fn date_in_zone(layout: &str, date: &Value, zone: &str) -> String {
    let t = match date {
        Value::Int(i) | Value::Int64(i) => Time::unix(*i),
        v => as_time(v).cloned().unwrap_or_else(Time::now),
    };
    let loc = Loc::load(zone).unwrap_or(Loc::Utc);
    t.in_loc(loc).format(layout)
}

fn f_date(a: &[Value]) -> R {
    Ok(Value::string(date_in_zone(s(&a[0]), &a[1], "Local")))
}
fn f_date_in_zone(a: &[Value]) -> R {
    Ok(Value::string(date_in_zone(s(&a[0]), &a[1], s(&a[2]))))
}
fn f_html_date(a: &[Value]) -> R {
    Ok(Value::string(date_in_zone("2006-01-02", &a[0], "Local")))
}
fn f_html_date_in_zone(a: &[Value]) -> R {
    Ok(Value::string(date_in_zone("2006-01-02", &a[0], s(&a[1]))))
}

fn f_date_modify(a: &[Value]) -> R {
    let date = t(&a[1]);
    Ok(time_value(match parse_duration(s(&a[0])) {
        Ok(d) => date.add(d),
        Err(_) => date,
    }))
}
fn f_must_date_modify(a: &[Value]) -> R {
    let d = parse_duration(s(&a[0])).map_err(FnError::Call)?;
    Ok(time_value(t(&a[1]).add(d)))
}

fn f_to_date(a: &[Value]) -> R {
    Ok(time_value(
        Time::parse(s(&a[0]), s(&a[1]), Loc::Local).unwrap_or_else(|_| Time::zero()),
    ))
}
fn f_must_to_date(a: &[Value]) -> R {
    Time::parse(s(&a[0]), s(&a[1]), Loc::Local)
        .map(time_value)
        .map_err(FnError::Call)
}

fn f_unix_epoch(a: &[Value]) -> R {
    Ok(Value::string(t(&a[0]).secs.to_string()))
}

fn f_ago(a: &[Value]) -> R {
    let then = match &a[0] {
        Value::Int(i) | Value::Int64(i) => Time::unix(*i),
        v => as_time(v).cloned().unwrap_or_else(Time::now),
    };
    // Rounded to whole seconds, halves away from zero (Duration.Round).
    let d = then.since();
    let r = if d >= 0 {
        (d + 500_000_000) / 1_000_000_000
    } else {
        (d - 500_000_000) / 1_000_000_000
    };
    Ok(Value::string(duration_string(r * 1_000_000_000)))
}

fn f_duration(a: &[Value]) -> R {
    // Sprig reads a string or an int64 (a Go int is not one: 0s).
    let n: i64 = match &a[0] {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Int64(i) => *i,
        _ => 0,
    };
    Ok(Value::string(duration_string(
        n.saturating_mul(1_000_000_000),
    )))
}

fn f_duration_round(a: &[Value]) -> R {
    let d: i64 = match &a[0] {
        Value::String(s) => parse_duration(s).unwrap_or(0),
        Value::Int64(i) => *i,
        v => as_time(v).map(Time::since).unwrap_or(0),
    };
    let u = d.unsigned_abs();
    const SEC: u64 = 1_000_000_000;
    let units: [(u64, &str); 6] = [
        (SEC * 3600 * 24 * 365, "y"),
        (SEC * 3600 * 24 * 30, "mo"),
        (SEC * 3600 * 24, "d"),
        (SEC * 3600, "h"),
        (SEC * 60, "m"),
        (SEC, "s"),
    ];
    for (size, suffix) in units {
        if u > size {
            return Ok(Value::string(format!("{}{suffix}", u / size)));
        }
    }
    Ok(Value::str("0s"))
}

// ---- random ------------------------------------------------------------------

fn f_rand_bytes(a: &[Value]) -> R {
    let n = match &a[0] {
        Value::Int(i) => *i,
        _ => 0,
    };
    if n < 0 {
        return Err(FnError::Call(
            "runtime error: makeslice: len out of range".into(),
        ));
    }
    Ok(Value::string(b64_encode(&crypto::random_bytes(n as usize))))
}

fn f_rand_int(a: &[Value]) -> R {
    let (min, max) = match (&a[0], &a[1]) {
        (Value::Int(x), Value::Int(y)) => (*x, *y),
        _ => (0, 0),
    };
    let span = max.wrapping_sub(min);
    if span <= 0 {
        return Err(FnError::Call("invalid argument to Intn".into()));
    }
    let r = u64::from_le_bytes(crypto::random_bytes(8).try_into().unwrap_or([0; 8]));
    Ok(Value::Int(min + (r % span as u64) as i64))
}

fn f_shuffle(a: &[Value]) -> R {
    let mut chars: Vec<char> = s(&a[0]).chars().collect();
    // Fisher-Yates.
    for i in (1..chars.len()).rev() {
        let r = u64::from_le_bytes(crypto::random_bytes(8).try_into().unwrap_or([0; 8]));
        chars.swap(i, (r % (i as u64 + 1)) as usize);
    }
    Ok(Value::string(chars.into_iter().collect()))
}

// ---- paths -------------------------------------------------------------------

/// Go's `path.Clean`.
fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

fn f_clean(a: &[Value]) -> R {
    Ok(Value::string(clean(s(&a[0]))))
}

fn f_base(a: &[Value]) -> R {
    let p = s(&a[0]);
    if p.is_empty() {
        return Ok(Value::str("."));
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return Ok(Value::str("/"));
    }
    Ok(Value::str(t.rsplit('/').next().unwrap_or(t)))
}

fn f_dir(a: &[Value]) -> R {
    let p = s(&a[0]);
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    Ok(Value::string(clean(dir)))
}

fn f_ext(a: &[Value]) -> R {
    let p = s(&a[0]);
    for (i, c) in p.char_indices().rev() {
        match c {
            '/' => break,
            '.' => return Ok(Value::str(&p[i..])),
            _ => {}
        }
    }
    Ok(Value::str(""))
}

fn f_is_abs(a: &[Value]) -> R {
    Ok(Value::Bool(s(&a[0]).starts_with('/')))
}

// ---- URLs --------------------------------------------------------------------

/// Go's `url.PathUnescape`-style decoding; `None` on a bad escape.
fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Clone, Copy, PartialEq)]
enum Enc {
    Path,
    Fragment,
    UserPassword,
}

/// Go's `url.shouldEscape` for the parts `urlJoin` writes.
fn escape(s: &str, mode: Enc) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        let keep = c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'_' | b'.' | b'~')
            || match mode {
                Enc::Path => matches!(
                    c,
                    b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'@'
                ),
                Enc::Fragment => matches!(
                    c,
                    b'$' | b'&'
                        | b'+'
                        | b','
                        | b'/'
                        | b':'
                        | b';'
                        | b'='
                        | b'?'
                        | b'@'
                        | b'!'
                        | b'('
                        | b')'
                        | b'*'
                ),
                Enc::UserPassword => matches!(c, b'$' | b'&' | b'+' | b',' | b';' | b'='),
            };
        if keep {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

fn f_url_parse(a: &[Value]) -> R {
    let raw = s(&a[0]);
    let fail = |m: &str| {
        Err(FnError::Call(format!(
            "unable to parse url: parse {}: {m}",
            crate::gofmt::go_quote(raw)
        )))
    };
    let (rest, fragment) = match raw.split_once('#') {
        Some((r, f)) => (r, unescape(f).unwrap_or_else(|| f.to_string())),
        None => (raw, String::new()),
    };
    // A scheme is letters, then letters, digits, + - . up to the first ':'.
    let mut scheme = "";
    let mut rest = rest;
    if let Some(i) = rest.find(':') {
        let cand = &rest[..i];
        let valid = cand.bytes().enumerate().all(|(k, c)| {
            c.is_ascii_alphabetic() || (k > 0 && (c.is_ascii_digit() || b"+-.".contains(&c)))
        });
        if i == 0 {
            return fail("missing protocol scheme");
        }
        if valid {
            scheme = cand;
            rest = &rest[i + 1..];
        }
    }
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    let mut m = std::collections::BTreeMap::new();
    let (mut host, mut userinfo, mut path, mut opaque) =
        (String::new(), String::new(), String::new(), String::new());
    if !scheme.is_empty() && !rest.starts_with('/') {
        opaque = rest.to_string();
    } else if let Some(auth_rest) = rest.strip_prefix("//") {
        let end = auth_rest.find('/').unwrap_or(auth_rest.len());
        let auth = &auth_rest[..end];
        path = unescape(&auth_rest[end..]).unwrap_or_else(|| auth_rest[end..].to_string());
        match auth.rsplit_once('@') {
            Some((u, h)) => {
                userinfo = u.to_string();
                host = h.to_string();
            }
            None => host = auth.to_string(),
        }
    } else {
        path = unescape(rest).unwrap_or_else(|| rest.to_string());
    }
    let hostname = if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or_default().to_string()
    } else {
        host.split(':').next().unwrap_or_default().to_string()
    };
    m.insert("scheme".to_string(), Value::str(scheme));
    m.insert("host".to_string(), Value::string(host));
    m.insert("hostname".to_string(), Value::string(hostname));
    m.insert("path".to_string(), Value::string(path));
    m.insert("query".to_string(), Value::str(query));
    m.insert("opaque".to_string(), Value::string(opaque));
    m.insert("fragment".to_string(), Value::string(fragment));
    m.insert("userinfo".to_string(), Value::string(userinfo));
    Ok(Value::map(m))
}

fn f_url_join(a: &[Value]) -> R {
    let Value::Map(m) = &a[0] else {
        return Ok(Value::str(""));
    };
    let m = m.borrow();
    let get = |k: &str| m.get(k).map(crate::funcs::strval).unwrap_or_default();
    let (scheme, host, path, query, fragment, opaque, userinfo) = (
        get("scheme"),
        get("host"),
        get("path"),
        get("query"),
        get("fragment"),
        get("opaque"),
        get("userinfo"),
    );
    let user = if userinfo.is_empty() {
        None
    } else {
        let (u, p) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (userinfo.as_str(), None),
        };
        let bad = || {
            FnError::Call(format!(
                "unable to parse userinfo in dict: parse \"proto://{userinfo}@host\": net/url: invalid userinfo"
            ))
        };
        if userinfo.contains([' ', '/', '?', '#', '@']) {
            return Err(bad());
        }
        let u = unescape(u).ok_or_else(bad)?;
        let p = match p {
            Some(p) => Some(unescape(p).ok_or_else(bad)?),
            None => None,
        };
        let mut s = escape(&u, Enc::UserPassword);
        if let Some(p) = p {
            s.push(':');
            s.push_str(&escape(&p, Enc::UserPassword));
        }
        Some(s)
    };
    let mut out = String::new();
    if !scheme.is_empty() {
        out.push_str(&scheme);
        out.push(':');
    }
    if !opaque.is_empty() {
        out.push_str(&opaque);
    } else {
        if !scheme.is_empty() || !host.is_empty() || user.is_some() {
            if !host.is_empty() || !path.is_empty() || user.is_some() {
                out.push_str("//");
            }
            if let Some(u) = &user {
                out.push_str(u);
                out.push('@');
            }
            out.push_str(&host);
        }
        let p = escape(&path, Enc::Path);
        if !p.is_empty() && !p.starts_with('/') && !host.is_empty() {
            out.push('/');
        }
        if out.is_empty() && p.split('/').next().unwrap_or_default().contains(':') {
            out.push_str("./");
        }
        out.push_str(&p);
    }
    if !query.is_empty() {
        out.push('?');
        out.push_str(&query);
    }
    if !fragment.is_empty() {
        out.push('#');
        out.push_str(&escape(&fragment, Enc::Fragment));
    }
    Ok(Value::string(out))
}

// ---- strings and conversions ---------------------------------------------------

/// goutils' `AbbreviateFull`; errors give "" like Sprig.
fn abbreviate_full(s: &str, offset: i64, max: i64) -> String {
    let len = s.len() as i64;
    if s.is_empty() || max < 4 {
        return String::new();
    }
    if len <= max {
        return s.to_string();
    }
    let mut offset = offset.min(len);
    if len - offset < max - 3 {
        offset = len - (max - 3);
    }
    let cut = |a: i64, b: i64| {
        s.get(a.max(0) as usize..b.max(0) as usize)
            .unwrap_or_default()
    };
    if offset <= 4 {
        return format!("{}...", cut(0, max - 3));
    }
    if max < 7 {
        return String::new();
    }
    if offset + max - 3 < len {
        return format!("...{}", abbreviate_full(cut(offset, len), 0, max - 3));
    }
    format!("...{}", cut(len - (max - 3), len))
}

fn f_abbrevboth(a: &[Value]) -> R {
    let (l, r) = match (&a[0], &a[1]) {
        (Value::Int(l), Value::Int(r)) => (*l, *r),
        _ => (0, 0),
    };
    Ok(Value::string(abbreviate_full(s(&a[2]), l, r)))
}

fn f_trimall(a: &[Value]) -> R {
    let cut = s(&a[0]);
    Ok(Value::str(s(&a[1]).trim_matches(|c| cut.contains(c))))
}

fn f_b32dec(a: &[Value]) -> R {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let text = s(&a[0]);
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u64, 0);
    let body = text.trim_end_matches('=');
    for (i, c) in body.bytes().enumerate() {
        let Some(v) = A.iter().position(|x| *x == c) else {
            return Ok(Value::string(format!(
                "illegal base32 data at input byte {i}"
            )));
        };
        acc = (acc << 5) | v as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if !text.len().is_multiple_of(8) {
        return Ok(Value::string(format!(
            "illegal base32 data at input byte {}",
            text.len() / 8 * 8
        )));
    }
    Ok(Value::string(String::from_utf8_lossy(&out).into_owned()))
}

fn f_to_decimal(a: &[Value]) -> R {
    let text = crate::funcs::strval(&a[0]);
    Ok(Value::Int64(i64::from_str_radix(&text, 8).unwrap_or(0)))
}

fn f_hello(_a: &[Value]) -> R {
    Ok(Value::str("Hello!"))
}

fn f_must_from_json(a: &[Value]) -> R {
    match serde_json::from_str::<serde_json::Value>(s(&a[0])) {
        Ok(v) => Ok(Value::from_json(&v)),
        Err(e) => Err(FnError::Call(e.to_string())),
    }
}

/// Helm resolves names only with `--enable-dns`; `helm template` without
/// it (and this renderer, which never uses the network) returns "".
fn f_get_host_by_name(_a: &[Value]) -> R {
    Ok(Value::str(""))
}
