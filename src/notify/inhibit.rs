//! Inhibition, Alertmanager-style: while a *source* alert fires (a JobManager is unreachable), the *target* alerts
//! that share its `equal` labels (the same target) are journalled but not sent — one message instead of one per
//! job.
//!
//! The rules come from `inhibit.rules` in `warden.yaml` and from packs (`inhibit:` in `pack.yaml`, named
//! `<pack>/<name>`, on unless `inhibit.pack_defaults: false` or listed in `inhibit.disable`). The notifier keeps
//! which alerts fire in its own table (`notify_firing`, fed by every firing, reminder and resolution it is handed),
//! so what inhibits survives a restart of Warden and a reload.
//!
//! What happens to an inhibited alert, per channel the routes send it to:
//!
//! - its *firing* (or a reminder of an alert the channel never heard fire) is held back, like a silenced one; it is
//!   sent, once, as firing, when no source inhibits it any more and it still fires;
//! - if it resolves while held, nothing is sent about it (the channel never heard it fire);
//! - a *reminder* of an alert the channel heard fire before the source fired is not sent, and its *resolved* is
//!   (a channel that was told an alert fires is told when it stops);
//! - inhibition is looked at when the alert arrives and again when its group's `group_wait` is over, so an alert
//!   that fired a poll before its source is still held back if `group_wait` covers the gap;
//! - alerts released when their source resolves wait out `group_wait` in a group of their own; those that resolve
//!   meanwhile (a JobManager and its jobs coming back at once) are dropped, not sent as firing and then resolved.
//!
//! Inhibit rules are part of the notifier's settings ([`super::Notifier::reconfigure_with`]): a reload swaps them
//! with the rest, and an alert held by a rule that is gone is sent on the next round if it still fires.
//!
//! Each inhibited alert is journalled once (action `notify`, outcome `inhibited: …` naming the inhibiting alert and
//! the inhibit rule). Only alerts are inhibited: actions (relaunches, restarts), `giving_up`, restart results and
//! log lines are not.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::InhibitRuleConfig;
use crate::diag::closest;
use crate::model::AlertRecord;
use crate::store::{args, Backend, Db, DbResult, Store, StoreError};

use super::matcher::{Facts, Matcher};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notify_firing (
  alert TEXT PRIMARY KEY, record TEXT NOT NULL
);
";

/// The keys `equal` accepts (besides `labels.NAME` and `details.NAME`).
pub const EQUAL_KEYS: &[&str] = &["target", "job", "subject", "rule", "pack", "severity"];

/// What `equal` compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    /// The target's name.
    Target,
    /// The subject (job name).
    Job,
    /// The rule's full name.
    Rule,
    /// The pack part of the rule's name.
    Pack,
    /// The severity.
    Severity,
    /// A label of the alert's target.
    TargetLabel(String),
    /// A field of the alert's `details` (what the rule's alert map adds).
    Detail(String),
}

impl Label {
    /// Parses `target`, `job`, `labels.env`, `details.kind`, ...
    pub fn parse(key: &str) -> Result<Label, String> {
        Ok(match key {
            "target" => Label::Target,
            "job" | "subject" => Label::Job,
            "rule" => Label::Rule,
            "pack" => Label::Pack,
            "severity" => Label::Severity,
            k => {
                if let Some(l) = k.strip_prefix("labels.").filter(|l| !l.is_empty()) {
                    Label::TargetLabel(l.into())
                } else if let Some(d) = k.strip_prefix("details.").filter(|d| !d.is_empty()) {
                    Label::Detail(d.into())
                } else {
                    let hint = closest(k, EQUAL_KEYS.iter().copied())
                        .map(|c| format!(", did you mean `{c}`?"))
                        .unwrap_or_else(|| {
                            format!("; use one of {}, labels.NAME or details.NAME", EQUAL_KEYS.join(", "))
                        });
                    return Err(format!("unknown label `{k}` in `equal`{hint}"));
                }
            }
        })
    }

