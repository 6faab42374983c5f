//! File watch: the controller names paths, the agent watches them with `notify` (inotify on
//! Linux, recursive for directories), debounces what the kernel reports, and streams each change
//! as an [`AgentEvent::FileChanged`].
//!
//! The [`WatchRegistry`] lives as long as the agent, not a session: a watch keeps running while
//! the agent reconnects, and the changes it sees meanwhile wait in a bounded buffer
//! ([`MAX_BUFFERED_EVENTS`]) until a session sends them. When the buffer is full, new changes are
//! dropped and counted, and the count is logged. Nothing runs while no watch exists; each watch
//! costs one inotify instance, its event thread (asleep until the kernel reports something) and
//! the debouncer's thread, which wakes twice a second.
//!
//! A rename the debouncer can pair (both names inside the watch) is reported as two `Renamed`
//! events, the old path first, then the new one; a file moved out of or into the watch is one
//! `Renamed` event for the name that was seen.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use cordon_protocol::message::{
    AgentEvent, AgentMessage, FileChangeKind, TaskError, TaskErrorCode, TaskOutput,
};
use notify::{
    event::{ModifyKind, RenameMode},
    EventKind, RecommendedWatcher, RecursiveMode,
};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, RecommendedCache};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{
    gate::{Gate, Index, Want},
    io_error, task_error,
};

/// Changes held for the controller while no session takes them; beyond this they are dropped.
pub const MAX_BUFFERED_EVENTS: usize = 10_000;
/// Watches an agent keeps at once.
pub const MAX_WATCHES: usize = 32;
/// Paths one watch may name.
pub const MAX_PATHS_PER_WATCH: usize = 64;
/// Longest watch id accepted (the controller uses UUIDs).
pub const MAX_WATCH_ID_LEN: usize = 128;
/// Changes to one path within this window are reported once.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// How often the debouncer looks for changes whose window has closed.
const DEBOUNCE_TICK: Duration = Duration::from_millis(500);
/// Least time between two "events were dropped" log lines.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

type Debouncer = notify_debouncer_full::Debouncer<RecommendedWatcher, RecommendedCache>;

/// Every watch the agent runs, and the changes they saw that no session has sent yet. Cheap to
/// clone: clones share the same watches and buffer.
#[derive(Clone)]
pub struct WatchRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    watches: Mutex<HashMap<String, ActiveWatch>>,
    sink: Arc<Sink>,
    outgoing: tokio::sync::Mutex<Outgoing>,
}

struct ActiveWatch {
    paths: Vec<PathBuf>,
    // Dropping it stops the watch (the debouncer's thread ends at its next tick).
    _debouncer: Debouncer,
}

/// The producing end of the buffer, shared with every watch's debouncer thread.
struct Sink {
    tx: mpsc::Sender<AgentMessage>,
    capacity: usize,
    /// Changes dropped because the buffer was full, not yet logged.
    dropped: AtomicU64,
}

