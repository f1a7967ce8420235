//! Go's `fmt` package as templates see it: `print`, `println`, `printf` and
//! the `%v` rendering of values (`map[a:1]`, `[1 2]`, `<nil>`, `1e+06`).

use crate::value::Value;
use std::fmt::Write;

/// `fmt.Sprint`: operands are joined with a space when neither side is a string.
pub fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Value::String(_)) && !matches!(args[i - 1], Value::String(_)) {
            out.push(' ');
        }
        write_value(&mut out, a, 'v', false);
    }
    out
}

/// `fmt.Sprintln`: operands always separated by spaces, newline appended.
pub fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_value(&mut out, a, 'v', false);
    }
    out.push('\n');
    out
}

/// `%v` of one value.
pub fn sprint_value(v: &Value) -> String {
    let mut s = String::new();
    write_value(&mut s, v, 'v', false);
    s
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`, which `%v` uses.
pub fn format_float_g_shortest(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let (neg, digits, exp) = shortest_digits(f);
    // Go: %e when exp < -4 || exp >= 6 (the shortest form uses precision 6
    // for this decision); otherwise %f with just the needed digits.
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        push_exp(&mut out, exp);
    } else {
        out.push_str(&fixed_from_digits(&digits, exp));
    }
    out
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub fn format_float_f_shortest(f: f64) -> String {
    if !f.is_finite() {
        return format_float_g_shortest(f);
    }
    if f == 0.0 {
        return "0".into();
    }
    let (neg, digits, exp) = shortest_digits(f);
    let s = fixed_from_digits(&digits, exp);
    if neg {
        format!("-{s}")
    } else {
        s
    }
}

/// Go's `strconv.FormatFloat(f, 'e', -1, 64)`.
pub fn format_float_e_shortest(f: f64) -> String {
    if !f.is_finite() || f == 0.0 {
        return if f == 0.0 {
            "0e+00".into()
        } else {
            format_float_g_shortest(f)
        };
    }
    let (neg, digits, exp) = shortest_digits(f);
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    push_exp(&mut out, exp);
    out
}

/// Shortest round-tripping decimal digits and the decimal exponent of the
/// first digit (Rust's `{:e}` produces the same shortest digits as Go).
fn shortest_digits(f: f64) -> (bool, String, i32) {
    let s = format!("{:e}", f.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    (f < 0.0, digits, exp.parse().unwrap_or(0))
}

fn fixed_from_digits(digits: &str, exp: i32) -> String {
    let nd = digits.len() as i32;
    if exp < 0 {
        format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
    } else if exp + 1 >= nd {
        format!("{}{}", digits, "0".repeat((exp + 1 - nd) as usize))
    } else {
        let (a, b) = digits.split_at((exp + 1) as usize);
        format!("{a}.{b}")
    }
}

fn push_exp(out: &mut String, exp: i32) {
    out.push('e');
    out.push(if exp < 0 { '-' } else { '+' });
    let e = exp.abs();
    if e < 10 {
        out.push('0');
    }
    let _ = write!(out, "{e}");
}

/// Go's `%e` with a precision.
fn format_e_prec(f: f64, prec: usize, upper: bool) -> String {
    let s = format!("{:.*e}", prec, f);
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let mut out = mant.to_string();
    push_exp(&mut out, exp.parse().unwrap_or(0));
    if upper {
        out = out.to_uppercase();
    }
    out
}

/// Go's `%g` with a precision.
fn format_g_prec(f: f64, prec: usize) -> String {
    let prec = prec.max(1);
    let s = format!("{:.*e}", prec - 1, f);
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |m: &str| -> String {
        if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            m.to_string()
        }
    };
    if exp < -4 || exp >= prec as i32 {
        let mut out = trim(mant);
        push_exp(&mut out, exp);
        out
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{:.*}", decimals, f))
    }
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_quoted_char(&mut out, c, '"', false);
    }
    out.push('"');
    out
}

fn push_quoted_char(out: &mut String, c: char, quote: char, ascii_only: bool) {
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x80 => out.push(c),
        c if ascii_only || !is_printable(c) => {
            if (c as u32) < 0x10000 {
                let _ = write!(out, "\\u{:04x}", c as u32);
            } else {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
        c => out.push(c),
    }
}

fn is_printable(c: char) -> bool {
    // Approximation of Go's unicode.IsPrint for the ranges charts meet.
    !c.is_control()
        && !matches!(c as u32, 0x80..=0x9f | 0xad | 0x2028 | 0x2029 | 0xfeff)
        && (!c.is_whitespace() || c == ' ')
}

#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// `fmt.Sprintf` with Go's verbs and its error notation (`%!d(string=x)`,
/// `%!d(MISSING)`, `%!(EXTRA int=2)`).
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::with_capacity(format.len() + 16);
    let mut argi = 0usize;
    let mut reordered = false;
    let bytes = format.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i] != b'%' {
            i += 1;
        }
        out.push_str(&format[start..i]);
        if i >= bytes.len() {
            break;
        }
        i += 1; // skip %
        let mut spec = Spec::default();
        while i < bytes.len() {
            match bytes[i] {
                b'-' => {
                    spec.minus = true;
                    spec.zero = false;
                }
                b'+' => spec.plus = true,
                b'#' => spec.sharp = true,
                b' ' => spec.space = true,
                b'0' => spec.zero = !spec.minus,
                _ => break,
            }
            i += 1;
        }
        // Explicit argument index `%[n]d`.
        let parse_index = |i: &mut usize, argi: &mut usize, reordered: &mut bool| {
            if *i < bytes.len() && bytes[*i] == b'[' {
                if let Some(end) = format[*i..].find(']') {
                    if let Ok(n) = format[*i + 1..*i + end].parse::<usize>() {
                        if n >= 1 {
                            *argi = n - 1;
                            *reordered = true;
                        }
                    }
                    *i += end + 1;
                }
            }
        };
        parse_index(&mut i, &mut argi, &mut reordered);
        if i < bytes.len() && bytes[i] == b'*' {
            i += 1;
            if let Some(v) = args.get(argi) {
                if let Value::Int(n) | Value::Int64(n) = v {
                    if *n < 0 {
                        spec.minus = true;
                        spec.width = Some(n.unsigned_abs() as usize);
                    } else {
                        spec.width = Some(*n as usize);
                    }
                } else {
                    out.push_str("%!(BADWIDTH)");
                }
                argi += 1;
            } else {
                out.push_str("%!(BADWIDTH)");
            }
        } else {
            let s = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i > s {
                spec.width = format[s..i].parse().ok();
            }
        }
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            parse_index(&mut i, &mut argi, &mut reordered);
            if i < bytes.len() && bytes[i] == b'*' {
                i += 1;
                if let Some(Value::Int(n)) = args.get(argi) {
                    spec.prec = Some((*n).max(0) as usize);
                } else {
                    out.push_str("%!(BADPREC)");
                }
                argi += 1;
            } else {
                let s = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                spec.prec = Some(format[s..i].parse().unwrap_or(0));
            }
        }
        parse_index(&mut i, &mut argi, &mut reordered);
        let Some(verb) = format[i..].chars().next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += verb.len_utf8();
        if verb == 'v' {
            // %+v and %#v are flags of %v, not sign/alternate flags.
            if spec.sharp {
                if let Some(arg) = args.get(argi) {
                    argi += 1;
                    pad(
                        &mut out,
                        &go_syntax(arg),
                        &Spec {
                            sharp: false,
                            ..spec
                        },
                        false,
                    );
                    continue;
                }
            }
            spec.plus = false;
        }
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        format_one(&mut out, arg, verb, &spec);
    }
    if !reordered && argi < args.len() {
        out.push_str("%!(EXTRA ");
        for (k, a) in args[argi..].iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            if a.is_nil() {
                out.push_str("<nil>");
            } else {
                let _ = write!(out, "{}={}", a.type_name(), sprint_value(a));
            }
        }
        out.push(')');
    }
    out
}

fn pad(out: &mut String, s: &str, spec: &Spec, numeric: bool) {
    let len = s.chars().count();
    let width = spec.width.unwrap_or(0);
    if len >= width {
        out.push_str(s);
        return;
    }
    let fill = width - len;
    if spec.minus {
        out.push_str(s);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if spec.zero && numeric {
        // Zero padding goes after the sign.
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'-') | Some(b'+') | Some(b' ') => s.split_at(1),
            _ => ("", s),
        };
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(rest);
    } else if spec.zero {
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(s);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(s);
    }
}

fn bad_verb(out: &mut String, v: &Value, verb: char) {
    if v.is_nil() {
        let _ = write!(out, "%!{verb}(<nil>)");
    } else {
        let _ = write!(out, "%!{verb}({}={})", v.type_name(), sprint_value(v));
    }
}

fn format_int(out: &mut String, n: i64, verb: char, spec: &Spec) {
    let neg = n < 0;
    let u = n.unsigned_abs();
    let mut body = match verb {
        'd' | 'v' => u.to_string(),
        'x' => format!("{u:x}"),
        'X' => format!("{u:X}"),
        'o' => format!("{u:o}"),
        'O' => format!("0o{u:o}"),
        'b' => format!("{u:b}"),
        'c' => {
            let c = char::from_u32(n as u32).unwrap_or('\u{fffd}');
            pad(out, &c.to_string(), spec, false);
            return;
        }
        'q' => {
            let c = char::from_u32(n as u32).unwrap_or('\u{fffd}');
            let mut q = String::from("'");
            push_quoted_char(&mut q, c, '\'', spec.plus);
            q.push('\'');
            pad(out, &q, spec, false);
            return;
        }
        'U' => {
            let s = format!("U+{u:04X}");
            pad(out, &s, spec, false);
            return;
        }
        _ => unreachable!(),
    };
    if let Some(p) = spec.prec {
        while body.len() < p {
            body.insert(0, '0');
        }
        if p == 0 && n == 0 {
            body.clear();
        }
    }
    if spec.sharp {
        match verb {
            'x' => body.insert_str(0, "0x"),
            'X' => body.insert_str(0, "0X"),
            'o' if !body.starts_with('0') => body.insert(0, '0'),
            _ => {}
        }
    }
    let sign = if neg {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    };
    let s = format!("{sign}{body}");
    let mut sp = *spec;
    if spec.prec.is_some() {
        sp.zero = false;
    }
    pad(out, &s, &sp, true);
}

fn format_float(out: &mut String, f: f64, verb: char, spec: &Spec) {
    let mut s = match (verb, spec.prec) {
        ('v', _) | ('g', None) => format_float_g_shortest(f),
        ('G', None) => format_float_g_shortest(f).to_uppercase(),
        ('g', Some(p)) => format_g_prec(f, p),
        ('G', Some(p)) => format_g_prec(f, p).to_uppercase(),
        ('f' | 'F', p) => {
            if f.is_finite() {
                format!("{:.*}", p.unwrap_or(6), f)
            } else {
                format_float_g_shortest(f)
            }
        }
        ('e', p) => format_e_prec(f, p.unwrap_or(6), false),
        ('E', p) => format_e_prec(f, p.unwrap_or(6), true),
        _ => unreachable!(),
    };
    if spec.plus && !s.starts_with('-') && !s.starts_with('+') {
        s.insert(0, '+');
    } else if spec.space && !s.starts_with('-') {
        s.insert(0, ' ');
    }
    pad(out, &s, spec, f.is_finite());
}

fn format_str(out: &mut String, s: &str, verb: char, spec: &Spec) {
    match verb {
        's' | 'v' => {
            let s = match spec.prec {
                Some(p) => s.chars().take(p).collect::<String>(),
                None => s.to_string(),
            };
            pad(out, &s, spec, false);
        }
        'q' => {
            let q = if spec.sharp && !s.contains('`') {
                format!("`{s}`")
            } else if spec.plus {
                let mut o = String::from("\"");
                for c in s.chars() {
                    push_quoted_char(&mut o, c, '"', true);
                }
                o.push('"');
                o
            } else {
                go_quote(s)
            };
            pad(out, &q, spec, false);
        }
        'x' | 'X' => {
            let mut h = String::new();
            for (i, b) in s.bytes().enumerate() {
                if spec.space && i > 0 {
                    h.push(' ');
                }
                if verb == 'x' {
                    let _ = write!(h, "{b:02x}");
                } else {
                    let _ = write!(h, "{b:02X}");
                }
            }
            pad(out, &h, spec, false);
        }
        _ => unreachable!(),
    }
}