    /// The value of this label for an alert (`None` when it has none).
    fn value(&self, f: &Facts<'_>) -> Option<String> {
        let r = f.record;
        match self {
            Label::Target => Some(r.target.clone()),
            Label::Job => Some(r.subject.clone()),
            Label::Rule => Some(r.rule.clone()),
            Label::Pack => Some(r.rule.split_once('/').map(|(p, _)| p).unwrap_or("").to_string()),
            Label::Severity => Some(r.severity.as_str().to_string()),
            Label::TargetLabel(l) => f.labels.get(l).cloned(),
            Label::Detail(d) => match r.details.get(d)? {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s.clone()),
                v => Some(v.to_string()),
            },
        }
    }
}

/// A compiled inhibit rule.
#[derive(Debug, Clone, PartialEq)]
pub struct InhibitRule {
    /// Its name (`flink/jobmanager-unreachable`, `inhibit.rules[0]`).
    pub name: String,
    source: Matcher,
    target: Matcher,
    equal: Vec<Label>,
}

/// Why a rule's configuration is refused: the field (relative to the rule, e.g. `source.rule`, `equal[1]`) and a
/// message.
pub type RuleError = (String, String);

impl InhibitRule {
    /// Compiles one rule; every problem is returned with the field it is about.
    pub fn compile(name: String, c: &InhibitRuleConfig) -> Result<InhibitRule, Vec<RuleError>> {
        let mut errors = vec![];
        let mut side = |which: &str, m: &super::config::MatchConfig| -> Option<Matcher> {
            if m.event.is_some() {
                errors.push((
                    format!("{which}.event"),
                    "`event` cannot be used here: inhibit rules apply to alerts while they fire".to_string(),
                ));
                return None;
            }
            match Matcher::from_config(m) {
                Ok(m) if m.is_empty() => {
                    errors.push((
                        which.to_string(),
                        format!("`{which}` matches every alert; name at least one of rule, pack, target, job, severity or labels"),
                    ));
                    None
                }
                Ok(m) => Some(m),
                Err((field, e)) => {
                    errors.push((format!("{which}.{field}"), e));
                    None
                }
            }
        };
        let source = side("source", &c.source);
        let target = side("target", &c.target);
        let mut equal = vec![];
        for (i, k) in c.equal.iter().enumerate() {
            match Label::parse(k) {
                Ok(l) => equal.push(l),
                Err(e) => errors.push((format!("equal[{i}]"), e)),
            }
        }
        match (source, target) {
            (Some(source), Some(target)) if errors.is_empty() => Ok(InhibitRule { name, source, target, equal }),
            _ => Err(errors),
        }
    }

    /// True when `f` matches the rule's `source` (it may inhibit others while it fires).
    pub fn is_source(&self, f: &Facts<'_>) -> bool {
        self.source.matches(f)
    }

    /// True when `source` (firing) inhibits `target` under this rule. An alert never inhibits itself, and when an
    /// alert matches both sides, only a source that does not also match `target` inhibits it (so two alerts cannot
    /// mute each other).
    pub fn inhibits(&self, source: &Facts<'_>, target: &Facts<'_>) -> bool {
        if same_alert(source.record, target.record) {
            return false;
        }
        if !self.target.matches(target) || !self.source.matches(source) {
            return false;
        }
        if self.source.matches(target) && self.target.matches(source) {
            return false;
        }
        self.equal.iter().all(|l| match (l.value(source), l.value(target)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        })
    }
}

fn same_alert(a: &AlertRecord, b: &AlertRecord) -> bool {
    a.rule == b.rule && a.target == b.target && a.subject == b.subject
}

/// The alert that inhibits another, as the journal and `warden history` show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InhibitedBy {
    /// The inhibit rule.
    pub inhibit_rule: String,
    /// The inhibiting alert's rule.
    pub rule: String,
    /// Its target.
    pub target: String,
    /// Its subject.
    pub subject: String,
}

