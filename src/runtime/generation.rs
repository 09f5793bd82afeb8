//! A generation: one consistent set of everything loaded, swapped atomically by a reload.

use std::collections::HashMap;
use std::sync::Arc;

use crate::fetch::{ClientPool, TargetClient};
use crate::plan::{Plan, PlannedRule, ProbeJob};
use crate::script::ScriptEngine;

/// One consistent set of everything loaded: what a reload swaps atomically.
pub struct Generation {
    /// The plan.
    pub plan: Plan,
    /// The engine its rules were compiled with.
    pub engine: Arc<ScriptEngine>,
    pub(super) rules: HashMap<(String, String), Vec<Arc<PlannedRule>>>,
    pub(super) clients: HashMap<String, Arc<TargetClient>>,
}

impl Generation {
    pub(super) fn new(
        plan: Plan,
        engine: ScriptEngine,
        old: Option<&Generation>,
    ) -> Result<Self, crate::fetch::ClientError> {
        let mut pool = ClientPool::default();
        let mut clients = HashMap::new();
        for t in &plan.loaded.config.targets {
            let sig = target_signature(t);
            let reuse = old.and_then(|g| {
                let ot = g.plan.loaded.config.targets.iter().find(|o| o.name == t.name)?;
                (target_signature(ot) == sig).then(|| g.clients.get(&t.name).cloned()).flatten()
            });
            let c = match reuse {
                Some(c) => c,
                None => Arc::new(TargetClient::new(t, &mut pool)?),
            };
            clients.insert(t.name.clone(), c);
        }
        let rules = plan
            .jobs
            .iter()
            .map(|j| {
                let rs = j.rules.iter().filter_map(|r| plan.rules.get(r).cloned()).collect();
                ((j.probe.clone(), j.target.clone()), rs)
            })
            .collect();
        Ok(Self { plan, engine: Arc::new(engine), rules, clients })
    }

    /// True when this generation runs `rule` as it is (same source): an evaluation of it may still be committed.
    pub(super) fn runs(&self, rule: &PlannedRule) -> bool {
        self.plan.rules.get(&rule.compiled.name).is_some_and(|r| r.compiled.source_hash == rule.compiled.source_hash)
    }

    /// The rules of `self` that `next` no longer has.
    pub(super) fn removed_rules(&self, next: &Generation) -> Vec<String> {
        self.plan.rules.keys().filter(|r| !next.plan.rules.contains_key(*r)).cloned().collect()
    }
}

/// A fingerprint of a target's settings (secrets included, never shown): a change means a new client.
fn target_signature(t: &crate::config::TargetConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.url.hash(&mut h);
    t.labels.hash(&mut h);
    for (k, v) in &t.headers {
        (k, v.expose()).hash(&mut h);
    }
    if let Some(a) = &t.auth {
        a.bearer.as_ref().map(|s| s.expose()).hash(&mut h);
        a.basic.as_ref().map(|b| (&b.username, b.password.expose())).hash(&mut h);
    }
    t.ca_file.hash(&mut h);
    t.insecure_skip_verify.hash(&mut h);
    t.timeout.hash(&mut h);
    h.finish()
}

/// A fingerprint of what a probe task does; tasks whose fingerprint is unchanged keep running across a reload.
pub(super) fn job_signature(j: &ProbeJob, g: &Generation) -> String {
    let sched = match &j.schedule {
        crate::schedule::Schedule::Every(d) => format!("every {d:?}"),
        crate::schedule::Schedule::Cron(c) => format!("cron {}", c.source()),
    };
    let target = g.plan.loaded.config.targets.iter().find(|t| t.name == j.target).map(target_signature).unwrap_or(0);
    format!(
        "{sched}|{:?}|{}|{:?}|{:?}|{}|{target}|{:?}|{:?}",
        j.request.method, j.request.path, j.request.headers, j.request.body, j.request.max_body, j.for_each, j.paginate
    )
}
