//! The less used Sprig functions: dates and durations.

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
