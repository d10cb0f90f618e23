//! Crash-loop protection for deployments. Before this server loads a
//! revision's versions it notes the revision in a small file under the data
//! directory, and clears the note when the load ends (loaded or failed) and at
//! a clean shutdown. A note still there at the next start means the process
//! died while loading that revision (an abort, the OOM killer, SIGKILL): the
//! revision is then skipped on this server until the endpoint gets a new one,
//! so that a model that kills the server cannot kill it at every start. The
//! endpoint serves its last revision that loads and reports why.
//!
//! The file is per server (each replica has its own data directory): one
//! replica's crash says nothing about another's memory.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const FILE: &str = "loading.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionId {
    pub endpoint: String,
    pub revision: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// What was being loaded; `Some` at a start means the last process died in it.
    loading: Option<RevisionId>,
    /// Revisions skipped because a start died loading them.
    crashed: Vec<RevisionId>,
}

pub struct LoadJournal {
    /// `None`: not kept (in-memory servers for tests and embedding).
    path: Option<PathBuf>,
    state: Mutex<State>,
}

impl LoadJournal {
    /// Reads the journal in `dir`; a load left unfinished becomes a crashed revision.
    pub fn open(dir: &Path) -> LoadJournal {
        let path = dir.join(FILE);
        let mut state: State = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "unreadable load journal: starting a new one");
                State::default()
            }),
            Err(_) => State::default(),
        };
        if let Some(died) = state.loading.take() {
            tracing::error!(
                endpoint = %died.endpoint,
                revision = died.revision,
                "the last start died while loading this revision: it is skipped on this server"
            );
            if !state.crashed.contains(&died) {
                state.crashed.push(died);
            }
        }
        let journal = LoadJournal { path: Some(path), state: Mutex::new(state) };
        journal.save();
        journal
    }

    /// A journal that is not kept on disk.
    pub fn in_memory() -> LoadJournal {
        LoadJournal { path: None, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a start died while loading this revision.
    pub fn crashed(&self, endpoint: &str, revision: u64) -> bool {
        self.lock().crashed.iter().any(|c| c.endpoint == endpoint && c.revision == revision)
    }

    /// Notes the revision about to load (written before any of it loads).
    pub fn begin(&self, endpoint: &str, revision: u64) {
        self.lock().loading = Some(RevisionId { endpoint: endpoint.to_owned(), revision });
        self.save();
    }

    /// The load ended, whichever way; also called at a clean shutdown.
    pub fn end(&self) {
        let was = self.lock().loading.take();
        if was.is_some() {
            self.save();
        }
    }

    /// Forgets crashed revisions that are no longer their endpoint's current one.
    pub fn retain_current(&self, current: &dyn Fn(&str) -> Option<u64>) {
        let mut state = self.lock();
        let before = state.crashed.len();
        state.crashed.retain(|c| current(&c.endpoint) == Some(c.revision));
        let changed = state.crashed.len() != before;
        drop(state);
        if changed {
            self.save();
        }
    }

    /// Written whole to a temporary file, synced, then renamed over the old:
    /// a crash leaves the old journal or the new one, never half of one.
    fn save(&self) {
        let Some(path) = &self.path else { return };
        let text = match serde_json::to_vec(&*self.lock()) {
            Ok(t) => t,
            Err(_) => return,
        };
        let tmp = path.with_extension("json.tmp");
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "could not write the load journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_left_unfinished_is_skipped_at_the_next_start_until_the_endpoint_moves_on() {
        let dir = std::env::temp_dir().join(format!("vigil-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = LoadJournal::open(&dir);
        first.begin("ep", 2);
        drop(first); // the process dies here: `end` never runs
        let second = LoadJournal::open(&dir);
        assert!(second.crashed("ep", 2));
        assert!(!second.crashed("ep", 1));
        // A load that ends is not remembered.
        second.begin("ep", 1);
        second.end();
        let third = LoadJournal::open(&dir);
        assert!(third.crashed("ep", 2) && !third.crashed("ep", 1));
        third.retain_current(&|e| (e == "ep").then_some(2));
        assert!(third.crashed("ep", 2));
        third.retain_current(&|e| (e == "ep").then_some(3));
        assert!(!LoadJournal::open(&dir).crashed("ep", 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
