//! Go's `time.Time` and `time.Duration` as templates see them: Go layouts
//! (`2006-01-02 15:04:05`) for formatting and parsing, `Time.String()`,
//! `Duration.String()` and `time.ParseDuration`. Time zones come from the
//! system database (jiff), like Go's `time.LoadLocation`.

use crate::value::{Object, Value};
use std::rc::Rc;
use std::sync::OnceLock;

/// A location: what Go's `*time.Location` resolves to.
#[derive(Clone)]
pub(crate) enum Loc {
    Utc,
    /// `time.Local` (the `TZ` variable or /etc/localtime).
    Local,
    /// A fixed offset; the name is empty for offsets read from a string.
    Fixed(String, i32),
    /// A named zone from the database.
    Zone(jiff::tz::TimeZone),
}

fn local_tz() -> &'static jiff::tz::TimeZone {
    static L: OnceLock<jiff::tz::TimeZone> = OnceLock::new();
    L.get_or_init(jiff::tz::TimeZone::system)
}

impl Loc {
    /// `time.LoadLocation`.
    pub(crate) fn load(name: &str) -> Result<Loc, String> {
        match name {
            "" | "UTC" => Ok(Loc::Utc),
            "Local" => Ok(Loc::Local),
            _ => jiff::tz::TimeZone::get(name)
                .map(Loc::Zone)
                .map_err(|_| format!("unknown time zone {name}")),
        }
    }

    /// Offset east of UTC in seconds and the zone abbreviation at `secs`.
    fn offset_at(&self, secs: i64) -> (i32, String) {
        let lookup = |tz: &jiff::tz::TimeZone| -> (i32, String) {
            match jiff::Timestamp::from_second(secs) {
                Ok(ts) => {
                    let info = tz.to_offset_info(ts);
                    (info.offset().seconds(), info.abbreviation().to_string())
                }
                Err(_) => (0, "UTC".into()),
            }
        };
        match self {
            Loc::Utc => (0, "UTC".into()),
            Loc::Local => lookup(local_tz()),
            Loc::Fixed(n, off) => (*off, n.clone()),
            Loc::Zone(tz) => lookup(tz),
        }
    }
}

/// A Go `time.Time`.
#[derive(Clone)]
pub(crate) struct Time {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nsec: u32,
    pub loc: Loc,
    /// The monotonic clock reading (seconds since process start) that
    /// `time.Now()` carries and `String()` prints as `m=+0.000000000`.
    pub mono: Option<f64>,
}

fn process_start() -> &'static std::time::Instant {
    static S: OnceLock<std::time::Instant> = OnceLock::new();
    S.get_or_init(std::time::Instant::now)
}

/// Seconds between 0001-01-01 and 1970-01-01 (Go's zero time).
const ZERO_UNIX: i64 = -62135596800;

impl Time {
    /// `time.Now()` in Local.
    pub(crate) fn now() -> Time {
        let start = *process_start();
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time {
            secs: d.as_secs() as i64,
            nsec: d.subsec_nanos(),
            loc: Loc::Local,
            mono: Some(start.elapsed().as_secs_f64()),
        }
    }

    /// `time.Unix(secs, 0)` in Local.
    pub(crate) fn unix(secs: i64) -> Time {
        Time {
            secs,
            nsec: 0,
            loc: Loc::Local,
            mono: None,
        }
    }

    /// The zero `time.Time` (0001-01-01 00:00:00 UTC).
    pub(crate) fn zero() -> Time {
        Time {
            secs: ZERO_UNIX,
            nsec: 0,
            loc: Loc::Utc,
            mono: None,
        }
    }

