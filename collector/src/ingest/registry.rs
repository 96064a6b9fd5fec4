//! The device registry: which devices may send events, and from which site
//! (`[[devices]]` and `allow_unknown_devices`), replaceable while the
//! collector runs (SIGHUP reload).
//!
//! Invariants:
//! - [`DeviceSet`] is a plain value: [`DeviceSet::admits`] and
//!   [`DeviceSet::changes_to`] are pure, so what a reload adds, removes or
//!   moves is unit-tested without a process;
//! - [`DeviceRegistry::replace`] swaps the whole set at once: a message is
//!   checked against the old set or the new one, never against a mix;
//!   readers take a cheap `Arc` clone and never wait on a reload.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use dockline_protocol::{DeviceId, SiteId};
use serde::{Deserialize, Serialize};

/// `[[devices]]`: one known device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The device id (its topic level).
    pub id: DeviceId,
    /// The site it belongs to (its topic level).
    pub site: SiteId,
}

/// The devices allowed to send, as one value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSet {
    devices: HashMap<DeviceId, SiteId>,
    allow_unknown: bool,
}

/// What replacing one [`DeviceSet`] with another changes, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryChange {
    /// Devices now accepted that were not.
    pub added: Vec<DeviceId>,
    /// Devices no longer accepted.
    pub removed: Vec<DeviceId>,
    /// Devices whose site changed (accepted only from the new site).
    pub moved: Vec<DeviceId>,
    /// `allow_unknown_devices` after the change, when it changed.
    pub allow_unknown: Option<bool>,
}

impl RegistryChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.moved.is_empty()
            && self.allow_unknown.is_none()
    }
}

impl DeviceSet {
    /// The set `[[devices]]` and `allow_unknown_devices` describe (a device
    /// listed twice: the last entry wins, as a later line in a file would).
    pub fn new(devices: &[DeviceConfig], allow_unknown: bool) -> Self {
        Self {
            devices: devices
                .iter()
                .map(|d| (d.id.clone(), d.site.clone()))
                .collect(),
            allow_unknown,
        }
    }

    /// Whether a message from `device` on `site`'s topics is accepted.
    pub fn admits(&self, device: &DeviceId, site: &SiteId) -> bool {
        self.allow_unknown || self.devices.get(device) == Some(site)
    }

    /// What changes when `next` replaces this set; every list sorted.
    pub fn changes_to(&self, next: &DeviceSet) -> RegistryChange {
        let old: BTreeMap<_, _> = self.devices.iter().collect();
        let new: BTreeMap<_, _> = next.devices.iter().collect();
        let mut change = RegistryChange::default();
        for (id, site) in &new {
            match old.get(id) {
                None => change.added.push((*id).clone()),
                Some(was) if was != site => change.moved.push((*id).clone()),
                Some(_) => {}
            }
        }
        change.removed = old
            .keys()
            .filter(|id| !new.contains_key(*id))
            .map(|id| (*id).clone())
            .collect();
        if self.allow_unknown != next.allow_unknown {
            change.allow_unknown = Some(next.allow_unknown);
        }
        change
    }
}

/// The running collector's [`DeviceSet`], shared by every ingest clone.
#[derive(Debug, Default)]
pub struct DeviceRegistry {
    current: RwLock<Arc<DeviceSet>>,
}

impl DeviceRegistry {
    /// A registry holding `set`.
    pub fn new(set: DeviceSet) -> Self {
        Self {
            current: RwLock::new(Arc::new(set)),
        }
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<DeviceSet> {
        // A poisoned lock still holds a whole set: the swap is one store.
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts `next` in force; returns what changed.
    pub fn replace(&self, next: DeviceSet) -> RegistryChange {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let change = current.changes_to(&next);
        *current = Arc::new(next);
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, site: &str) -> DeviceConfig {
        DeviceConfig {
            id: DeviceId::new(id).expect("id"),
            site: SiteId::new(site).expect("site"),
        }
    }

    fn ids(names: &[&str]) -> Vec<DeviceId> {
        names
            .iter()
            .map(|n| DeviceId::new(*n).expect("id"))
            .collect()
    }

    #[test]
    fn admits_listed_devices_from_their_own_site_only() {
        let set = DeviceSet::new(&[dev("hh-01", "dc-north")], false);
        let (hh01, hh02) = (
            DeviceId::new("hh-01").expect("id"),
            DeviceId::new("hh-02").expect("id"),
        );
        let (north, south) = (
            SiteId::new("dc-north").expect("site"),
            SiteId::new("dc-south").expect("site"),
        );
        assert!(set.admits(&hh01, &north));
        assert!(!set.admits(&hh01, &south), "another site's topic");
        assert!(!set.admits(&hh02, &north), "not listed");
        let open = DeviceSet::new(&[], true);
        assert!(open.admits(&hh02, &south));
    }

    #[test]
    fn changes_name_added_removed_and_moved_devices() {
        let old = DeviceSet::new(
            &[
                dev("hh-01", "dc-north"),
                dev("hh-02", "dc-north"),
                dev("hh-03", "dc-north"),
            ],
            false,
        );
        let new = DeviceSet::new(
            &[
                dev("hh-03", "dc-south"),
                dev("hh-01", "dc-north"),
                dev("hh-09", "dc-north"),
            ],
            true,
        );
        let change = old.changes_to(&new);
        assert_eq!(change.added, ids(&["hh-09"]));
        assert_eq!(change.removed, ids(&["hh-02"]));
        assert_eq!(change.moved, ids(&["hh-03"]));
        assert_eq!(change.allow_unknown, Some(true));
        assert!(old.changes_to(&old.clone()).is_empty());
    }

    #[test]
    fn replace_puts_the_new_set_in_force_for_every_holder() {
        let registry = Arc::new(DeviceRegistry::new(DeviceSet::new(
            &[dev("hh-01", "dc-north")],
            false,
        )));
        let (hh01, hh02) = (
            DeviceId::new("hh-01").expect("id"),
            DeviceId::new("hh-02").expect("id"),
        );
        let north = SiteId::new("dc-north").expect("site");
        let held = Arc::clone(&registry);
        assert!(!held.current().admits(&hh02, &north));
        let change = registry.replace(DeviceSet::new(&[dev("hh-02", "dc-north")], false));
        assert_eq!(
            (change.added, change.removed),
            (ids(&["hh-02"]), ids(&["hh-01"]))
        );
        assert!(held.current().admits(&hh02, &north));
        assert!(!held.current().admits(&hh01, &north));
    }
}