/// The consuming end, taken by whichever session is connected.
struct Outgoing {
    rx: mpsc::Receiver<AgentMessage>,
    /// A change whose sending failed as its session died; sent first by the next session.
    retry: Option<AgentMessage>,
    last_drop_report: Option<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for WatchRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchRegistry {
    /// A registry with no watches and a buffer of [`MAX_BUFFERED_EVENTS`].
    pub fn new() -> Self {
        Self::with_capacity(MAX_BUFFERED_EVENTS)
    }

    /// A registry whose buffer holds `capacity` changes (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        Self {
            inner: Arc::new(Inner {
                watches: Mutex::new(HashMap::new()),
                sink: Arc::new(Sink {
                    tx,
                    capacity,
                    dropped: AtomicU64::new(0),
                }),
                outgoing: tokio::sync::Mutex::new(Outgoing {
                    rx,
                    retry: None,
                    last_drop_report: None,
                }),
            }),
        }
    }

    /// Starts watch `watch_id` on `paths` (recursively for directories). A watch with the same
    /// id is replaced, or kept as it is when it already watches the same paths, so the
    /// controller may send the same watch again after a reconnect.
    ///
    /// Each path is opened through `gate` first (a denied one fails the watch), and every change
    /// is checked against it before it is reported: a recursive watch on a parent directory
    /// never reports what happens inside a denied one.
    pub async fn watch(
        &self,
        watch_id: String,
        paths: Vec<String>,
        gate: Gate,
    ) -> Result<TaskOutput, TaskError> {
        let paths = {
            let gate = gate.clone();
            let id = watch_id.clone();
            tokio::task::spawn_blocking(move || check_request(&id, &paths, &gate.index()))
                .await
                .map_err(|e| {
                    task_error(TaskErrorCode::Internal, format!("checking watch: {e}"))
                })??
        };
        {
            let watches = lock(&self.inner.watches);
            match watches.get(&watch_id) {
                Some(existing) if existing.paths == paths => {
                    tracing::debug!(watch_id, "watch already running");
                    return Ok(TaskOutput::Done);
                }
                Some(_) => {}
                None if watches.len() >= MAX_WATCHES => return Err(too_many()),
                None => {}
            }
        }
        let sink = self.inner.sink.clone();
        let id = watch_id.clone();
        let watched = paths.clone();
        // Adding a recursive watch walks the tree: a blocking job.
        let debouncer = tokio::task::spawn_blocking(move || start(&id, &watched, sink, gate))
            .await
            .map_err(|e| task_error(TaskErrorCode::Internal, format!("starting watch: {e}")))??;
        let mut watches = lock(&self.inner.watches);
        if !watches.contains_key(&watch_id) && watches.len() >= MAX_WATCHES {
            return Err(too_many());
        }
        let replaced = watches.insert(
            watch_id.clone(),
            ActiveWatch {
                paths: paths.clone(),
                _debouncer: debouncer,
            },
        );
        drop(watches);
        tracing::info!(
            watch_id,
            paths = ?paths,
            replaced = replaced.is_some(),
            "file watch started"
        );
        Ok(TaskOutput::Done)
    }

    /// Stops watch `watch_id`. Stopping a watch that does not exist succeeds: the controller
    /// may ask twice.
    pub fn unwatch(&self, watch_id: &str) -> Result<TaskOutput, TaskError> {
        match lock(&self.inner.watches).remove(watch_id) {
            Some(_) => tracing::info!(watch_id, "file watch stopped"),
            None => tracing::debug!(watch_id, "unwatch for a watch that is not running"),
        }
        Ok(TaskOutput::Done)
    }

    /// Ids and paths of the running watches.
    pub fn active(&self) -> Vec<(String, Vec<PathBuf>)> {
        let mut out: Vec<_> = lock(&self.inner.watches)
            .iter()
            .map(|(id, w)| (id.clone(), w.paths.clone()))
            .collect();
        out.sort();
        out
    }

    /// The next change to send. Meant for one session at a time; cancel-safe, so a session
    /// loop can `select!` on it.
    pub async fn next_event(&self) -> Option<AgentMessage> {
        let mut out = self.inner.outgoing.lock().await;
        let report_due = out
            .last_drop_report
            .is_none_or(|at| at.elapsed() >= DROP_REPORT_INTERVAL);
        if report_due {
            let dropped = self.inner.sink.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    capacity = self.inner.sink.capacity,
                    "file-watch changes were dropped because the buffer was full"
                );
                out.last_drop_report = Some(Instant::now());
            }
        }
        if let Some(message) = out.retry.take() {
            return Some(message);
        }
        out.rx.recv().await
    }

    /// Keeps a change whose sending failed, to be sent first by the next session.
    pub async fn retry_later(&self, message: AgentMessage) {
        self.inner.outgoing.lock().await.retry = Some(message);
    }

    /// Changes dropped since the last report (for tests and diagnostics).
    pub fn dropped(&self) -> u64 {
        self.inner.sink.dropped.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn push(&self, message: AgentMessage) {
        self.inner.sink.push(message);
    }
}

