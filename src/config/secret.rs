//! Secrets in configuration: a literal, `${ENV_VAR}`, or `file:/path` (first line of the file, trimmed).
//!
//! A [`Secret`] keeps its reference as written and resolves it at load time; its `Debug` and `Display` never show
//! the value, so it cannot leak into logs, the journal or the status output by accident.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer};

/// A value that may be secret, as written in the config (`${TOKEN}`, `file:/run/secrets/x`, or a literal).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    reference: String,
    value: Option<String>,
}

impl Secret {
    /// A secret from a literal or a reference; call [`Secret::resolve`] before use.
    pub fn new(reference: impl Into<String>) -> Self {
        Self { reference: reference.into(), value: None }
    }

    /// Reads the environment variable or file the reference names. `base` resolves relative `file:` paths.
    pub fn resolve(&mut self, base: &Path) -> Result<(), String> {
        let r = self.reference.trim();
        let v = if let Some(name) = r.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
            std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?
        } else if let Some(p) = r.strip_prefix("file:") {
            let path = base.join(p);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))?;
            text.lines().next().unwrap_or("").trim().to_string()
        } else {
            self.reference.clone()
        };
        self.value = Some(v);
        Ok(())
    }

    /// The resolved value (the literal itself when the secret was never resolved).
    pub fn expose(&self) -> &str {
        self.value.as_deref().unwrap_or(&self.reference)
    }

    /// True when the value came from the environment or a file (rather than a literal in the config).
    pub fn is_reference(&self) -> bool {
        let r = self.reference.trim();
        (r.starts_with("${") && r.ends_with('}')) || r.starts_with("file:")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret::new(String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_and_literal() {
        // A variable every test process has (no `set_var`: it is unsound while other test threads run).
        let path = std::env::var("PATH").expect("PATH is set");
        let mut s = Secret::new("${PATH}");
        s.resolve(Path::new(".")).unwrap();
        assert_eq!(s.expose(), path);
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let mut f = Secret::new("file:pw");
        f.resolve(dir.path()).unwrap();
        assert_eq!(f.expose(), "hunter2");

        let mut missing = Secret::new("${WARDEN_TEST_SECRET_MISSING}");
        assert!(missing.resolve(Path::new(".")).unwrap_err().contains("WARDEN_TEST_SECRET_MISSING"));
    }
}
