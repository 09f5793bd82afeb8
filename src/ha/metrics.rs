//! The election's Prometheus metrics. Registered by the server's registry; updated by the election task.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Role;

/// Labels of the role gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// `leader`, `standby` or `single`.
    pub role: String,
}

/// Labels of the renewal counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenewLabels {
    /// `ok` or `failed` (the database did not answer, or the lease was no longer ours).
    pub result: String,
}

/// `warden_ha_*`. Cheap to clone (every metric is an `Arc`).
#[derive(Debug, Clone, Default)]
pub struct HaMetrics {
    /// `warden_ha_role{role}`: 1 for the role this instance has, 0 for the others.
    pub role: Family<RoleLabels, Gauge>,
    /// `warden_ha_epoch`: the epoch this instance leads under (the last one it held, 0 if never).
    pub epoch: Gauge,
    /// `warden_ha_lease_renewals_total{result}`.
    pub renewals: Family<RenewLabels, Counter>,
    /// `warden_ha_transitions_total`: changes of role (standby → leader, leader → standby).
    pub transitions: Counter,
}

impl HaMetrics {
    /// Registers every metric in `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register("warden_ha_role", "This instance's role in an HA pair (1 for the role it has)", self.role.clone());
        r.register("warden_ha_epoch", "The lease epoch this instance leads or last led under", self.epoch.clone());
        r.register("warden_ha_lease_renewals", "Lease renewals by the leader, by result", self.renewals.clone());
        r.register("warden_ha_transitions", "Changes of role (standby to leader and back)", self.transitions.clone());
    }

    /// Shows `role` as the one this instance has.
    pub fn set_role(&self, role: Role) {
        for r in [Role::Single, Role::Leader, Role::Standby] {
            self.role.get_or_create(&RoleLabels { role: r.as_str().into() }).set(i64::from(r == role));
        }
    }

    /// Counts a renewal.
    pub fn renewed(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.renewals.get_or_create(&RenewLabels { result: result.into() }).inc();
    }
}
