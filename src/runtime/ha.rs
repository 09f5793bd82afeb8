//! Where the runtime meets the store for the HA pair: which store URL the election uses, and the fence a new
//! leader puts on the store (every write it makes from then on carries its epoch, and is refused once another
//! instance holds a newer one).

use crate::config::Config;
use crate::store::{Fence, Store, StoreError};

/// The PostgreSQL URL of the store, if the configuration uses one (then this instance is one of an HA pair).
pub(super) fn postgres_url(cfg: &Config) -> Option<String> {
    cfg.store.postgres.as_ref().map(|pg| pg.url.expose().to_string())
}

/// Fences the store with `epoch` of `holder`: from now on the store refuses this process's writes once the lease
/// row names another holder or a newer epoch.
pub(super) async fn fence(store: &std::sync::Arc<Store>, epoch: i64, holder: &str) -> Result<(), StoreError> {
    let fence = Fence { epoch, holder: holder.to_string() };
    store.call(move |s| s.set_fence(Some(fence))).await
}
