//! Names kept once. A publisher holds tens of thousands of incidents and each target's last
//! runs, whose target, probe, location, served model and cause are a few distinct strings
//! per target: each is one shared allocation instead of one per record.

use std::collections::HashSet;
use std::sync::Arc;

/// A set of shared names: [`Names::get`] gives the one copy of each.
#[derive(Debug, Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    /// An empty set.
    pub fn new() -> Names {
        Names::default()
    }

    /// The shared copy of `name`, made at its first sight.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(kept) = self.0.get(name) {
            return Arc::clone(kept);
        }
        let kept: Arc<str> = Arc::from(name);
        self.0.insert(Arc::clone(&kept));
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_kept_once() {
        let mut names = Names::new();
        let a = names.get("provider/model");
        let b = names.get(&String::from("provider/model"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*names.get("other"), "other");
        assert!(!Arc::ptr_eq(&a, &names.get("other")));
    }
}