    /// `time.Date(y, m, d, h, min, sec, nsec, loc)` for a location with the
    /// fixed offset `off` (seconds east of UTC) named `name`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fixed_date(
        y: i64,
        m: u32,
        d: u32,
        h: u32,
        min: u32,
        sec: u32,
        nsec: u32,
        name: &str,
        off: i32,
    ) -> Time {
        let local = days_from_civil(y, m, d) * 86400
            + i64::from(h) * 3600
            + i64::from(min) * 60
            + i64::from(sec);
        Time {
            secs: local - i64::from(off),
            nsec,
            loc: Loc::Fixed(name.to_string(), off),
            mono: None,
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.secs == ZERO_UNIX && self.nsec == 0
    }

    /// `t.In(loc)` (drops the monotonic reading).
    pub(crate) fn in_loc(&self, loc: Loc) -> Time {
        Time {
            loc,
            mono: None,
            ..self.clone()
        }
    }

    /// `t.Add(d)`, `d` in nanoseconds.
    pub(crate) fn add(&self, d: i64) -> Time {
        let total = i128::from(self.secs) * 1_000_000_000 + i128::from(self.nsec) + i128::from(d);
        Time {
            secs: total.div_euclid(1_000_000_000) as i64,
            nsec: total.rem_euclid(1_000_000_000) as u32,
            loc: self.loc.clone(),
            mono: self.mono.map(|m| m + d as f64 / 1e9),
        }
    }

    /// Nanoseconds since the Unix epoch.
    pub(crate) fn unix_nano(&self) -> i128 {
        i128::from(self.secs) * 1_000_000_000 + i128::from(self.nsec)
    }

    /// `time.Since(t)` in nanoseconds (saturating like Go's Duration).
    pub(crate) fn since(&self) -> i64 {
        let now = Time::now();
        let d = now.unix_nano() - self.unix_nano();
        d.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    fn civil(&self) -> Civil {
        let (off, abbr) = self.loc.offset_at(self.secs);
        let local = self.secs + i64::from(off);
        let days = local.div_euclid(86400);
        let sod = local.rem_euclid(86400);
        let (y, m, d) = civil_from_days(days);
        Civil {
            year: y,
            month: m,
            day: d,
            hour: (sod / 3600) as u32,
            min: (sod / 60 % 60) as u32,
            sec: (sod % 60) as u32,
            nsec: self.nsec,
            // 1970-01-01 was a Thursday (4).
            weekday: (days + 4).rem_euclid(7) as u32,
            yday: (days - days_from_civil(y, 1, 1) + 1) as u32,
            off,
            abbr,
        }
    }

    /// `t.Format(layout)`.
    pub(crate) fn format(&self, layout: &str) -> String {
        let c = self.civil();
        let mut out = String::with_capacity(layout.len() + 10);
        for chunk in chunks(layout) {
            match chunk {
                Chunk::Lit(s) => out.push_str(s),
                Chunk::Std(std) => c.write(std, &mut out),
            }
        }
        out
    }

    /// RFC 3339 with nanoseconds, as `MarshalJSON` writes it.
    pub(crate) fn rfc3339_nano(&self) -> String {
        self.format("2006-01-02T15:04:05.999999999Z07:00")
    }

    /// `t.String()`.
    pub(crate) fn go_string(&self) -> String {
        let mut s = self.format("2006-01-02 15:04:05.999999999 -0700 MST");
        if let Some(m) = self.mono {
            s.push_str(&format!(
                " m={}{:.9}",
                if m < 0.0 { '-' } else { '+' },
                m.abs()
            ));
        }
        s
    }

    /// `time.ParseInLocation(layout, value, loc)`.
    pub(crate) fn parse(layout: &str, value: &str, loc: Loc) -> Result<Time, String> {
        parse(layout, value, loc)
    }
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    nsec: u32,
    weekday: u32,
    yday: u32,
    off: i32,
    abbr: String,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn pad(out: &mut String, n: i64, width: usize) {
    if n < 0 {
        out.push('-');
    }
    let s = n.unsigned_abs().to_string();
    for _ in s.len()..width {
        out.push('0');
    }
    out.push_str(&s);
}

impl Civil {
    fn write(&self, std: Std, out: &mut String) {
        match std {
            Std::LongMonth => out.push_str(MONTHS[self.month as usize - 1]),
            Std::Month => out.push_str(&MONTHS[self.month as usize - 1][..3]),
            Std::NumMonth => pad(out, self.month.into(), 0),
            Std::ZeroMonth => pad(out, self.month.into(), 2),
            Std::LongWeekDay => out.push_str(DAYS[self.weekday as usize]),
            Std::WeekDay => out.push_str(&DAYS[self.weekday as usize][..3]),
            Std::Day => pad(out, self.day.into(), 0),
            Std::UnderDay => {
                if self.day < 10 {
                    out.push(' ');
                }
                pad(out, self.day.into(), 0)
            }
            Std::ZeroDay => pad(out, self.day.into(), 2),
            Std::UnderYearDay => {
                if self.yday < 100 {
                    out.push(' ');
                    if self.yday < 10 {
                        out.push(' ');
                    }
                }
                pad(out, self.yday.into(), 0)
            }
            Std::ZeroYearDay => pad(out, self.yday.into(), 3),
            Std::Hour => pad(out, self.hour.into(), 2),
            Std::Hour12 | Std::ZeroHour12 => {
                let h = match self.hour % 12 {
                    0 => 12,
                    h => h,
                };
                pad(out, h.into(), if std == Std::Hour12 { 0 } else { 2 })
            }
            Std::Minute => pad(out, self.min.into(), 0),
            Std::ZeroMinute => pad(out, self.min.into(), 2),
            Std::Second => pad(out, self.sec.into(), 0),
            Std::ZeroSecond => pad(out, self.sec.into(), 2),
            Std::LongYear => pad(out, self.year, 4),
            Std::Year => pad(out, self.year.rem_euclid(100), 2),
            Std::PM => out.push_str(if self.hour >= 12 { "PM" } else { "AM" }),
            Std::Pm => out.push_str(if self.hour >= 12 { "pm" } else { "am" }),
            Std::Tz => {
                if !self.abbr.is_empty() {
                    out.push_str(&self.abbr);
                } else {
                    let z = self.off / 60;
                    out.push(if z < 0 { '-' } else { '+' });
                    pad(out, i64::from(z.abs() / 60), 2);
                    pad(out, i64::from(z.abs() % 60), 2);
                }
            }
            Std::Iso(kind) | Std::Num(kind) => {
                if matches!(std, Std::Iso(_)) && self.off == 0 {
                    out.push('Z');
                    return;
                }
                let z = self.off.abs();
                out.push(if self.off < 0 { '-' } else { '+' });
                pad(out, i64::from(z / 3600), 2);
                let colon = matches!(kind, TzKind::HhColonMm | TzKind::HhColonMmColonSs);
                match kind {
                    TzKind::Hh => {}
                    _ => {
                        if colon {
                            out.push(':');
                        }
                        pad(out, i64::from(z / 60 % 60), 2);
                    }
                }
                if matches!(kind, TzKind::HhMmSs | TzKind::HhColonMmColonSs) {
                    if colon {
                        out.push(':');
                    }
                    pad(out, i64::from(z % 60), 2);
                }
            }
            Std::Frac { sep, digits, trim } => {
                let s = format!("{:09}", self.nsec);
                let mut s = &s[..digits.min(9)];
                if trim {
                    s = s.trim_end_matches('0');
                    if s.is_empty() {
                        return;
                    }
                }
                out.push(sep);
                out.push_str(s);
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum TzKind {
    Hh,
    HhMm,
    HhMmSs,
    HhColonMm,
    HhColonMmColonSs,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    PM,
    Pm,
    Tz,
    /// `Z07:00` and friends: `Z` for UTC.
    Iso(TzKind),
    /// `-07:00` and friends.
    Num(TzKind),
    Frac {
        sep: char,
        digits: usize,
        trim: bool,
    },
}

enum Chunk<'a> {
    Lit(&'a str),
    Std(Std),
}

/// Splits a Go layout into literal text and the standard elements, the way
/// Go's `nextStdChunk` recognises them.
fn chunks(layout: &str) -> Vec<Chunk<'_>> {
    let b = layout.as_bytes();
    let mut out = Vec::new();
    let mut lit = 0;
    let mut i = 0;
    let starts = |i: usize, s: &str| b[i..].starts_with(s.as_bytes());
    while i < b.len() {
        let found: Option<(Std, usize)> = match b[i] {
            b'J' if starts(i, "January") => Some((Std::LongMonth, 7)),
            b'J' if starts(i, "Jan") => Some((Std::Month, 3)),
            b'M' if starts(i, "Monday") => Some((Std::LongWeekDay, 6)),
            b'M' if starts(i, "Mon") => Some((Std::WeekDay, 3)),
            b'M' if starts(i, "MST") => Some((Std::Tz, 3)),
            b'0' if i + 1 < b.len() && (b'1'..=b'6').contains(&b[i + 1]) => Some((
                [
                    Std::ZeroMonth,
                    Std::ZeroDay,
                    Std::ZeroHour12,
                    Std::ZeroMinute,
                    Std::ZeroSecond,
                    Std::Year,
                ][(b[i + 1] - b'1') as usize],
                2,
            )),
            b'0' if starts(i, "002") => Some((Std::ZeroYearDay, 3)),
            b'1' if starts(i, "15") => Some((Std::Hour, 2)),
            b'1' => Some((Std::NumMonth, 1)),
            b'2' if starts(i, "2006") => Some((Std::LongYear, 4)),
            b'2' => Some((Std::Day, 1)),
            b'_' if starts(i, "_2006") => {
                // A literal `_` followed by the year.
                i += 1;
                Some((Std::LongYear, 4))
            }
            b'_' if starts(i, "__2") => Some((Std::UnderYearDay, 3)),
            b'_' if starts(i, "_2") => Some((Std::UnderDay, 2)),
            b'3' => Some((Std::Hour12, 1)),
            b'4' => Some((Std::Minute, 1)),
            b'5' => Some((Std::Second, 1)),
            b'P' if starts(i, "PM") => Some((Std::PM, 2)),
            b'p' if starts(i, "pm") => Some((Std::Pm, 2)),
            b'-' | b'Z' => {
                let z = b[i] == b'Z';
                let k = [
                    ("070000", TzKind::HhMmSs),
                    ("07:00:00", TzKind::HhColonMmColonSs),
                    ("0700", TzKind::HhMm),
                    ("07:00", TzKind::HhColonMm),
                    ("07", TzKind::Hh),
                ]
                .into_iter()
                .find(|(p, _)| starts(i + 1, p));
                k.map(|(p, kind)| (if z { Std::Iso(kind) } else { Std::Num(kind) }, p.len() + 1))
            }
            c @ (b'.' | b',') if i + 1 < b.len() && (b[i + 1] == b'0' || b[i + 1] == b'9') => {
                let ch = b[i + 1];
                let mut j = i + 1;
                while j < b.len() && b[j] == ch {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    None
                } else {
                    Some((
                        Std::Frac {
                            sep: c as char,
                            digits: j - i - 1,
                            trim: ch == b'9',
                        },
                        j - i,
                    ))
                }
            }
            _ => None,
        };
        match found {
            Some((std, len)) => {
                // `_2006`: the `_` before it stays literal.
                if lit < i {
                    out.push(Chunk::Lit(&layout[lit..i]));
                }
                out.push(Chunk::Std(std));
                i += len;
                lit = i;
            }
            None => {
                i += 1;
                // Keep `i` on a char boundary for the literal slices.
                while i < b.len() && !layout.is_char_boundary(i) {
                    i += 1;
                }
            }
        }
    }
    if lit < b.len() {
        out.push(Chunk::Lit(&layout[lit..]));
    }
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Go's `time.Parse` error text.
fn parse_err(layout: &str, value: &str, elem: &str, rest: &str, msg: &str) -> String {
    let q = crate::gofmt::go_quote;
    if msg.is_empty() {
        format!(
            "parsing time {} as {}: cannot parse {} as {}",
            q(value),
            q(layout),
            q(rest),
            q(elem)
        )
    } else {
        format!("parsing time {}{msg}", q(value))
    }
}

/// Leading decimal number of at most `max` digits (at least `min`).
fn getnum(s: &str, min: usize, max: usize) -> Option<(i64, &str)> {
    let n = s.bytes().take(max).take_while(u8::is_ascii_digit).count();
    if n < min {
        return None;
    }
    Some((s[..n].parse().ok()?, &s[n..]))
}

fn lookup_name<'a>(names: &[&str], s: &'a str, short: bool) -> Option<(usize, &'a str)> {
    for (i, n) in names.iter().enumerate() {
        let n = if short { &n[..3] } else { n };
        if s.len() >= n.len() && s[..n.len()].eq_ignore_ascii_case(n) {
            return Some((i, &s[n.len()..]));
        }
    }
    None
}

fn parse(layout: &str, value: &str, loc: Loc) -> Result<Time, String> {
    let (mut year, mut month, mut day, mut hour, mut min, mut sec, mut nsec) =
        (1i64, 1u32, 1u32, 0u32, 0u32, 0u32, 0u32);
    let mut yday: Option<u32> = None;
    let mut pm: Option<bool> = None;
    let mut zone_off: Option<i32> = None;
    let mut zone_name: Option<String> = None;
    let mut rest = value;
    let elem_text = |std: Std| -> String {
        // The layout text of an element, for error messages.
        let mut c = Civil {
            year: 2006,
            month: 1,
            day: 2,
            hour: 15,
            min: 4,
            sec: 5,
            nsec: 0,
            weekday: 1,
            yday: 2,
            off: -7 * 3600,
            abbr: "MST".into(),
        };
        let mut s = String::new();
        if let Std::Frac { sep, digits, trim } = std {
            s.push(sep);
            s.push_str(&(if trim { "9" } else { "0" }).repeat(digits));
            return s;
        }
        if let Std::Iso(_) = std {
            c.off = 1;
        }
        c.write(std, &mut s);
        match std {
            Std::Iso(k) => {
                let t = match k {
                    TzKind::Hh => "Z07",
                    TzKind::HhMm => "Z0700",
                    TzKind::HhMmSs => "Z070000",
                    TzKind::HhColonMm => "Z07:00",
                    TzKind::HhColonMmColonSs => "Z07:00:00",
                };
                t.to_string()
            }
            Std::Hour12 => "3".into(),
            Std::ZeroHour12 => "03".into(),
            _ => s,
        }
    };
    let all = chunks(layout);
    for (ci, chunk) in all.iter().enumerate() {
        let next_is_frac = matches!(all.get(ci + 1), Some(Chunk::Std(Std::Frac { .. })));
        match *chunk {
            Chunk::Lit(l) => {
                // Go skips spaces loosely only in a few cases; match exactly.
                match rest.strip_prefix(l) {
                    Some(r) => rest = r,
                    None => return Err(parse_err(layout, value, l, rest, "")),
                }
            }
            Chunk::Std(std) => {
                let before = rest;
                let bad = || parse_err(layout, value, &elem_text(std), before, "");
                let range_err = |what: &str| {
                    format!(
                        "parsing time {}: {what} out of range",
                        crate::gofmt::go_quote(value)
                    )
                };
                match std {
                    Std::LongYear => {
                        if rest.len() < 4 || !rest.as_bytes()[..4].iter().all(u8::is_ascii_digit) {
                            return Err(bad());
                        }
                        year = rest[..4].parse().map_err(|_| bad())?;
                        rest = &rest[4..];
                    }
                    Std::Year => {
                        let (n, r) = getnum(rest, 2, 2).ok_or_else(bad)?;
                        year = if n >= 69 { 1900 + n } else { 2000 + n };
                        rest = r;
                    }
                    Std::LongMonth | Std::Month => {
                        let (i, r) =
                            lookup_name(&MONTHS, rest, std == Std::Month).ok_or_else(bad)?;
                        month = i as u32 + 1;
                        rest = r;
                    }
                    Std::NumMonth | Std::ZeroMonth => {
                        let (n, r) = getnum(rest, if std == Std::ZeroMonth { 2 } else { 1 }, 2)
                            .ok_or_else(bad)?;
                        if !(1..=12).contains(&n) {
                            return Err(range_err("month"));
                        }
                        month = n as u32;
                        rest = r;
                    }
                    Std::LongWeekDay | Std::WeekDay => {
                        let (_, r) =
                            lookup_name(&DAYS, rest, std == Std::WeekDay).ok_or_else(bad)?;
                        rest = r;
                    }
                    Std::Day | Std::UnderDay | Std::ZeroDay => {
                        if std == Std::UnderDay && rest.starts_with(' ') {
                            rest = &rest[1..];
                        }
                        let (n, r) = getnum(rest, if std == Std::ZeroDay { 2 } else { 1 }, 2)
                            .ok_or_else(bad)?;
                        day = n as u32;
                        rest = r;
                    }
                    Std::UnderYearDay | Std::ZeroYearDay => {
                        let mut r0 = rest;
                        if std == Std::UnderYearDay {
                            r0 = r0.trim_start_matches(' ');
                        }
                        let (n, r) = getnum(r0, if std == Std::ZeroYearDay { 3 } else { 1 }, 3)
                            .ok_or_else(bad)?;
                        yday = Some(n as u32);
                        rest = r;
                    }
                    Std::Hour => {
                        let (n, r) = getnum(rest, 1, 2).ok_or_else(bad)?;
                        if n > 23 {
                            return Err(range_err("hour"));
                        }
                        hour = n as u32;
                        rest = r;
                    }
                    Std::Hour12 | Std::ZeroHour12 => {
                        let (n, r) = getnum(rest, if std == Std::ZeroHour12 { 2 } else { 1 }, 2)
                            .ok_or_else(bad)?;
                        if n > 12 {
                            return Err(range_err("hour"));
                        }
                        hour = n as u32;
                        rest = r;
                    }
                    Std::Minute | Std::ZeroMinute => {
                        let (n, r) = getnum(rest, if std == Std::ZeroMinute { 2 } else { 1 }, 2)
                            .ok_or_else(bad)?;
                        if n > 59 {
                            return Err(range_err("minute"));
                        }
                        min = n as u32;
                        rest = r;
                    }
                    Std::Second | Std::ZeroSecond => {
                        let (n, r) = getnum(rest, if std == Std::ZeroSecond { 2 } else { 1 }, 2)
                            .ok_or_else(bad)?;
                        if n > 59 {
                            return Err(range_err("second"));
                        }
                        sec = n as u32;
                        rest = r;
                        // Go accepts a fractional second after the seconds
                        // even when the layout has none.
                        let b = rest.as_bytes();
                        if !next_is_frac
                            && b.len() >= 2
                            && (b[0] == b'.' || b[0] == b',')
                            && b[1].is_ascii_digit()
                        {
                            let n = 1 + rest[1..].bytes().take_while(u8::is_ascii_digit).count();
                            nsec = frac_nanos(&rest[1..n]);
                            rest = &rest[n..];
                        }
                    }
                    Std::Frac { digits, trim, .. } => {
                        let b = rest.as_bytes();
                        if b.is_empty() || (b[0] != b'.' && b[0] != b',') {
                            if trim {
                                continue;
                            }
                            return Err(bad());
                        }
                        let n = 1 + rest[1..].bytes().take_while(u8::is_ascii_digit).count();
                        if !trim && n - 1 != digits {
                            return Err(bad());
                        }
                        nsec = frac_nanos(&rest[1..n]);
                        rest = &rest[n..];
                    }
                    Std::PM | Std::Pm => {
                        if rest.len() < 2 {
                            return Err(bad());
                        }
                        match &rest[..2] {
                            "PM" | "pm" if std == Std::PM || rest[..2] == *"pm" => pm = Some(true),
                            "AM" | "am" => pm = Some(false),
                            _ => return Err(bad()),
                        }
                        rest = &rest[2..];
                    }
                    Std::Tz => {
                        if rest.starts_with("UTC") {
                            zone_off = Some(0);
                            zone_name = Some("UTC".into());
                            rest = &rest[3..];
                            continue;
                        }
                        let n = rest.bytes().take_while(u8::is_ascii_uppercase).count();
                        if n < 3 {
                            return Err(bad());
                        }
                        zone_name = Some(rest[..n].to_string());
                        rest = &rest[n..];
                    }
                    Std::Iso(kind) | Std::Num(kind) => {
                        if matches!(std, Std::Iso(_)) && rest.starts_with('Z') {
                            zone_off = Some(0);
                            zone_name = Some("UTC".into());
                            rest = &rest[1..];
                            continue;
                        }
                        let sign = match rest.as_bytes().first() {
                            Some(b'+') => 1,
                            Some(b'-') => -1,
                            _ => return Err(bad()),
                        };
                        let mut r = &rest[1..];
                        let colon = matches!(kind, TzKind::HhColonMm | TzKind::HhColonMmColonSs);
                        let (hh, r2) = getnum(r, 2, 2).ok_or_else(bad)?;
                        r = r2;
                        let mut off = hh * 3600;
                        if kind != TzKind::Hh {
                            if colon {
                                r = r.strip_prefix(':').ok_or_else(bad)?;
                            }
                            let (mm, r2) = getnum(r, 2, 2).ok_or_else(bad)?;
                            off += mm * 60;
                            r = r2;
                        }
                        if matches!(kind, TzKind::HhMmSs | TzKind::HhColonMmColonSs) {
                            if colon {
                                r = r.strip_prefix(':').ok_or_else(bad)?;
                            }
                            let (ss, r2) = getnum(r, 2, 2).ok_or_else(bad)?;
                            off += ss;
                            r = r2;
                        }
                        zone_off = Some((sign * off) as i32);
                        rest = r;
                    }
                }
            }
        }
    }
    if !rest.is_empty() {
        return Err(format!(
            "parsing time {}: extra text: {}",
            crate::gofmt::go_quote(value),
            crate::gofmt::go_quote(rest)
        ));
    }
    if let Some(p) = pm {
        if p && hour < 12 {
            hour += 12;
        } else if !p && hour == 12 {
            hour = 0;
        }
    }
    if let Some(yd) = yday {
        let leap = days_in_month(year, 2) == 29;
        if yd < 1 || yd > 365 + u32::from(leap) {
            return Err(format!(
                "parsing time {}: day-of-year out of range",
                crate::gofmt::go_quote(value)
            ));
        }
        let (_, m, d) = civil_from_days(days_from_civil(year, 1, 1) + i64::from(yd) - 1);
        month = m;
        day = d;
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!(
            "parsing time {}: day out of range",
            crate::gofmt::go_quote(value)
        ));
    }
    let local = days_from_civil(year, month, day) * 86400
        + i64::from(hour) * 3600
        + i64::from(min) * 60
        + i64::from(sec);
    let t = |secs: i64, loc: Loc| Time {
        secs,
        nsec,
        loc,
        mono: None,
    };
    if let Some(off) = zone_off {
        let secs = local - i64::from(off);
        // An offset matching the location's own is reported in it.
        let (loff, _) = loc.offset_at(secs);
        if off == 0 && zone_name.as_deref() == Some("UTC") {
            return Ok(t(secs, Loc::Utc));
        }
        if loff == off {
            return Ok(t(secs, loc));
        }
        return Ok(t(secs, Loc::Fixed(zone_name.unwrap_or_default(), off)));
    }
    if let Some(name) = zone_name {
        // A zone abbreviation: known in the location, or a zero offset.
        let (off, abbr) = loc.offset_at(local);
        if abbr == name {
            return Ok(t(local - i64::from(off), loc));
        }
        return Ok(t(local, Loc::Fixed(name, 0)));
    }
    // A wall-clock time in `loc`: use the offset in force then.
    let (off, _) = loc.offset_at(local);
    let (off2, _) = loc.offset_at(local - i64::from(off));
    Ok(t(local - i64::from(off2), loc))
}

fn frac_nanos(digits: &str) -> u32 {
    let mut s: String = digits.chars().take(9).collect();
    while s.len() < 9 {
        s.push('0');
    }
    s.parse().unwrap_or(0)
}

// ---- durations ------------------------------------------------------------

/// Go's `Duration.String()` for a nanosecond count.
pub(crate) fn duration_string(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let neg = d < 0;
    let u = d.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        // Sub-second: one unit with a fraction.
        let (unit, scale) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        out.push_str(&frac_units(u, scale));
        out.push_str(unit);
    } else {
        let secs = u / 1_000_000_000;
        let frac = u % 1_000_000_000;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&frac_units(s * 1_000_000_000 + frac, 1_000_000_000));
        out.push('s');
    }
    if neg {
        out.insert(0, '-');
    }
    out
}

/// `v / scale` with the remainder as a trimmed decimal fraction.
fn frac_units(v: u64, scale: u64) -> String {
    let whole = v / scale;
    let rem = v % scale;
    if rem == 0 {
        return whole.to_string();
    }
    let width = scale.to_string().len() - 1;
    let f = format!("{rem:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Go's `time.ParseDuration`: nanoseconds.
pub(crate) fn parse_duration(s: &str) -> Result<i64, String> {
    let err = || format!("time: invalid duration {}", crate::gofmt::go_quote(s));
    let mut rest = s;
    let neg = match rest.as_bytes().first() {
        Some(b'-') => {
            rest = &rest[1..];
            true
        }
        Some(b'+') => {
            rest = &rest[1..];
            false
        }
        _ => false,
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let ip = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int: u128 = if ip > 0 {
            rest[..ip].parse().map_err(|_| err())?
        } else {
            0
        };
        rest = &rest[ip..];
        let mut frac = "";
        if let Some(r) = rest.strip_prefix('.') {
            let fp = r.bytes().take_while(u8::is_ascii_digit).count();
            frac = &r[..fp];
            rest = &r[fp..];
            if ip == 0 && fp == 0 {
                return Err(err());
            }
        } else if ip == 0 {
            return Err(err());
        }
        let ul = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u128 = match &rest[..ul] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "time: missing unit in duration {}",
                    crate::gofmt::go_quote(s)
                ))
            }
            u => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    crate::gofmt::go_quote(u),
                    crate::gofmt::go_quote(s)
                ))
            }
        };
        rest = &rest[ul..];
        let mut v = int.checked_mul(unit).ok_or_else(err)?;
        if !frac.is_empty() {
            let mut scale: u128 = 1;
            let mut f: u128 = 0;
            for c in frac.bytes().take(30) {
                f = f * 10 + u128::from(c - b'0');
                scale *= 10;
            }
            v += f * unit / scale;
        }
        total = total.checked_add(v).ok_or_else(err)?;
        if total > i64::MAX as u128 + u128::from(neg) {
            return Err(err());
        }
    }
    Ok(if neg {
        (total as i128).wrapping_neg() as i64
    } else {
        total as i64
    })
}