impl Sink {
    fn push(&self, message: AgentMessage) {
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        capacity = self.capacity,
                        "file-watch buffer is full (controller unreachable or slow); dropping changes"
                    );
                }
            }
            // Only when the registry itself is gone, i.e. the agent is stopping.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

fn too_many() -> TaskError {
    task_error(
        TaskErrorCode::TooLarge,
        format!("the agent already runs {MAX_WATCHES} watches; stop one first"),
    )
}

/// Checks a watch request: a sensible id, 1 to [`MAX_PATHS_PER_WATCH`] valid, existing paths
/// that the gate's `index` allows. Duplicate paths count once.
fn check_request(
    watch_id: &str,
    paths: &[String],
    index: &Index,
) -> Result<Vec<PathBuf>, TaskError> {
    if watch_id.is_empty() || watch_id.len() > MAX_WATCH_ID_LEN {
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            format!("watch id must be 1 to {MAX_WATCH_ID_LEN} bytes"),
        ));
    }
    if paths.is_empty() {
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            "a watch needs at least one path",
        ));
    }
    if paths.len() > MAX_PATHS_PER_WATCH {
        return Err(task_error(
            TaskErrorCode::InvalidInput,
            format!(
                "a watch may name at most {MAX_PATHS_PER_WATCH} paths, not {}",
                paths.len()
            ),
        ));
    }
    let mut checked: Vec<PathBuf> = Vec::with_capacity(paths.len());
    for path in paths {
        index.open(path, Want::Follow)?;
        let path = PathBuf::from(path);
        if !checked.contains(&path) {
            checked.push(path);
        }
    }
    Ok(checked)
}

/// Starts a debounced recursive watch on `paths` whose changes go to `sink`.
fn start(
    watch_id: &str,
    paths: &[PathBuf],
    sink: Arc<Sink>,
    gate: Gate,
) -> Result<Debouncer, TaskError> {
    let id = watch_id.to_string();
    let handler = move |result: DebounceEventResult| match result {
        Ok(events) => {
            // One index per batch: the batch's changes are judged as the file system is now.
            let index = gate.index();
            for event in &events {
                if event.need_rescan() {
                    tracing::warn!(watch_id = %id, "the kernel dropped file-watch events (queue overflow); some changes were missed");
                }
                for message in messages(&id, event, &index) {
                    sink.push(message);
                }
            }
        }
        Err(errors) => {
            for error in errors {
                tracing::warn!(watch_id = %id, %error, "file watch error");
            }
        }
    };
    // Symlinks are not followed while walking a tree: a link to `/` must not watch everything.
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut debouncer = notify_debouncer_full::new_debouncer_opt(
        DEBOUNCE,
        Some(DEBOUNCE_TICK),
        handler,
        RecommendedCache::new(),
        config,
    )
    .map_err(|e| watch_error(Path::new("(inotify)"), e))?;
    for path in paths {
        debouncer
            .watch(path, RecursiveMode::Recursive)
            .map_err(|e| watch_error(path, e))?;
    }
    Ok(debouncer)
}

/// Maps a `notify` error on `path` to a task error a responder can act on.
fn watch_error(path: &Path, error: notify::Error) -> TaskError {
    // A recursive watch fails on the subdirectory that could not be added; name that one.
    let path = error.paths.first().map_or(path, PathBuf::as_path);
    match error.kind {
        notify::ErrorKind::PathNotFound => task_error(
            TaskErrorCode::NotFound,
            format!("{}: no such file or directory", path.display()),
        ),
        notify::ErrorKind::MaxFilesWatch => task_error(
            TaskErrorCode::TooLarge,
            format!(
                "{}: the inotify watch limit is reached (sysctl fs.inotify.max_user_watches); \
                 watch a smaller tree",
                path.display()
            ),
        ),
        notify::ErrorKind::Io(ref e) => io_error(path, e),
        _ => task_error(
            TaskErrorCode::Internal,
            format!("{}: cannot watch: {error}", path.display()),
        ),
    }
}

