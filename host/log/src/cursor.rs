//! Per-destination cursors: how far into the log each destination has
//! finished, persisted under `data_dir/cursors`, and the minimum over all
//! destinations that tells the log what it may delete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::Seq;

/// The cursors of every destination, shared by their workers.
#[derive(Clone)]
pub struct Cursors {
    dir: PathBuf,
    positions: Arc<Mutex<HashMap<String, Seq>>>,
}

impl Cursors {
    /// Opens the cursor folder, creating it.
    ///
    /// # Errors
    ///
    /// When the folder cannot be created.
    ///
    /// Every saved cursor is registered, also of destinations no longer in
    /// the config: the events they have not delivered are kept until
    /// [`Cursors::remove`].
    pub fn open(dir: &Path) -> std::io::Result<Cursors> {
        std::fs::create_dir_all(dir)?;
        let mut positions = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "cursor")
                && let Some(name) = path.file_stem().and_then(|s| s.to_str())
                && let Some(at) = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok())
            {
                positions.insert(name.to_owned(), at);
            }
        }
        Ok(Cursors { dir: dir.to_owned(), positions: Arc::new(Mutex::new(positions)) })
    }

    /// Every registered destination.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.positions.lock().map(|p| p.keys().cloned().collect()).unwrap_or_default();
        names.sort();
        names
    }

    /// Deletes `name`'s cursor and returns the new minimum over the rest.
    ///
    /// # Errors
    ///
    /// When the file cannot be deleted.
    pub fn remove(&self, name: &str) -> std::io::Result<Option<Seq>> {
        match std::fs::remove_file(self.path(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut p = self.positions.lock().map_err(|_| std::io::Error::other("cursor lock poisoned"))?;
        p.remove(name);
        Ok(p.values().copied().min())
    }

    /// The saved cursor of `name`, or `default` for a new destination. The
    /// destination is registered, holding back deletion from there.
    ///
    /// A new destination's cursor is written at once: were it written only
    /// after its first batch, a crash before then would restart it at the
    /// log's end, past the events it had not delivered yet.
    ///
    /// # Errors
    ///
    /// When a new cursor cannot be written.
    pub fn load(&self, name: &str, default: Seq) -> std::io::Result<Seq> {
        let saved = std::fs::read_to_string(self.path(name)).ok().and_then(|s| s.trim().parse().ok());
        let at = match saved {
            Some(at) => at,
            None => {
                self.save(name, default)?;
                default
            }
        };
        if let Ok(mut p) = self.positions.lock() {
            p.insert(name.to_owned(), at);
        }
        Ok(at)
    }

    /// Persists `name`'s cursor (write then rename: a crash leaves the old or
    /// the new value, never a torn one) and returns the minimum over all
    /// destinations.
    ///
    /// # Errors
    ///
    /// When the file cannot be written; the in-memory value is kept.
    pub fn save(&self, name: &str, at: Seq) -> std::io::Result<Seq> {
        let path = self.path(name);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, at.to_string())?;
        std::fs::rename(&tmp, &path)?;
        let mut p = self.positions.lock().map_err(|_| std::io::Error::other("cursor lock poisoned"))?;
        p.insert(name.to_owned(), at);
        Ok(p.values().copied().min().unwrap_or(at))
    }

    /// `name`'s cursor as last saved, if it is registered.
    pub fn position(&self, name: &str) -> Option<Seq> {
        self.positions.lock().ok().and_then(|p| p.get(name).copied())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cursor"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_cursor_is_persisted_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursors::open(dir.path()).unwrap();
        assert_eq!(c.load("hook", 40).unwrap(), 40);
        // After a crash, the log has grown; the destination resumes at 40.
        let c = Cursors::open(dir.path()).unwrap();
        assert_eq!(c.load("hook", 90).unwrap(), 40);
        assert_eq!(c.save("hook", 50).unwrap(), 50);
        assert_eq!(c.load("other", 45).unwrap(), 45);
        assert_eq!(c.save("hook", 60).unwrap(), 45, "the minimum holds back deletion");
    }

    #[test]
    fn a_removed_destination_holds_its_events_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursors::open(dir.path()).unwrap();
        c.load("kept", 10).unwrap();
        c.load("gone", 5).unwrap();
        // Restart with only `kept` configured: `gone` still holds the log.
        let c = Cursors::open(dir.path()).unwrap();
        assert_eq!(c.names(), vec!["gone".to_owned(), "kept".to_owned()]);
        assert_eq!(c.load("kept", 99).unwrap(), 10);
        assert_eq!(c.save("kept", 20).unwrap(), 5);
        assert_eq!(c.remove("gone").unwrap(), Some(20));
        assert_eq!(Cursors::open(dir.path()).unwrap().names(), vec!["kept".to_owned()]);
    }
}