impl std::fmt::Display for InhibitedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "by {} ({}) on {} [inhibit rule {}]", self.rule, self.subject, self.target, self.inhibit_rule)
    }
}

/// The first firing alert that inhibits `alert` under one of `rules`, if any. `labels` gives a target's labels.
pub fn inhibited_by(
    rules: &[InhibitRule],
    alert: &Facts<'_>,
    firing: &[AlertRecord],
    labels: &dyn Fn(&str) -> BTreeMap<String, String>,
) -> Option<InhibitedBy> {
    if !matches!(alert.record.event.as_str(), "firing" | "reminder") {
        return None;
    }
    for rule in rules {
        for s in firing {
            let l = labels(&s.target);
            if rule.inhibits(&Facts { record: s, labels: &l }, alert) {
                return Some(InhibitedBy {
                    inhibit_rule: rule.name.clone(),
                    rule: s.rule.clone(),
                    target: s.target.clone(),
                    subject: s.subject.clone(),
                });
            }
        }
    }
    None
}

/// The inhibit rules in force: each pack's `inhibit:` entries (named `<pack>/<name>`) unless
/// `inhibit.pack_defaults` is `false` or they are listed under `inhibit.disable`, then `inhibit.rules`. A name
/// under `inhibit.disable` that no loaded pack has is reported at its position in `doc` (`warden.yaml`). Rules
/// that do not compile were reported when their file was checked and are left out here.
pub fn in_force(
    c: &crate::config::InhibitConfig,
    doc: &crate::config::yaml::YamlDoc,
    packs: &[crate::pack::Pack],
    diags: &mut Vec<crate::diag::Diagnostic>,
) -> Vec<InhibitRule> {
    let mut out = vec![];
    let mut known = vec![];
    for p in packs {
        for (i, r) in p.manifest.inhibit.iter().enumerate() {
            let name = p.manifest.inhibit_name(i);
            known.push(name.clone());
            if !c.pack_defaults || c.disable.contains(&name) {
                continue;
            }
            if let Ok(rule) = InhibitRule::compile(name, r) {
                out.push(rule);
            }
        }
    }
    for (i, d) in c.disable.iter().enumerate() {
        if !known.contains(d) {
            let hint = match closest(d, known.iter().map(String::as_str)) {
                Some(k) => format!(", did you mean `{k}`?"),
                None if known.is_empty() => "; the loaded packs have none".into(),
                None => format!("; the packs have {}", known.join(", ")),
            };
            diags.push(doc.diag(
                &crate::config::yaml::join_index("inhibit.disable", i),
                format!("no pack has an inhibit rule named `{d}`{hint}"),
            ));
        }
    }
    for (i, r) in c.rules.iter().enumerate() {
        let name = r.name.clone().unwrap_or_else(|| format!("inhibit.rules[{i}]"));
        if let Ok(rule) = InhibitRule::compile(name, r) {
            out.push(rule);
        }
    }
    out
}

/// Creates the table if needed (SQLite; on PostgreSQL the store's migrations made it).
pub fn init(store: &Store) -> Result<(), StoreError> {
    match store.backend() {
        Backend::Sqlite => store.with_db(|c| c.batch(SCHEMA)),
        Backend::Postgres => Ok(()),
    }
}

/// Keeps the set of firing alerts up to date with one the notifier is handed: `firing` and `reminder` add (or
/// refresh) it, `resolved` removes it; other events change nothing.
pub fn track(store: &Store, r: &AlertRecord) -> Result<(), StoreError> {
    if matches!(r.event.as_str(), "firing" | "reminder" | "resolved") {
        store.with_db(|c| track_on(c, r))?;
    }
    Ok(())
}

