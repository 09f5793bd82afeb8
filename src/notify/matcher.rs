//! Matching alerts: for routes, silences and maintenance windows. A matcher is a list of fields, each with
//! alternatives that may use `*` wildcards; all fields must match.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::diag::closest;
use crate::model::AlertRecord;
use crate::model::Severity;

use super::config::{MatchConfig, OneOrMany};

/// What an alert is matched on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    /// Severity.
    Severity,
    /// A label of the alert's target.
    Label(String),
    /// The pack part of the rule name.
    Pack,
    /// The rule (full or short name).
    Rule,
    /// The target.
    Target,
    /// The job name (subject).
    Job,
    /// The event.
    Event,
}

/// Field names a silence's `--match KEY=VALUE` accepts (besides `labels.NAME`).
pub const KEYS: &[&str] = &["job", "subject", "target", "rule", "pack", "severity", "event"];

const EVENTS: &[&str] = &["firing", "reminder", "resolved", "giving_up", "restarted", "restart_failed", "log"];

impl Field {
    /// Parses `job`, `target`, `labels.env`, ...
    pub fn parse(key: &str) -> Result<Field, String> {
        Ok(match key {
            "job" | "subject" => Field::Job,
            "target" => Field::Target,
            "rule" => Field::Rule,
            "pack" => Field::Pack,
            "severity" => Field::Severity,
            "event" => Field::Event,
            k => match k.strip_prefix("labels.").or_else(|| k.strip_prefix("label.")) {
                Some(l) if !l.is_empty() => Field::Label(l.to_string()),
                _ => {
                    let hint = closest(k, KEYS.iter().copied())
                        .map(|c| format!(", did you mean `{c}`?"))
                        .unwrap_or_else(|| format!("; use one of {} or labels.NAME", KEYS.join(", ")));
                    return Err(format!("unknown match key `{k}`{hint}"));
                }
            },
        })
    }

    /// The key as a user writes it.
    pub fn key(&self) -> String {
        match self {
            Field::Severity => "severity".into(),
            Field::Label(l) => format!("labels.{l}"),
            Field::Pack => "pack".into(),
            Field::Rule => "rule".into(),
            Field::Target => "target".into(),
            Field::Job => "job".into(),
            Field::Event => "event".into(),
        }
    }
}

/// An alert as matchers see it: the record plus its target's labels.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The alert.
    pub record: &'a AlertRecord,
    /// The target's labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// A compiled matcher.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    fields: Vec<(Field, Vec<String>)>,
}

impl Matcher {
    /// Compiles a `match:` block; on error returns the offending field's key (for the position) and a message.
    pub fn from_config(m: &MatchConfig) -> Result<Matcher, (String, String)> {
        let mut fields = vec![];
        let mut push = |f: Field, v: &Option<OneOrMany>| {
            if let Some(v) = v {
                fields.push((f, v.values()));
            }
        };
        push(Field::Severity, &m.severity);
        push(Field::Pack, &m.pack);
        push(Field::Rule, &m.rule);
        push(Field::Target, &m.target);
        push(Field::Job, &m.job);
        push(Field::Event, &m.event);
        for (k, v) in &m.labels {
            fields.push((Field::Label(k.clone()), v.values()));
        }
        let m = Matcher { fields };
        m.validate().map_err(|(f, e)| (f.key(), e))?;
        Ok(m)
    }