// ---- the template object ----------------------------------------------------

impl Object for Time {
    fn type_name(&self) -> &str {
        "time.Time"
    }
    fn kind_name(&self) -> &'static str {
        "struct"
    }
    fn field(&self, name: &str) -> Option<Value> {
        let c = || self.civil();
        Some(match name {
            "Year" => Value::Int(c().year),
            "Month" => Value::str(MONTHS[c().month as usize - 1]),
            "Day" => Value::Int(c().day.into()),
            "Hour" => Value::Int(c().hour.into()),
            "Minute" => Value::Int(c().min.into()),
            "Second" => Value::Int(c().sec.into()),
            "Nanosecond" => Value::Int(self.nsec.into()),
            "YearDay" => Value::Int(c().yday.into()),
            "Weekday" => Value::str(DAYS[c().weekday as usize]),
            "Unix" => Value::Int64(self.secs),
            "UnixMilli" => Value::Int64((self.unix_nano() / 1_000_000) as i64),
            "UnixMicro" => Value::Int64((self.unix_nano() / 1_000) as i64),
            "UnixNano" => Value::Int64(self.unix_nano() as i64),
            "IsZero" => Value::Bool(self.is_zero()),
            "UTC" => Value::Object(Rc::new(self.in_loc(Loc::Utc))),
            "Local" => Value::Object(Rc::new(self.in_loc(Loc::Local))),
            "String" => Value::string(self.go_string()),
            _ => return None,
        })
    }
    fn has_method(&self, name: &str) -> bool {
        matches!(name, "Format" | "Add" | "AddDate" | "In")
    }
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let want = |n: usize| -> Result<(), String> {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "wrong number of args for {name}: want {n} got {}",
                    args.len()
                ))
            }
        };
        Some((|| match name {
            "Format" => {
                want(1)?;
                match &args[0] {
                    Value::String(s) => Ok(Value::string(self.format(s))),
                    v => Err(format!(
                        "wrong type for value; expected string; got {}",
                        v.type_name()
                    )),
                }
            }
            "Add" => {
                want(1)?;
                match &args[0] {
                    Value::Int(d) | Value::Int64(d) => Ok(Value::Object(Rc::new(self.add(*d)))),
                    v => Err(format!(
                        "wrong type for value; expected time.Duration; got {}",
                        v.type_name()
                    )),
                }
            }
            "AddDate" => {
                want(3)?;
                let n = |v: &Value| match v {
                    Value::Int(i) => Ok(*i),
                    v => Err(format!(
                        "wrong type for value; expected int; got {}",
                        v.type_name()
                    )),
                };
                let (y, m, d) = (n(&args[0])?, n(&args[1])?, n(&args[2])?);
                let c = self.civil();
                // Go normalises month and day overflow.
                let mut mm = i64::from(c.month) - 1 + m;
                let yy = c.year + y + mm.div_euclid(12);
                mm = mm.rem_euclid(12);
                let days = days_from_civil(yy, mm as u32 + 1, 1) + i64::from(c.day) - 1 + d;
                let local = days * 86400
                    + i64::from(c.hour) * 3600
                    + i64::from(c.min) * 60
                    + i64::from(c.sec);
                let (off, _) = self.loc.offset_at(local - i64::from(c.off));
                Ok(Value::Object(Rc::new(Time {
                    secs: local - i64::from(off),
                    nsec: self.nsec,
                    loc: self.loc.clone(),
                    mono: None,
                })))
            }
            "In" => Err("In needs a *time.Location, which templates cannot make".into()),
            _ => Err(format!("can't evaluate field {name}")),
        })())
    }
    fn display(&self) -> String {
        self.go_string()
    }
    fn to_data(&self) -> Value {
        Value::string(self.rfc3339_nano())
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// The `time.Time` inside a value, if it is one.
pub(crate) fn as_time(v: &Value) -> Option<&Time> {
    match v {
        Value::Object(o) => o.as_any().and_then(|a| a.downcast_ref::<Time>()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(layout: &str, s: &str) -> Time {
        Time::parse(layout, s, Loc::Utc).unwrap()
    }

    #[test]
    fn formats_go_layouts() {
        let t = utc(
            "2006-01-02T15:04:05.999999999Z07:00",
            "2023-05-04T13:07:09.5Z",
        );
        assert_eq!(
            t.format("Mon Jan _2 15:04:05 MST 2006 .000 PM pm -07:00 Z0700 January Monday 06 1 2 3 4 5 002 __2"),
            "Thu May  4 13:07:09 UTC 2023 .500 PM pm +00:00 Z May Thursday 23 5 4 1 7 9 124 124"
        );
        assert_eq!(t.go_string(), "2023-05-04 13:07:09.5 +0000 UTC");
        assert_eq!(Time::zero().go_string(), "0001-01-01 00:00:00 +0000 UTC");
    }

    #[test]
    fn parses_offsets_and_errors() {
        let t = utc("2006-01-02T15:04:05Z07:00", "2023-05-04T10:11:12+02:00");
        assert_eq!(t.go_string(), "2023-05-04 10:11:12 +0200 +0200");
        assert_eq!(t.secs, 1683187872);
        let e = Time::parse("2006-01-02", "bad", Loc::Utc).err().unwrap();
        assert_eq!(
            e,
            r#"parsing time "bad" as "2006-01-02": cannot parse "bad" as "2006""#
        );
    }

    #[test]
    fn durations_like_go() {
        for (s, want) in [
            ("1h30m", "1h30m0s"),
            ("-1.5h", "-1h30m0s"),
            ("300ms", "300ms"),
            ("1.5us", "1.5µs"),
            ("2h45m3.25s", "2h45m3.25s"),
            ("0", "0s"),
        ] {
            assert_eq!(duration_string(parse_duration(s).unwrap()), want, "{s}");
        }
        assert_eq!(
            parse_duration("bad").unwrap_err(),
            r#"time: invalid duration "bad""#
        );
        assert_eq!(
            parse_duration("5x").unwrap_err(),
            r#"time: unknown unit "x" in duration "5x""#
        );
    }
}