/// Formats one operand under `verb` (recursing into lists and maps as Go does).
fn format_one(out: &mut String, v: &Value, verb: char, spec: &Spec) {
    if verb == 'T' {
        pad(out, &v.type_name(), spec, false);
        return;
    }
    match v {
        Value::Nil => match verb {
            'v' => pad(out, "<nil>", spec, false),
            _ => bad_verb(out, v, verb),
        },
        Value::Bool(b) => match verb {
            'v' | 't' => pad(out, if *b { "true" } else { "false" }, spec, false),
            _ => bad_verb(out, v, verb),
        },
        Value::Int(n) | Value::Int64(n) => match verb {
            'v' | 'd' | 'x' | 'X' | 'o' | 'O' | 'b' | 'c' | 'q' | 'U' => {
                format_int(out, *n, verb, spec)
            }
            'e' | 'E' | 'f' | 'F' | 'g' | 'G' => bad_verb(out, v, verb),
            _ => bad_verb(out, v, verb),
        },
        Value::Float(f) => match verb {
            'v' | 'e' | 'E' | 'f' | 'F' | 'g' | 'G' => format_float(out, *f, verb, spec),
            _ => bad_verb(out, v, verb),
        },
        Value::String(s) => match verb {
            'v' | 's' | 'q' | 'x' | 'X' => format_str(out, s, verb, spec),
            _ => bad_verb(out, v, verb),
        },
        Value::List(l) => {
            if verb == 'v' && spec.sharp {
                pad(out, &go_syntax(v), spec, false);
                return;
            }
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                format_one(out, e, verb, spec);
            }
            out.push(']');
        }
        Value::Map(m) => {
            if verb == 'v' && spec.sharp {
                pad(out, &go_syntax(v), spec, false);
                return;
            }
            out.push_str("map[");
            for (i, (k, e)) in m.borrow().iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                format_str(out, k, if verb == 'v' { 'v' } else { verb }, spec);
                out.push(':');
                format_one(out, e, verb, spec);
            }
            out.push(']');
        }
        Value::Object(o) => pad(out, &o.display(), spec, false),
    }
}