/// [`track`] on a connection (inside the notifier's transaction for the alert, see [`super::outbox::Change`]).
pub(crate) fn track_on(c: &Db, r: &AlertRecord) -> DbResult<()> {
    let key = super::outbox::alert_key(r);
    match r.event.as_str() {
        "firing" | "reminder" => {
            let rec = serde_json::to_string(r).expect("record");
            c.execute(
                "INSERT INTO notify_firing (alert, record) VALUES (?1, ?2)
                 ON CONFLICT (alert) DO UPDATE SET record = excluded.record",
                args![key, rec],
            )?;
        }
        "resolved" => {
            c.execute("DELETE FROM notify_firing WHERE alert = ?1", args![key])?;
        }
        _ => {}
    }
    Ok(())
}

/// The alerts firing now, as the notifier was told (oldest first).
pub fn firing(store: &Store) -> Result<Vec<AlertRecord>, StoreError> {
    store.with_db(|c| {
        let rows = c.query("SELECT record FROM notify_firing ORDER BY rowid", &[])?;
        let mut out = vec![];
        for row in rows {
            if let Ok(rec) = serde_json::from_str(&row.get::<String>(0)?) {
                out.push(rec);
            }
        }
        Ok(out)
    })
}

/// The alerts held back by inhibition now, as `(rule, target, subject)` → what inhibits them (`by … [inhibit rule
/// …]`), whichever channel holds them.
pub fn held_inhibited(store: &Store) -> Result<BTreeMap<(String, String, String), String>, StoreError> {
    let held = super::outbox::held_why(store)?;
    Ok(held
        .into_iter()
        .filter_map(|(_, _, why, r)| {
            let by = why.strip_prefix("inhibited ")?.to_string();
            Some(((r.rule, r.target, r.subject), by))
        })
        .collect())
}

/// True when the alert with key `alert` ([`super::outbox::alert_key`]) fires now.
pub fn is_firing(store: &Store, alert: &str) -> Result<bool, StoreError> {
    store.with_db(|c| c.query_one("SELECT EXISTS (SELECT 1 FROM notify_firing WHERE alert = ?1)", args![alert])?.get(0))
}

