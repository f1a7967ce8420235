//! Sprig's float functions (`addf`, `mulf`, ...) compute with
//! shopspring/decimal from each float's shortest decimal form, so
//! `mulf 1.1 3` is 3.3 and not 3.3000000000000003. This reproduces that
//! with an i128 mantissa and a decimal exponent.

use crate::funcs::to_f64;
use crate::value::Value;

#[derive(Clone, Copy)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Clone, Copy)]
struct Dec {
    m: i128,
    e: i32,
}

fn from_f64(f: f64) -> Option<Dec> {
    if !f.is_finite() {
        return None;
    }
    let s = format!("{:e}", f);
    let (mant, exp) = s.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let frac_len = mant.split_once('.').map(|(_, f)| f.len()).unwrap_or(0) as i32;
    let m: i128 = digits.parse().ok()?;
    Some(Dec {
        m: if neg { -m } else { m },
        e: exp - frac_len,
    })
}

fn align(a: Dec, b: Dec) -> Option<(i128, i128, i32)> {
    let e = a.e.min(b.e);
    let sa = a.m.checked_mul(10i128.checked_pow((a.e - e) as u32)?)?;
    let sb = b.m.checked_mul(10i128.checked_pow((b.e - e) as u32)?)?;
    Some((sa, sb, e))
}

fn apply(a: Dec, b: Dec, op: Op) -> Option<Dec> {
    match op {
        Op::Add => align(a, b).and_then(|(x, y, e)| {
            Some(Dec {
                m: x.checked_add(y)?,
                e,
            })
        }),
        Op::Sub => align(a, b).and_then(|(x, y, e)| {
            Some(Dec {
                m: x.checked_sub(y)?,
                e,
            })
        }),
        Op::Mul => Some(Dec {
            m: a.m.checked_mul(b.m)?,
            e: a.e + b.e,
        }),
        Op::Div => {
            if b.m == 0 {
                return None;
            }
            // decimal.Div rounds to 16 fractional digits (DivisionPrecision).
            let scale = 16 + a.e - b.e;
            let num = if scale >= 0 {
                a.m.checked_mul(10i128.checked_pow(scale as u32)?)?
            } else {
                a.m / 10i128.checked_pow((-scale) as u32)?
            };
            let q = num / b.m;
            let r = num % b.m;
            let away = if (num < 0) != (b.m < 0) { -1 } else { 1 };
            let q = if r.abs() * 2 >= b.m.abs() {
                q + away
            } else {
                q
            };
            Some(Dec { m: q, e: -16 })
        }
    }
}

fn to_f64_dec(d: Dec) -> f64 {
    format!("{}e{}", d.m, d.e).parse().unwrap_or(0.0)
}

fn float_op(x: f64, y: f64, op: Op) -> f64 {
    match op {
        Op::Add => x + y,
        Op::Sub => x - y,
        Op::Mul => x * y,
        Op::Div => x / y,
    }
}

/// Folds `args` into `start` with `op`, decimal-exact where it fits.
pub fn fold(start: f64, args: &[Value], op: Op) -> f64 {
    let mut acc = from_f64(start);
    let mut facc = start;
    for a in args {
        let f = to_f64(a);
        facc = float_op(facc, f, op);
        acc = match (acc, from_f64(f)) {
            (Some(x), Some(y)) => apply(x, y, op),
            _ => None,
        };
    }
    match acc {
        Some(d) => to_f64_dec(d),
        None => facc,
    }
}