/// `%#v`: Go-syntax representation.
fn go_syntax(v: &Value) -> String {
    match v {
        Value::Nil => "<nil>".into(),
        Value::String(s) => go_quote(s),
        Value::List(l) => format!(
            "[]interface {{}}{{{}}}",
            l.iter().map(go_syntax).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(m) => format!(
            "map[string]interface {{}}{{{}}}",
            m.borrow()
                .iter()
                .map(|(k, e)| format!("{}:{}", go_quote(k), go_syntax(e)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Float(f) => format_float_g_shortest(*f),
        other => sprint_value(other),
    }
}

/// `%v` into a buffer (used by `print` and by template output).
pub fn write_value(out: &mut String, v: &Value, verb: char, _plus: bool) {
    match v {
        Value::String(s) => out.push_str(s),
        Value::Int(n) | Value::Int64(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Float(f) => out.push_str(&format_float_g_shortest(*f)),
        _ => format_one(out, v, verb, &Spec::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(format_float_g_shortest(1e6), "1e+06");
        assert_eq!(format_float_g_shortest(1234567.0), "1.234567e+06");
        assert_eq!(format_float_g_shortest(100000.0), "100000");
        assert_eq!(format_float_g_shortest(0.00001), "1e-05");
        assert_eq!(format_float_g_shortest(0.0001), "0.0001");
        assert_eq!(format_float_g_shortest(3.0), "3");
        assert_eq!(format_float_g_shortest(1.5), "1.5");
        assert_eq!(format_float_g_shortest(-2.25), "-2.25");
    }

    #[test]
    fn printf_verbs_match_go() {
        let args = vec![
            Value::Float(1.5),
            Value::Float(3.25159),
            Value::Float(2.25),
            Value::str("ab"),
            Value::str("cd"),
            Value::str("q\""),
            Value::Int(255),
            Value::str("hi"),
            Value::Int(8),
            Value::Bool(true),
            Value::Int(1),
            Value::Float(1.0),
            Value::str("s"),
            Value::Float(12345.678),
            Value::Float(0.000012345),
            Value::Int(5),
            Value::Int(-42),
        ];
        assert_eq!(
            sprintf("%v %.2f %5.1f|%-6s|%6s|%q %x %X %o %t %T %T %T %e %g %+d %05d", &args),
            "1.5 3.25   2.2|ab    |    cd|\"q\\\"\" ff 6869 10 true int float64 string 1.234568e+04 1.2345e-05 +5 -0042"
        );
    }

    #[test]
    fn printf_errors_match_go() {
        assert_eq!(
            sprintf("%d %s", &[Value::str("a"), Value::Int(1)]),
            "%!d(string=a) %!s(int=1)"
        );
        assert_eq!(sprintf("%d", &[]), "%!d(MISSING)");
        assert_eq!(
            sprintf("%s", &[Value::Int(1), Value::Int(2)]),
            "%!s(int=1)%!(EXTRA int=2)"
        );
    }

    #[test]
    fn composite_values() {
        let m = Value::map(
            [
                ("b".to_string(), Value::Float(2.0)),
                ("a".to_string(), Value::Int(1)),
            ]
            .into_iter()
            .collect(),
        );
        assert_eq!(sprint_value(&m), "map[a:1 b:2]");
        assert_eq!(
            sprint_value(&Value::list(vec![
                Value::Int(1),
                Value::str("a"),
                Value::Nil
            ])),
            "[1 a <nil>]"
        );
        assert_eq!(
            sprint(&[Value::Int(1), Value::Int(2), Value::str("x"), Value::Int(3)]),
            "1 2x3"
        );
    }
}
