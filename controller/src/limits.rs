//! Bounds that everyone shares are also bounded per key — a peer's address, an API token — so
//! one client cannot take what all need: a flood from one address cannot fill the listener,
//! one token cannot hold every live-event slot.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex},
};

/// At most `max_per_key` holders per key at once.
#[derive(Debug)]
pub struct KeyedLimit<K> {
    max_per_key: usize,
    counts: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    pub fn new(max_per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_key,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// The limit per key.
    pub fn max_per_key(&self) -> usize {
        self.max_per_key
    }

    /// One more holder for `key`, or `None` when it has [`KeyedLimit::max_per_key`] already.
    pub fn try_acquire(self: &Arc<Self>, key: K) -> Option<KeyedPermit<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= self.max_per_key {
            return None;
        }
        *count += 1;
        Some(KeyedPermit {
            limit: self.clone(),
            key,
        })
    }

    /// Holders of `key` now.
    pub fn held(&self, key: &K) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(key).copied().unwrap_or(0)
    }
}

/// One holder's place; given back when dropped.
#[derive(Debug)]
pub struct KeyedPermit<K: Hash + Eq + Clone> {
    limit: Arc<KeyedLimit<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for KeyedPermit<K> {
    fn drop(&mut self) {
        let mut counts = self.limit.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_limit_and_permits_come_back() {
        let limit = KeyedLimit::new(2);
        let a1 = limit.try_acquire("a").unwrap();
        let _a2 = limit.try_acquire("a").unwrap();
        assert!(
            limit.try_acquire("a").is_none(),
            "a third for `a` is refused"
        );
        let _b = limit.try_acquire("b").expect("`b` is not held back by `a`");
        drop(a1);
        assert_eq!(limit.held(&"a"), 1);
        assert!(limit.try_acquire("a").is_some());
        drop(_b);
        assert_eq!(limit.held(&"b"), 0);
        assert!(
            limit.counts.lock().unwrap().get(&"b").is_none(),
            "no empty keys kept"
        );
    }
}
