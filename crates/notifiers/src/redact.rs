//! Scrubbing secrets out of messages: webhook URLs carry their credentials in the path, and
//! HTTP client errors like to quote the URL.

/// Replaces every known secret in a message with `*****`.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn add(&mut self, secret: &str) {
        // Very short strings would redact ordinary words and protect nothing.
        if secret.len() >= 4 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
            // Longest first, so that a URL is replaced whole before a token inside it.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn redact(&self, msg: &str) -> String {
        let mut out = msg.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "*****");
            }
        }
        out
    }
}
