//! What an upgrade or rescale changes about a job's submission: the overrides applied over its `jobs.<name>.jar`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RestartKind;

/// The jar an upgrade submits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JarRef {
    /// A jar already on the cluster: its file name as `GET /jars` lists it (the newest upload of that name), or
    /// its jar id.
    Name(String),
    /// A local jar file, uploaded once (`POST /jars/upload`) as the restart's `jar-uploaded` step.
    Path(PathBuf),
}

impl JarRef {
    /// Reads a jar as given by a person or a rule: a text with a `/` is a local file, anything else a jar on the
    /// cluster. (`warden upgrade` also takes an existing local file without a `/`.)
    pub fn parse(s: &str) -> JarRef {
        if s.contains('/') {
            JarRef::Path(PathBuf::from(s))
        } else {
            JarRef::Name(s.to_string())
        }
    }

    /// Reads a jar named by a rule: a jar on the cluster, or a file under the configuration's directory (a relative
    /// path ending in `.jar`, without `..`). A rule never makes Warden upload a file from elsewhere on the host.
    pub fn from_rule(s: &str) -> Result<JarRef, String> {
        match JarRef::parse(s) {
            JarRef::Path(p) => {
                let inside = p.is_relative()
                    && p.components()
                        .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
                if !inside || p.extension().and_then(|e| e.to_str()) != Some("jar") {
                    return Err(format!(
                        "jar `{s}`: a file to upload must be a `.jar` under the configuration's directory (a relative \
                         path without `..`); a jar already on the cluster is named without a `/`"
                    ));
                }
                Ok(JarRef::Path(p))
            }
            name => Ok(name),
        }
    }

    /// The jar's file name (the name `GET /jars` lists after an upload).
    pub fn file_name(&self) -> String {
        match self {
            JarRef::Name(n) => n.clone(),
            JarRef::Path(p) => p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for JarRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JarRef::Name(n) => f.write_str(n),
            JarRef::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What a restart submits differently from the job's `jobs.<name>.jar`: each field, when set, replaces the
/// configured one at the submit step. Empty for a plain restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartOverrides {
    /// Another jar (an upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jar: Option<JarRef>,
    /// Another entry class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_class: Option<String>,
    /// Other program arguments (all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Another parallelism (a rescale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u32>,
    /// Allow savepoint state that maps to no operator of the new job (Flink's `--allowNonRestoredState`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_non_restored_state: Option<bool>,
}

impl RestartOverrides {
    /// Nothing overridden.
    pub fn is_empty(&self) -> bool {
        self == &RestartOverrides::default()
    }

    /// The kind of restart these overrides make: a new jar, entry class or arguments is an upgrade, only a
    /// parallelism a rescale, nothing a restart.
    pub fn kind(&self) -> RestartKind {
        if self.jar.is_some() || self.entry_class.is_some() || self.args.is_some() {
            RestartKind::Upgrade
        } else if self.parallelism.is_some() || self.allow_non_restored_state.is_some() {
            RestartKind::Rescale
        } else {
            RestartKind::Restart
        }
    }
}

/// One step of a restart's timeline (the restart record's `steps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTime {
    /// The step reached.
    pub step: super::RestartStep,
    /// When (RFC 3339, milliseconds, UTC).
    pub at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overrides_decide_the_kind() {
        assert_eq!(RestartOverrides::default().kind(), RestartKind::Restart);
        let up = RestartOverrides { jar: Some(JarRef::parse("clicks-2.jar")), ..Default::default() };
        assert_eq!(up.kind(), RestartKind::Upgrade);
        let re = RestartOverrides { parallelism: Some(4), ..Default::default() };
        assert_eq!(re.kind(), RestartKind::Rescale);
        assert_eq!(JarRef::parse("./build/clicks-2.jar"), JarRef::Path("./build/clicks-2.jar".into()));
        assert_eq!(JarRef::parse("./build/clicks-2.jar").file_name(), "clicks-2.jar");
        assert_eq!(JarRef::from_rule("jobs/clicks-2.jar"), Ok(JarRef::Path("jobs/clicks-2.jar".into())));
        assert_eq!(JarRef::from_rule("clicks-2.jar"), Ok(JarRef::Name("clicks-2.jar".into())));
        for bad in ["/etc/passwd", "../secrets/x.jar", "jobs/../../x.jar", "/opt/jobs/clicks.jar", "jobs/notes.txt"] {
            assert!(JarRef::from_rule(bad).is_err(), "{bad}");
        }
        assert_eq!(serde_json::to_string(&re).unwrap(), r#"{"parallelism":4}"#);
        assert_eq!(serde_json::from_str::<RestartOverrides>("{}").unwrap(), RestartOverrides::default());
    }
}
