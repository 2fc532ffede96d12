//! Reloads when the config file or a plugin changes on disk.
//!
//! The folders holding the watched files are watched (not the files), so a
//! change is seen however it was written: in place, or to a temporary file
//! renamed over the old one as editors and `cp`-then-`mv` deploys do.
//! Changes are debounced — a reload runs once the watched files have been
//! quiet for `server.watch_debounce_ms` — and after each reload the set of
//! watched files is recomputed, since the config may name new plugins.
//!
//! Only events naming a watched file (the config, a configured plugin, or
//! a name renamed onto one of them) start or extend the debounce. Other
//! files in the same folders are ignored: a server log beside the config,
//! written every few milliseconds, once held every reload back for as
//! long as it kept growing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{RecursiveMode, Watcher as _};
use switchyard_log::EventLog;
use tokio::sync::{mpsc, watch};

use crate::registry::Registry;

/// Watches `registry`'s files until `shutdown` turns true.
///
/// # Errors
///
/// When the platform's file watcher cannot be created.
pub fn spawn<L: EventLog>(
    registry: Arc<Registry<L>>,
    debounce: Duration,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = tx.send(event);
        }
    })?;
    tokio::spawn(run(registry, watcher, rx, debounce, shutdown));
    Ok(())
}

async fn run<L: EventLog>(
    registry: Arc<Registry<L>>,
    mut watcher: notify::RecommendedWatcher,
    mut events: mpsc::UnboundedReceiver<notify::Event>,
    debounce: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let mut files = registry.watched_files().await;
    let mut dirs = watch_dirs(&mut watcher, &BTreeSet::new(), &files);
    let stop = crate::stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            event = events.recv() => match event {
                Some(e) if relevant(&e, &files) => {}
                Some(_) => continue,
                None => return,
            },
        }
        // Let the writes settle: editors and deploy scripts touch a file
        // several times.
        let mut quiet_until = tokio::time::Instant::now() + debounce;
        loop {
            match tokio::time::timeout_at(quiet_until, events.recv()).await {
                Ok(Some(e)) if relevant(&e, &files) => quiet_until = tokio::time::Instant::now() + debounce,
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => break,
            }
        }
        tracing::info!("config or plugin changed on disk; reloading");
        // The outcome is logged and counted by the registry.
        let _ = registry.reload().await;
        files = registry.watched_files().await;
        dirs = watch_dirs(&mut watcher, &dirs, &files);
    }
}

/// Whether `event` may change one of `files`: a create, write, rename or
/// removal naming it. Reads and metadata changes are ignored (a reload
/// reads the files itself).
fn relevant(event: &notify::Event, files: &[PathBuf]) -> bool {
    let kind = match event.kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(notify::event::AccessKind::Close(notify::event::AccessMode::Write)) => true,
        _ => false,
    };
    kind && event.paths.iter().any(|p| files.iter().any(|f| same_file(p, f)))
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || (a.file_name() == b.file_name() && canonical_dir(a) == canonical_dir(b))
}

fn canonical_dir(p: &Path) -> Option<PathBuf> {
    p.parent().and_then(|d| std::fs::canonicalize(if d.as_os_str().is_empty() { Path::new(".") } else { d }).ok())
}

/// Watches the folders of `files`, and stops watching folders in `old`
/// that no longer hold one. Returns the folders now watched.
fn watch_dirs(
    watcher: &mut notify::RecommendedWatcher,
    old: &BTreeSet<PathBuf>,
    files: &[PathBuf],
) -> BTreeSet<PathBuf> {
    let want: BTreeSet<PathBuf> = files.iter().filter_map(|f| canonical_dir(f)).collect();
    for dir in old.difference(&want) {
        let _ = watcher.unwatch(dir);
    }
    let mut watching = BTreeSet::new();
    for dir in &want {
        if old.contains(dir) {
            watching.insert(dir.clone());
            continue;
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                watching.insert(dir.clone());
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch folder; changes there need `switchyard reload`")
            }
        }
    }
    watching
}