/// How many alerts are held back by inhibition now, counted per alert (not per channel).
pub fn held_count(store: &Store) -> Result<u64, StoreError> {
    store.with_db(|c| {
        c.query_one(
            "SELECT COUNT(DISTINCT alert) FROM notify_alert WHERE state = 'held' AND silenced_by LIKE 'inhibited %'",
            &[],
        )?
        .get(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Severity;

    fn rec(rule: &str, target: &str, subject: &str, event: &str) -> AlertRecord {
        AlertRecord {
            time: chrono::Utc::now(),
            event: event.into(),
            rule: rule.into(),
            target: target.into(),
            subject: subject.into(),
            severity: Severity::Critical,
            summary: "s".into(),
            details: serde_json::json!({"kind": "connect", "job": subject}),
        }
    }

    fn rule(yaml: &str) -> Result<InhibitRule, Vec<RuleError>> {
        let c: InhibitRuleConfig = serde_yaml::from_str(yaml).unwrap();
        InhibitRule::compile("r".into(), &c)
    }

    fn flink() -> InhibitRule {
        rule("source: {rule: flink/jobmanager-unreachable}\ntarget: {rule: [flink/job-not-running, flink/tasks-failing]}")
            .unwrap()
    }

    fn none(_: &str) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn a_source_inhibits_matching_alerts_of_its_own_target_only() {
        let r = flink();
        let down = rec("flink/jobmanager-unreachable", "prod", "prod", "firing");
        let job = rec("flink/job-not-running", "prod", "clicks", "firing");
        let other = rec("flink/job-not-running", "staging", "clicks", "firing");
        let unrelated = rec("flink/restart-loop", "prod", "clicks", "firing");
        let labels = BTreeMap::new();
        fn f<'a>(r: &'a AlertRecord, labels: &'a BTreeMap<String, String>) -> Facts<'a> {
            Facts { record: r, labels }
        }
        assert!(r.inhibits(&f(&down, &labels), &f(&job, &labels)));
        assert!(!r.inhibits(&f(&down, &labels), &f(&other, &labels)), "equal: [target] by default");
        assert!(!r.inhibits(&f(&down, &labels), &f(&unrelated, &labels)), "not a target of the rule");
        assert!(!r.inhibits(&f(&job, &labels), &f(&down, &labels)), "the other way round");
        let firing = vec![job.clone(), down.clone()];
        let by = inhibited_by(std::slice::from_ref(&r), &f(&job, &labels), &firing, &none).unwrap();
        assert_eq!(by.to_string(), "by flink/jobmanager-unreachable (prod) on prod [inhibit rule r]");
        assert_eq!(inhibited_by(std::slice::from_ref(&r), &f(&other, &labels), &firing, &none), None);
        assert_eq!(
            inhibited_by(std::slice::from_ref(&r), &f(&job, &labels), std::slice::from_ref(&job), &none),
            None,
            "no source firing"
        );
        let resolved = rec("flink/job-not-running", "prod", "clicks", "resolved");
        assert_eq!(
            inhibited_by(std::slice::from_ref(&r), &f(&resolved, &labels), &firing, &none),
            None,
            "only firing alerts are inhibited"
        );
    }

    #[test]
    fn equal_compares_target_labels_and_details_and_a_missing_label_is_not_equal() {
        let r = rule("source: {rule: down}\ntarget: {rule: job-*}\nequal: [labels.cluster, details.kind]").unwrap();
        let down = rec("flink/down", "jm-a", "jm-a", "firing");
        let job = rec("flink/job-x", "jm-b", "clicks", "firing");
        let a = BTreeMap::from([("cluster".to_string(), "eu".to_string())]);
        let b = BTreeMap::from([("cluster".to_string(), "eu".to_string())]);
        let c = BTreeMap::from([("cluster".to_string(), "us".to_string())]);
        let empty = BTreeMap::new();
        assert!(r.inhibits(&Facts { record: &down, labels: &a }, &Facts { record: &job, labels: &b }));
        assert!(!r.inhibits(&Facts { record: &down, labels: &a }, &Facts { record: &job, labels: &c }));
        assert!(!r.inhibits(&Facts { record: &down, labels: &empty }, &Facts { record: &job, labels: &empty }));
        let mut other_kind = job.clone();
        other_kind.details = serde_json::json!({"kind": "timeout"});
        assert!(!r.inhibits(&Facts { record: &down, labels: &a }, &Facts { record: &other_kind, labels: &b }));
        let everywhere = rule("source: {rule: down}\ntarget: {rule: job-*}\nequal: []").unwrap();
        assert!(everywhere.inhibits(&Facts { record: &down, labels: &empty }, &Facts { record: &job, labels: &empty }));
    }

    #[test]
    fn alerts_never_inhibit_themselves_or_each_other() {
        let r = rule("source: {severity: critical}\ntarget: {severity: critical}").unwrap();
        let a = rec("p/a", "t", "x", "firing");
        let b = rec("p/b", "t", "y", "firing");
        let l = BTreeMap::new();
        assert!(!r.inhibits(&Facts { record: &a, labels: &l }, &Facts { record: &a, labels: &l }));
        assert!(!r.inhibits(&Facts { record: &a, labels: &l }, &Facts { record: &b, labels: &l }));
        assert_eq!(inhibited_by(&[r], &Facts { record: &b, labels: &l }, &[a, b.clone()], &none), None);
    }

    #[test]
    fn bad_rules_are_explained_with_the_field() {
        let e = |y: &str| rule(y).unwrap_err();
        assert_eq!(
            e("source: {rule: a}\ntarget: {rule: b}\nequal: [targte, labels.env, details.]"),
            vec![
                ("equal[0]".to_string(), "unknown label `targte` in `equal`, did you mean `target`?".to_string()),
                (
                    "equal[2]".to_string(),
                    "unknown label `details.` in `equal`; use one of target, job, subject, rule, pack, severity, \
                     labels.NAME or details.NAME"
                        .to_string()
                ),
            ]
        );
        assert_eq!(
            e("source: {}\ntarget: {severity: high}"),
            vec![
                (
                    "source".to_string(),
                    "`source` matches every alert; name at least one of rule, pack, target, job, severity or labels"
                        .to_string()
                ),
                ("target.severity".to_string(), "unknown severity `high`; expected info, warning or critical".into()),
            ]
        );
        assert_eq!(e("source: {rule: a, event: firing}\ntarget: {rule: b}")[0].0, "source.event");
        assert!(serde_yaml::from_str::<InhibitRuleConfig>("source: {rule: a}\ntarget: {rule: b}\nequals: []").is_err());
    }

    #[test]
    fn the_firing_set_follows_firing_reminders_and_resolutions() {
        let store = Store::in_memory();
        init(&store).unwrap();
        let a = rec("flink/jobmanager-unreachable", "prod", "prod", "firing");
        track(&store, &a).unwrap();
        track(&store, &rec("flink/job-not-running", "prod", "clicks", "reminder")).unwrap();
        track(&store, &rec("flink/job-not-running", "prod", "views", "giving_up")).unwrap();
        assert_eq!(firing(&store).unwrap().len(), 2);
        track(&store, &rec("flink/jobmanager-unreachable", "prod", "prod", "reminder")).unwrap();
        assert_eq!(firing(&store).unwrap().len(), 2, "a reminder refreshes, it does not add");
        track(&store, &rec("flink/jobmanager-unreachable", "prod", "prod", "resolved")).unwrap();
        let left = firing(&store).unwrap();
        assert_eq!(left.iter().map(|r| r.subject.as_str()).collect::<Vec<_>>(), vec!["clicks"]);
    }

    fn plan(cfg: &str, packs: Vec<crate::pack::PackFiles>) -> Result<crate::plan::Plan, Vec<String>> {
        let loaded = crate::config::load_str(std::path::Path::new("warden.yaml"), cfg)
            .map_err(|d| d.0.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
        let engine = crate::script::ScriptEngine::new(&crate::config::ScriptLimits::default());
        crate::plan::build(loaded, crate::plan::PackSource::Files(packs), &engine)
            .map_err(|d| d.0.iter().map(|d| d.to_string()).collect())
    }

    const TARGETS: &str = "targets:\n  - {name: prod, url: 'http://a:1'}\n";

    #[test]
    fn the_flink_pack_inhibits_its_job_alerts_while_the_jobmanager_is_unreachable_unless_turned_off() {
        let p = plan(TARGETS, vec![crate::pack::embedded_flink_pack()]).unwrap();
        let names: Vec<&str> = p.inhibit.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["flink/jobmanager-unreachable"]);
        let labels = BTreeMap::new();
        fn f<'a>(r: &'a AlertRecord, labels: &'a BTreeMap<String, String>) -> Facts<'a> {
            Facts { record: r, labels }
        }
        let down = rec("flink/jobmanager-unreachable", "prod", "prod", "firing");
        for rule in ["flink/job-not-running", "flink/tasks-failing", "flink/restart-loop"] {
            let job = rec(rule, "prod", "clicks", "firing");
            assert!(
                inhibited_by(&p.inhibit, &f(&job, &labels), std::slice::from_ref(&down), &none).is_some(),
                "{rule}"
            );
        }
        let mine = rec("ops/other", "prod", "clicks", "firing");
        assert!(inhibited_by(&p.inhibit, &f(&mine, &labels), std::slice::from_ref(&down), &none).is_none());

        let off =
            plan(&format!("{TARGETS}inhibit: {{pack_defaults: false}}\n"), vec![crate::pack::embedded_flink_pack()]);
        assert!(off.unwrap().inhibit.is_empty());
        let cfg = format!(
            "{TARGETS}inhibit:\n  disable: [flink/jobmanager-unreachable]\n  rules:\n    - source: {{rule: a}}\n      target: {{rule: b}}\n"
        );
        let mine = plan(&cfg, vec![crate::pack::embedded_flink_pack()]).unwrap();
        assert_eq!(mine.inhibit.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["inhibit.rules[0]"]);
        let e = plan(
            &format!("{TARGETS}inhibit:\n  disable: [flink/jobmanager-unreachabel]\n"),
            vec![crate::pack::embedded_flink_pack()],
        )
        .unwrap_err();
        assert_eq!(
            e,
            ["warden.yaml:4:13: no pack has an inhibit rule named `flink/jobmanager-unreachabel`, did you mean \
              `flink/jobmanager-unreachable`?"]
        );
    }

    #[test]
    fn check_reports_bad_inhibit_rules_in_warden_yaml_with_positions() {
        let text = format!(
            "{TARGETS}inhibit:\n  rules:\n    - name: jm-down\n      source:\n        rule: flink/jobmanager-unreachable\n        event: firing\n      target:\n        severity: high\n      equal: [target, labels.env, jbo]\n    - name: jm-down\n      source: {{rule: a}}\n      target: {{}}\n"
        );
        let e = plan(&text, vec![]).unwrap_err();
        assert_eq!(
            e,
            [
                "warden.yaml:8:16: inhibit rule: `event` cannot be used here: inhibit rules apply to alerts while they fire",
                "warden.yaml:10:19: inhibit rule: unknown severity `high`; expected info, warning or critical",
                "warden.yaml:11:35: inhibit rule: unknown label `jbo` in `equal`, did you mean `job`?",
                "warden.yaml:12:13: duplicate inhibit rule `jm-down`",
                "warden.yaml:14:15: inhibit rule: `target` matches every alert; name at least one of rule, pack, \
                 target, job, severity or labels",
            ]
        );
        let e = plan(&format!("{TARGETS}inhibit:\n  rules:\n    - source: {{rule: a}}\n      target: {{rule: b}}\n      equals: [target]\n"), vec![]).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("warden.yaml:7:7: unknown field `equals`"), "{e:?}");
        let e = plan(&format!("{TARGETS}inhibit:\n  pack_default: false\n"), vec![]).unwrap_err();
        assert!(e[0].starts_with("warden.yaml:4:3: unknown field `pack_default`"), "{e:?}");
    }

    #[test]
    fn a_pack_can_ship_inhibit_rules_and_bad_ones_are_reported_in_its_pack_yaml() {
        let files = |manifest: &str| crate::pack::PackFiles {
            dir: std::path::PathBuf::from("packs/ops"),
            manifest: manifest.into(),
            rules: vec![("down.rhai".into(), "1;".into())],
            modules: vec![],
        };
        let good = "name: ops\nversion: 1.0.0\ninhibit:\n  - name: down\n    source: {rule: ops/down}\n    target: {pack: ops}\n    equal: [target, labels.zone]\n";
        let p = plan(TARGETS, vec![files(good)]).unwrap();
        assert_eq!(p.inhibit.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["ops/down"]);
        let bad = "name: ops\nversion: 1.0.0\ninhibit:\n  - name: down\n    source: {rule: ops/down, labels: {}}\n    target: {pack: ops, evnt: firing}\n";
        let e = plan(TARGETS, vec![files(bad)]).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("packs/ops/pack.yaml:6:"), "{e:?}");
        assert!(e[0].contains("unknown field `evnt`"), "{e:?}");
        let bad = "name: ops\nversion: 1.0.0\ninhibit:\n  - name: down\n    source: {rule: ops/down}\n    target: {pack: ops}\n    equal: [zone]\n";
        let e = plan(TARGETS, vec![files(bad)]).unwrap_err();
        assert_eq!(
            e,
            ["packs/ops/pack.yaml:7:13: inhibit rule: unknown label `zone` in `equal`; use one of target, job, subject, \
              rule, pack, severity, labels.NAME or details.NAME"]
        );
    }
}
