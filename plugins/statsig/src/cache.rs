//! The identify cache: traits from `identify` calls, remembered per user so
//! later events of that user carry them in `user.custom` and `user.email`.
//!
//! Statsig has no identify endpoint: user attributes travel on every event.
//! The cache is bounded (the oldest-updated entry is evicted first), lives
//! in one plugin instance's memory, and is lost when the instance is
//! discarded or Switchyard restarts.

use std::collections::BTreeMap;

use switchyard_plugin_sdk::spec::Properties;

/// Which id a cache entry is keyed by: a userId and an anonymousId are
/// different namespaces, so `"42"` as either never collide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    User(String),
    Anonymous(String),
}

#[derive(Debug)]
struct Entry {
    /// When the entry was last written: its place in the eviction order.
    seq: u64,
    traits: Properties,
}

/// A bounded map from a user's id to the union of its identify traits.
#[derive(Debug, Default)]
pub struct IdentifyCache {
    capacity: usize,
    /// A `BTreeMap`, not a `HashMap`: no random seed to import from WASI.
    entries: BTreeMap<Key, Entry>,
    /// Write order: `seq` → key; the first is the next to evict.
    order: BTreeMap<u64, Key>,
    next_seq: u64,
}

impl IdentifyCache {
    /// A cache of at most `capacity` entries; 0 remembers nothing.
    pub fn new(capacity: usize) -> Self {
        IdentifyCache { capacity, ..Default::default() }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Merges `traits` into the entry of `key` (newer values win, older keys
    /// stay), makes it the newest, and evicts the oldest entries over
    /// capacity. A `null` trait removes the cached value.
    pub fn merge(&mut self, key: Key, traits: &Properties) {
        if self.capacity == 0 || traits.is_empty() {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry { seq, traits: Properties::new() });
        self.order.remove(&entry.seq);
        entry.seq = seq;
        for (name, value) in traits {
            if value.is_null() {
                entry.traits.remove(name);
            } else {
                entry.traits.insert(name.clone(), value.clone());
            }
        }
        self.order.insert(seq, key);
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.entries.remove(&oldest);
        }
    }

    /// The cached traits of `key`, if any.
    pub fn get(&self, key: &Key) -> Option<&Properties> {
        self.entries.get(key).map(|e| &e.traits)
    }

    /// The traits known for a user with these ids: the anonymousId's entry
    /// overlaid with the userId's (the identified user is the more specific).
    pub fn lookup(&self, user_id: Option<&str>, anonymous_id: Option<&str>) -> Properties {
        let mut out = Properties::new();
        let keys = [anonymous_id.map(|a| Key::Anonymous(a.to_owned())), user_id.map(|u| Key::User(u.to_owned()))];
        for key in keys.iter().flatten() {
            if let Some(traits) = self.get(key) {
                out.extend(traits.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        out
    }
}