/// What a debounced event reports, as kinds and paths. Reads and opens are not changes.
fn changes(kind: &EventKind, paths: &[PathBuf]) -> Vec<(FileChangeKind, PathBuf)> {
    let each = |kind: FileChangeKind| paths.iter().map(|p| (kind, p.clone())).collect();
    match kind {
        EventKind::Create(_) => each(FileChangeKind::Created),
        EventKind::Remove(_) => each(FileChangeKind::Removed),
        // A paired rename carries (from, to): both are reported, in that order.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both))
        | EventKind::Modify(ModifyKind::Name(_)) => each(FileChangeKind::Renamed),
        EventKind::Modify(_) => each(FileChangeKind::Modified),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => Vec::new(),
    }
}

/// The messages for one debounced event, stamped with the wall-clock time it happened; changes
/// the gate's `index` does not permit are left out.
fn messages(watch_id: &str, event: &DebouncedEvent, index: &Index) -> Vec<AgentMessage> {
    let age = i64::try_from(event.time.elapsed().as_millis()).unwrap_or(0);
    let at_ms = crate::now_ms().saturating_sub(age);
    changes(&event.kind, &event.paths)
        .into_iter()
        .filter(|(_, path)| index.permits_change(path))
        .map(|(kind, path)| {
            AgentMessage::Event(AgentEvent::FileChanged {
                watch_id: watch_id.to_string(),
                path: path.to_string_lossy().into_owned(),
                kind,
                at_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, CreateKind, DataChange, RemoveKind};

    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn s(path: &Path) -> String {
        path.to_str().unwrap().to_string()
    }

    /// Waits for a change of `kind` to `path`, skipping others; panics after [`WAIT`].
    async fn expect_change(registry: &WatchRegistry, path: &Path, kind: FileChangeKind) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, registry.next_event()).await;
            match next {
                Ok(Some(AgentMessage::Event(AgentEvent::FileChanged {
                    watch_id,
                    path: p,
                    kind: k,
                    at_ms,
                }))) => {
                    assert!(
                        (crate::now_ms() - at_ms).abs() < 60_000,
                        "at_ms is wall time"
                    );
                    if p == s(path) && k == kind {
                        return watch_id;
                    }
                    seen.push((k, p));
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => panic!(
                    "no {kind:?} for {} within {WAIT:?}; saw {seen:?}",
                    path.display()
                ),
            }
        }
    }

    /// Collects changes for `window` and returns them.
    async fn drain(
        registry: &WatchRegistry,
        window: Duration,
    ) -> Vec<(String, FileChangeKind, String)> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(AgentMessage::Event(AgentEvent::FileChanged {
            watch_id,
            path,
            kind,
            ..
        }))) = tokio::time::timeout_at(deadline, registry.next_event()).await
        {
            out.push((watch_id, kind, path));
        }
        out
    }

    #[test]
    fn notify_kinds_map_to_change_kinds() {
        let a = PathBuf::from("/w/a");
        let b = PathBuf::from("/w/b");
        let one = |kind| changes(&kind, std::slice::from_ref(&a));
        assert_eq!(
            one(EventKind::Create(CreateKind::File)),
            vec![(FileChangeKind::Created, a.clone())]
        );
        assert_eq!(
            one(EventKind::Modify(ModifyKind::Data(DataChange::Content))),
            vec![(FileChangeKind::Modified, a.clone())]
        );
        assert_eq!(
            one(EventKind::Modify(ModifyKind::Metadata(
                notify::event::MetadataKind::Permissions
            ))),
            vec![(FileChangeKind::Modified, a.clone())]
        );
        assert_eq!(
            one(EventKind::Remove(RemoveKind::Any)),
            vec![(FileChangeKind::Removed, a.clone())]
        );
        assert_eq!(
            one(EventKind::Modify(ModifyKind::Name(RenameMode::From))),
            vec![(FileChangeKind::Renamed, a.clone())]
        );
        assert_eq!(
            changes(
                &EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &[a.clone(), b.clone()]
            ),
            vec![
                (FileChangeKind::Renamed, a.clone()),
                (FileChangeKind::Renamed, b.clone())
            ],
            "old name first, then the new"
        );
        assert!(one(EventKind::Access(AccessKind::Any)).is_empty());
        assert!(one(EventKind::Other).is_empty());
    }

    #[tokio::test]
    async fn bad_requests_are_refused_with_their_reason() {
        let registry = WatchRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let ok = s(dir.path());
        for (id, paths, code) in [
            (
                "w",
                vec!["relative/dir".to_string()],
                TaskErrorCode::InvalidInput,
            ),
            (
                "w",
                vec!["/tmp/../etc".to_string()],
                TaskErrorCode::InvalidInput,
            ),
            (
                "w",
                vec!["/tmp/a\0b".to_string()],
                TaskErrorCode::InvalidInput,
            ),
            ("w", vec![], TaskErrorCode::InvalidInput),
            ("", vec![ok.clone()], TaskErrorCode::InvalidInput),
            (
                "w",
                vec![ok.clone(), "/definitely/not/here".into()],
                TaskErrorCode::NotFound,
            ),
            (
                "w",
                vec![ok.clone(); MAX_PATHS_PER_WATCH + 1],
                TaskErrorCode::InvalidInput,
            ),
        ] {
            let err = registry
                .watch(id.into(), paths.clone(), Gate::none())
                .await
                .unwrap_err();
            assert_eq!(err.code, code, "{paths:?}: {}", err.message);
        }
        let err = registry
            .watch(
                "w".into(),
                vec!["/definitely/not/here".into()],
                Gate::none(),
            )
            .await
            .unwrap_err();
        assert!(
            err.message.contains("/definitely/not/here"),
            "{}",
            err.message
        );
        assert!(
            registry.active().is_empty(),
            "a refused watch leaves nothing running"
        );
    }

    #[tokio::test]
    async fn changes_in_a_watched_tree_are_reported_with_their_kind() {
        let registry = WatchRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let out = registry
            .watch("w1".into(), vec![s(dir.path())], Gate::none())
            .await
            .unwrap();
        assert_eq!(out, TaskOutput::Done);

        let file = dir.path().join("new.txt");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            expect_change(&registry, &file, FileChangeKind::Created).await,
            "w1"
        );

        std::fs::write(&file, b"changed").unwrap();
        expect_change(&registry, &file, FileChangeKind::Modified).await;

        // Recursive: a file in a subdirectory that existed when the watch started.
        let deep = sub.join("deep.txt");
        std::fs::write(&deep, b"x").unwrap();
        expect_change(&registry, &deep, FileChangeKind::Created).await;

        let renamed = dir.path().join("renamed.txt");
        std::fs::rename(&file, &renamed).unwrap();
        expect_change(&registry, &file, FileChangeKind::Renamed).await;

        std::fs::remove_file(&renamed).unwrap();
        expect_change(&registry, &renamed, FileChangeKind::Removed).await;
    }

    #[tokio::test]
    async fn a_watch_on_a_parent_reports_nothing_inside_denied_directories() {
        let registry = WatchRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        let marked = dir.path().join("marked");
        std::fs::create_dir(&secret).unwrap();
        std::fs::create_dir(&marked).unwrap();
        std::fs::write(
            marked.join(cordon_protocol::collect::PRIVATE_DIR_MARKER),
            b"",
        )
        .unwrap();
        let gate = Gate::new(&[s(&secret)], None);
        // The denied directory itself cannot be watched.
        let err = registry
            .watch("denied".into(), vec![s(&secret)], gate.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code, TaskErrorCode::PermissionDenied, "{}", err.message);
        registry
            .watch("w".into(), vec![s(dir.path())], gate)
            .await
            .unwrap();
        for inside in [secret.join("new.key"), marked.join("ca.key")] {
            std::fs::write(&inside, b"k").unwrap();
            std::fs::write(&inside, b"changed").unwrap();
            std::fs::rename(&inside, inside.with_extension("old")).unwrap();
        }
        let outside = dir.path().join("after.txt");
        std::fs::write(&outside, b"x").unwrap();
        // Well past the debounce: every change above has been reported or left out by now.
        let seen = drain(&registry, Duration::from_secs(3)).await;
        assert!(
            seen.iter().any(|(_, _, p)| *p == s(&outside)),
            "the free file's change was reported: {seen:?}"
        );
        for (_, _, path) in &seen {
            assert!(
                !path.contains("secret") && !path.contains("marked"),
                "reported a change inside a denied directory: {seen:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_same_watch_again_is_kept_and_new_paths_replace_it() {
        let registry = WatchRegistry::new();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        registry
            .watch("w".into(), vec![s(a.path())], Gate::none())
            .await
            .unwrap();
        registry
            .watch("w".into(), vec![s(a.path())], Gate::none())
            .await
            .unwrap();
        assert_eq!(
            registry.active(),
            vec![("w".to_string(), vec![a.path().to_path_buf()])]
        );

        registry
            .watch("w".into(), vec![s(b.path())], Gate::none())
            .await
            .unwrap();
        assert_eq!(
            registry.active(),
            vec![("w".to_string(), vec![b.path().to_path_buf()])]
        );
        std::fs::write(a.path().join("old"), b"x").unwrap();
        let fresh = b.path().join("fresh");
        std::fs::write(&fresh, b"x").unwrap();
        expect_change(&registry, &fresh, FileChangeKind::Created).await;
        let rest = drain(&registry, Duration::from_millis(1500)).await;
        assert!(
            rest.iter().all(|(_, _, p)| !p.starts_with(&s(a.path()))),
            "the replaced watch is gone: {rest:?}"
        );
    }

    #[tokio::test]
    async fn unwatch_stops_changes_and_is_idempotent() {
        let registry = WatchRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        registry
            .watch("w".into(), vec![s(dir.path())], Gate::none())
            .await
            .unwrap();
        let first = dir.path().join("first");
        std::fs::write(&first, b"x").unwrap();
        expect_change(&registry, &first, FileChangeKind::Created).await;

        assert_eq!(registry.unwatch("w"), Ok(TaskOutput::Done));
        assert_eq!(registry.unwatch("w"), Ok(TaskOutput::Done), "twice is fine");
        assert!(registry.active().is_empty());
        std::fs::write(dir.path().join("after"), b"x").unwrap();
        let seen = drain(&registry, DEBOUNCE * 3).await;
        assert!(seen.is_empty(), "no changes after unwatch: {seen:?}");
    }

    #[tokio::test]
    async fn a_full_buffer_drops_and_counts_and_a_failed_send_is_retried() {
        let registry = WatchRegistry::with_capacity(3);
        let change = |n: i64| {
            AgentMessage::Event(AgentEvent::FileChanged {
                watch_id: "w".into(),
                path: format!("/f{n}"),
                kind: FileChangeKind::Created,
                at_ms: n,
            })
        };
        for n in 0..5 {
            registry.push(change(n));
        }
        assert_eq!(registry.dropped(), 2);
        let first = registry.next_event().await.unwrap();
        assert_eq!(first, change(0), "the oldest change comes first");
        assert_eq!(registry.dropped(), 0, "the count was reported");
        registry.retry_later(first.clone()).await;
        assert_eq!(registry.next_event().await, Some(change(0)));
        assert_eq!(registry.next_event().await, Some(change(1)));
        assert_eq!(registry.next_event().await, Some(change(2)));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), registry.next_event())
                .await
                .is_err(),
            "the dropped ones never arrive"
        );
    }

    #[tokio::test]
    async fn watches_are_bounded() {
        let registry = WatchRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        for n in 0..MAX_WATCHES {
            registry
                .watch(format!("w{n}"), vec![s(dir.path())], Gate::none())
                .await
                .unwrap();
        }
        let err = registry
            .watch("one-more".into(), vec![s(dir.path())], Gate::none())
            .await
            .unwrap_err();
        assert_eq!(err.code, TaskErrorCode::TooLarge);
        // Replacing an existing one is still allowed.
        let other = tempfile::tempdir().unwrap();
        registry
            .watch("w0".into(), vec![s(other.path())], Gate::none())
            .await
            .unwrap();
        assert_eq!(registry.active().len(), MAX_WATCHES);
    }
}