    /// Parses `KEY=VALUE` pairs (silences). Values may use `*`.
    pub fn from_pairs(pairs: &[String]) -> Result<Matcher, String> {
        let mut fields: Vec<(Field, Vec<String>)> = vec![];
        for p in pairs {
            let (k, v) = p.split_once('=').ok_or_else(|| format!("`{p}` is not KEY=VALUE (e.g. job=clicks)"))?;
            let (k, v) = (k.trim(), v.trim());
            if v.is_empty() {
                return Err(format!("`{p}` has an empty value"));
            }
            let f = Field::parse(k)?;
            match fields.iter_mut().find(|(g, _)| *g == f) {
                // The same key twice means "either value".
                Some((_, vals)) => vals.push(v.to_string()),
                None => fields.push((f, vec![v.to_string()])),
            }
        }
        let m = Matcher { fields };
        m.validate().map_err(|(_, e)| e)?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), (Field, String)> {
        for (f, vals) in &self.fields {
            if vals.is_empty() {
                return Err((f.clone(), format!("`{}` lists no values", f.key())));
            }
            for v in vals {
                match f {
                    Field::Severity if !v.contains('*') && Severity::parse(v).is_none() => {
                        return Err((f.clone(), format!("unknown severity `{v}`; expected info, warning or critical")))
                    }
                    Field::Event if !v.contains('*') && !EVENTS.contains(&v.as_str()) => {
                        return Err((f.clone(), format!("unknown event `{v}`; expected one of {}", EVENTS.join(", "))))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// True when there is nothing to match (every alert matches).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// True when the alert matches every field. A matcher that does not name `event` does not match `log` lines.
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        let r = f.record;
        if r.event == "log" && !self.fields.iter().any(|(k, _)| *k == Field::Event) {
            return false;
        }
        self.fields.iter().all(|(field, vals)| {
            let (pack, short) = match r.rule.split_once('/') {
                Some((p, s)) => (p, s),
                None => ("", r.rule.as_str()),
            };
            vals.iter().any(|pat| match field {
                Field::Severity => glob(pat, r.severity.as_str()),
                Field::Label(l) => f.labels.get(l).is_some_and(|v| glob(pat, v)),
                Field::Pack => glob(pat, pack),
                Field::Rule => glob(pat, &r.rule) || (!pat.contains('/') && glob(pat, short)),
                Field::Target => glob(pat, &r.target),
                Field::Job => glob(pat, &r.subject),
                Field::Event => glob(pat, &r.event),
            })
        })
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.fields.is_empty() {
            return write!(f, "everything");
        }
        let parts: Vec<String> = self.fields.iter().map(|(k, v)| format!("{}={}", k.key(), v.join("|"))).collect();
        write!(f, "{}", parts.join(" "))
    }
}

/// `*` matches any run of characters, `?` any one character; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(event: &str, rule: &str, subject: &str, sev: Severity) -> AlertRecord {
        AlertRecord {
            time: chrono::Utc::now(),
            event: event.into(),
            rule: rule.into(),
            target: "prod-jm".into(),
            subject: subject.into(),
            severity: sev,
            summary: "s".into(),
            details: serde_json::Value::Null,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("clicks-*", "clicks-eu"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("c?icks", "clicks"));
        assert!(!glob("clicks", "clicks2"));
    }

    #[test]
    fn pairs_match_fields_labels_and_rule_short_names() {
        let labels = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        let r = rec("firing", "flink/job-not-running", "clicks", Severity::Critical);
        let f = Facts { record: &r, labels: &labels };
        let m = |p: &[&str]| Matcher::from_pairs(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        assert!(m(&["job=clicks"]).matches(&f));
        assert!(m(&["job=views", "job=clicks"]).matches(&f), "the same key twice is an alternative");
        assert!(!m(&["job=clicks", "target=other"]).matches(&f));
        assert!(m(&["labels.env=prod", "rule=job-not-running"]).matches(&f));
        assert!(m(&["rule=flink/*", "pack=flink", "severity=critical"]).matches(&f));
        assert!(!m(&["labels.env=staging"]).matches(&f));
        assert!(Matcher::default().matches(&f));
        let log = rec("log", "flink/x", "clicks", Severity::Info);
        assert!(!Matcher::default().matches(&Facts { record: &log, labels: &labels }), "log lines need event=log");
        assert!(m(&["event=log"]).matches(&Facts { record: &log, labels: &labels }));
    }

    #[test]
    fn bad_pairs_are_explained() {
        let e = |p: &str| Matcher::from_pairs(&[p.to_string()]).unwrap_err();
        assert_eq!(e("jbo=clicks"), "unknown match key `jbo`, did you mean `job`?");
        assert_eq!(e("clicks"), "`clicks` is not KEY=VALUE (e.g. job=clicks)");
        assert_eq!(e("severity=high"), "unknown severity `high`; expected info, warning or critical");
        assert_eq!(e("job="), "`job=` has an empty value");
    }
}
