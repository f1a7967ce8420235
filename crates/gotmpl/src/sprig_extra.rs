//! The less used Sprig functions (dates, crypto helpers, paths, URLs).

use crate::funcs::PlainFn;

/// The extra functions, registered after the core table.
pub(crate) fn functions() -> Vec<(&'static str, PlainFn)> {
    Vec::new()
}
