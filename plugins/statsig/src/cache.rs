//! The identify cache: traits from `identify` calls, remembered per user so
//! later events of that user carry them in `user.custom` and `user.email`.
//!
//! Statsig has no identify endpoint: user attributes travel on every event.
//! The cache is bounded (the oldest-updated entry is evicted first), lives
//! in one plugin instance's memory, and is lost when the instance is
//! discarded or Switchyard restarts. It holds owned `serde_json` values,
//! as it outlives the events; reading it ([`IdentifyCache::traits_of`])
//! borrows them and allocates nothing.

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
    /// Entries by userId, and by anonymousId: `BTreeMap`s, not `HashMap`s
    /// (no random seed to import from WASI), one per id kind so that a
    /// lookup borrows the id.
    users: BTreeMap<String, Entry>,
    anonymous: BTreeMap<String, Entry>,
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
        self.users.len() + self.anonymous.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let (map, id) = match &key {
            Key::User(id) => (&mut self.users, id),
            Key::Anonymous(id) => (&mut self.anonymous, id),
        };
        let entry = map.entry(id.clone()).or_insert_with(|| Entry { seq, traits: Properties::new() });
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
        while self.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            match oldest {
                Key::User(id) => self.users.remove(&id),
                Key::Anonymous(id) => self.anonymous.remove(&id),
            };
        }
    }

    /// The cached traits of `key`, if any.
    pub fn get(&self, key: &Key) -> Option<&Properties> {
        match key {
            Key::User(id) => self.user(id),
            Key::Anonymous(id) => self.anonymous(id),
        }
    }

    fn user(&self, id: &str) -> Option<&Properties> {
        self.users.get(id).map(|e| &e.traits)
    }

    fn anonymous(&self, id: &str) -> Option<&Properties> {
        self.anonymous.get(id).map(|e| &e.traits)
    }

    /// The entries known for a user with these ids, borrowed: the
    /// anonymousId's, then the userId's (the identified user is the more
    /// specific, so a reader lets its traits win).
    pub fn traits_of(&self, user_id: Option<&str>, anonymous_id: Option<&str>) -> [Option<&Properties>; 2] {
        if self.is_empty() {
            return [None, None];
        }
        [anonymous_id.and_then(|id| self.anonymous(id)), user_id.and_then(|id| self.user(id))]
    }

    /// The traits known for a user with these ids: the anonymousId's entry
    /// overlaid with the userId's (the identified user is the more specific).
    pub fn lookup(&self, user_id: Option<&str>, anonymous_id: Option<&str>) -> Properties {
        let mut out = Properties::new();
        for traits in self.traits_of(user_id, anonymous_id).into_iter().flatten() {
            out.extend(traits.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn eviction_spans_both_id_kinds() {
        let mut cache = IdentifyCache::new(2);
        let traits = json!({"t": 1}).as_object().cloned().unwrap();
        cache.merge(Key::User("x".into()), &traits);
        cache.merge(Key::Anonymous("x".into()), &traits);
        cache.merge(Key::User("x".into()), &traits);
        cache.merge(Key::Anonymous("y".into()), &traits);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&Key::Anonymous("x".into())).is_none(), "the oldest write goes first");
        assert_eq!(cache.traits_of(Some("x"), Some("y")), [Some(&traits), Some(&traits)]);
        assert_eq!(cache.traits_of(Some("y"), Some("x")), [None, None]);
    }
}
