//! State the API creates at run time (owned access keys, revocations, token generations), behind
//! a [`Store`] trait. The embedded [`FileStore`] keeps it in one JSON file in the state directory,
//! written atomically; a Kubernetes-backed store can implement the same trait.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use kubegate_api::AccessKeyScope;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::error::StoreError;

/// An access key created through the API. Only the SHA-256 digest of the key is kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StoredAccessKey {
    /// Object name (unique).
    pub name: String,
    /// Owner user name.
    pub user: String,
    /// The owner's UID when the key was made: the key works only while the user of that name
    /// still has it (a name given to someone else under a new UID does not inherit the key).
    /// Absent in keys stored before kubegate recorded it; those follow the name alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_uid: Option<String>,
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
    /// Loft key type (`User`, `Login`, …).
    #[serde(default)]
    pub key_type: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Scope narrowing the owner's permissions.
    #[serde(default)]
    pub scope: Option<AccessKeyScope>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Expiry, Unix seconds (none = never).
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// A disabled key is kept but refused.
    #[serde(default)]
    pub disabled: bool,
    /// For a key made with a token: the UID of the access key behind that token. The key
    /// works only while that one does (not deleted, disabled or expired, nor itself made from
    /// a key that is gone), as the tokens made from it do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// UID of the object.
    pub uid: String,
}

impl StoredAccessKey {
    /// The `keyType` of the keys password logins create (sessions).
    pub const LOGIN: &'static str = "Login";

    /// Whether the key has not expired at `now` (Unix seconds).
    pub fn is_live_at(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    /// Whether a password login created the key.
    pub fn is_login(&self) -> bool {
        self.key_type == Self::LOGIN
    }

    /// A key of `user` for tests: the given type and times, everything else fixed.
    #[cfg(test)]
    pub(crate) fn for_test(
        name: &str,
        user: &str,
        key_type: &str,
        created_at: i64,
        expires_at: Option<i64>,
    ) -> Self {
        StoredAccessKey {
            name: name.into(),
            user: user.into(),
            user_uid: Some(user.into()),
            sha256: "0".repeat(64),
            key_type: key_type.into(),
            display_name: None,
            description: None,
            scope: None,
            created_at,
            expires_at,
            disabled: false,
            parent: None,
            uid: "u1".into(),
        }
    }
}

/// A revoked token id, remembered until the token would have expired anyway.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// The token's `jti`.
    pub jti: String,
    /// When the token expires (Unix seconds); the entry can be dropped after that.
    pub expires_at: i64,
    /// The user the token was minted for (empty in state written before it was recorded):
    /// bounds the revocations one user can make (see [`MAX_REVOCATIONS_PER_USER`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
}

/// The most unexpired revocations one user's tokens may have. Each logout records one until
/// its session would have expired, and the state is rewritten whole on every change, so a
/// user logging in and out in a loop would otherwise grow it, and the cost of every later
/// change, without end. Past this, [`Store::revoke`] raises the user's token generation
/// instead, which revokes every token of the user at once, and forgets their revocations.
pub const MAX_REVOCATIONS_PER_USER: usize = 256;

/// What [`Store::revoke`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The token is revoked.
    Token,
    /// The user had [`MAX_REVOCATIONS_PER_USER`] revocations already: their token generation
    /// was raised to this value instead, revoking this token and every other of theirs.
    EveryTokenOfTheUser {
        /// The user's new token generation.
        generation: u64,
    },
}

/// Everything a store holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Owned access keys by name.
    #[serde(default)]
    pub access_keys: BTreeMap<String, StoredAccessKey>,
    /// Revoked token ids.
    #[serde(default)]
    pub revocations: Vec<Revocation>,
    /// Token generation per user; bumping it invalidates every token minted before.
    #[serde(default)]
    pub token_generations: BTreeMap<String, u64>,
}

/// Storage for API-created state, with change notification.
///
/// Methods return boxed futures so the trait stays object-safe (`Arc<dyn Store>`) and an
/// implementation may do network I/O.
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A consistent snapshot of the whole state, shared: an implementation may hand the same
    /// `Arc` to every reader until the state changes.
    fn snapshot(&self) -> BoxFuture<'_, Result<Arc<State>, StoreError>>;
    /// Creates an access key; fails if the name exists. Keys that expired before the new key's
    /// `created_at` may be forgotten on the way (the file store does: every password login
    /// creates a key, and without that the state would only grow).
    fn create_access_key(&self, key: StoredAccessKey) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Deletes an access key; `false` if there was none. With `uid`, only the key of that UID
    /// (kube's `Preconditions.UID`): whoever decided on a key they looked at earlier deletes
    /// that key, never one made since under the same name, perhaps someone else's.
    fn delete_access_key<'a>(
        &'a self,
        name: &'a str,
        uid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Records a revoked token id (and forgets revocations that have expired), or, when its
    /// user has [`MAX_REVOCATIONS_PER_USER`] already, raises the user's token generation
    /// instead.
    fn revoke(
        &self,
        revocation: Revocation,
        now: i64,
    ) -> BoxFuture<'_, Result<Revoked, StoreError>>;
    /// Bumps a user's token generation and returns the new value.
    fn bump_token_generation<'a>(&'a self, user: &'a str)
    -> BoxFuture<'a, Result<u64, StoreError>>;
    /// A receiver that changes whenever the state changes.
    fn subscribe(&self) -> watch::Receiver<u64>;
}

/// The embedded store: `<state dir>/state.json`, rewritten atomically on every change
/// (temporary file, fsync, rename, fsync of the directory), so a crash leaves either the old or
/// the new state, never half of one.
///
/// Changes are written by a thread of the store's own, one at a time, in the order they were
/// made. An fsync can take milliseconds, far longer under write-back pressure, and on the
/// gateway's runtime (one thread when it has one CPU) a change written where it was made would
/// stop every request of every connection for that long. Readers never wait for a write: a
/// [`snapshot`](Store::snapshot) is the last state written, shared, not copied. A change handed
/// to the writer is carried out whole even if whoever made it stops waiting (an HTTP/2 reset, a
/// timeout), so the file and the state in memory never part.
#[derive(Debug, Clone)]
pub struct FileStore {
    persisted: Arc<Persisted>,
    writer: Arc<Writer>,
}

/// What the writer thread and the readers share.
#[derive(Debug)]
struct Persisted {
    path: PathBuf,
    /// The state last written. Held only to take or replace the `Arc`, never across a write.
    state: Mutex<Arc<State>>,
    changes: watch::Sender<u64>,
}

/// A change waiting for the writer thread.
type Job = Box<dyn FnOnce(&Persisted) + Send>;

/// The way to the writer thread. The thread ends when the last [`FileStore`] handle is gone.
struct Writer {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl FileStore {
    /// Opens (or creates) the store in `dir` and starts its writer thread.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let (changes, _) = watch::channel(0);
        let persisted = Arc::new(Persisted {
            path,
            state: Mutex::new(Arc::new(state)),
            changes,
        });
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let writing = Arc::clone(&persisted);
        std::thread::Builder::new()
            .name("kubegate-store".into())
            .spawn(move || {
                for job in queue {
                    job(&writing);
                }
            })
            .map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                source,
            })?;
        Ok(FileStore {
            persisted,
            writer: Arc::new(Writer { jobs }),
        })
    }

    /// Hands `change` to the writer thread, which applies it to a copy of the state, persists
    /// the copy, then publishes it; the receiver gets what `change` returned. If persisting
    /// fails, the state is unchanged.
    fn submit<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |persisted: &Persisted| {
            // Nobody may be waiting any more; the change stands all the same.
            let _ = reply.send(persisted.apply(change));
        });
        self.writer.jobs.send(job).map_err(|_| self.writer_gone())?;
        Ok(answer)
    }

    /// [`submit`](Self::submit), then waits for the write.
    async fn update<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(change)?.await.map_err(|_| self.writer_gone())?
    }

    /// The writer thread ended early: only a panic inside a change does that.
    fn writer_gone(&self) -> StoreError {
        StoreError::Io {
            path: self.persisted.path.clone(),
            source: std::io::Error::other("the state store's writer thread has stopped"),
        }
    }

    fn snapshot_now(&self) -> Arc<State> {
        self.persisted.current()
    }
}

impl Persisted {
    fn current(&self) -> Arc<State> {
        Arc::clone(&self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs on the writer thread alone, so the state cannot change between reading it and
    /// replacing it.
    fn apply<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut next = State::clone(&self.current());
        let out = change(&mut next)?;
        write_atomically(&self.path, &next)?;
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        self.changes.send_modify(|n| *n += 1);
        Ok(out)
    }
}

fn write_atomically(path: &Path, state: &State) -> Result<(), StoreError> {
    use std::io::Write;
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| StoreError::Io { path: p, source }
    };
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    // Unique per write, not only per process: two stores on one directory in one process
    // (two gateways in one test binary, an embedding platform) must not write into each
    // other's half-written file.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".state.json.{}.{write}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(&bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if let Err(e) = written {
        // Each write has a file name of its own: one left behind on every failure (a full
        // disk, a failing one) would pile up for as long as the fault lasts.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is the commit: the file holds the new state now, so the change is made and
    // must be published, or the next change would start from the old state and undo it on
    // disk. A directory that cannot be synced only leaves the rename less durable.
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "syncing the state directory failed");
    }
    Ok(())
}

impl Store for FileStore {
    fn snapshot(&self) -> BoxFuture<'_, Result<Arc<State>, StoreError>> {
        Box::pin(async move { Ok(self.snapshot_now()) })
    }

    fn create_access_key(&self, key: StoredAccessKey) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.update(move |s| {
                let now = key.created_at;
                s.access_keys.retain(|_, k| k.is_live_at(now));
                if s.access_keys.contains_key(&key.name) {
                    return Err(StoreError::AlreadyExists {
                        kind: "accesskey",
                        name: key.name,
                    });
                }
                s.access_keys.insert(key.name.clone(), key);
                Ok(())
            })
            .await
        })
    }

    fn delete_access_key<'a>(
        &'a self,
        name: &'a str,
        uid: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        fn is_it(key: Option<&StoredAccessKey>, uid: Option<&str>) -> bool {
            key.is_some_and(|key| uid.is_none_or(|uid| key.uid == uid))
        }
        Box::pin(async move {
            // Most deletions of nothing are answered without a write.
            if !is_it(self.snapshot_now().access_keys.get(name), uid) {
                return Ok(false);
            }
            let (name, uid) = (name.to_owned(), uid.map(str::to_owned));
            self.update(move |s| {
                Ok(is_it(s.access_keys.get(&name), uid.as_deref())
                    && s.access_keys.remove(&name).is_some())
            })
            .await
        })
    }

    fn revoke(
        &self,
        revocation: Revocation,
        now: i64,
    ) -> BoxFuture<'_, Result<Revoked, StoreError>> {
        Box::pin(async move {
            self.update(move |s| {
                s.revocations
                    .retain(|r| r.expires_at > now && r.jti != revocation.jti);
                let user = &revocation.user;
                let held = if user.is_empty() {
                    0
                } else {
                    s.revocations.iter().filter(|r| &r.user == user).count()
                };
                if held >= MAX_REVOCATIONS_PER_USER {
                    let generation = s.token_generations.entry(user.clone()).or_insert(0);
                    *generation += 1;
                    let generation = *generation;
                    s.revocations.retain(|r| &r.user != user);
                    return Ok(Revoked::EveryTokenOfTheUser { generation });
                }
                s.revocations.push(revocation);
                Ok(Revoked::Token)
            })
            .await
        })
    }

    fn bump_token_generation<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let user = user.to_owned();
        Box::pin(async move {
            self.update(move |s| {
                let generation = s.token_generations.entry(user).or_insert(0);
                *generation += 1;
                Ok(*generation)
            })
            .await
        })
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.persisted.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> StoredAccessKey {
        StoredAccessKey::for_test(name, "alice", "User", 1, None)
    }

    /// Two stores on one directory, writing at once from two threads: each write has its own
    /// temporary file, so neither renames the other's half-written one away (which failed
    /// writes with `NotFound`, or published a torn file).
    #[test]
    fn two_stores_on_one_directory_write_at_once() {
        let dir = std::env::temp_dir().join(format!("kubegate-store-{}", uuid::Uuid::new_v4()));
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|prefix| {
                let store = FileStore::open(&dir).unwrap();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let name = format!("{prefix}{i}");
                        store
                            .submit(move |state| {
                                state.access_keys.insert(name.clone(), key(&name));
                                Ok(())
                            })?
                            .blocking_recv()
                            .map_err(|_| store.writer_gone())??;
                    }
                    Ok::<(), StoreError>(())
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap().unwrap();
        }
        let bytes = std::fs::read(dir.join("state.json")).unwrap();
        let state: State = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            state.access_keys.len(),
            200,
            "the last writer's state, whole"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Occupies the writer thread, as a slow fsync would, until the returned sender is
    /// dropped or sent to.
    fn hold_writer(store: &FileStore) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let job: Job = Box::new(move |_| {
            let _ = held.recv();
        });
        store.writer.jobs.send(job).unwrap();
        release
    }

    /// A write that takes long (an fsync under write-back pressure) holds neither the runtime
    /// nor readers. On a current-thread runtime, the gateway's with one CPU, a change waiting
    /// on the writer lets the thread's other tasks run, a snapshot answers at once with the
    /// state before the change, and the change lands when the writer is free.
    #[test]
    fn a_slow_write_holds_neither_the_runtime_nor_readers() {
        let dir = std::env::temp_dir().join(format!("kubegate-store-{}", uuid::Uuid::new_v4()));
        let store = FileStore::open(&dir).unwrap();
        let release = hold_writer(&store);
        let (seen, read) = std::sync::mpsc::channel();
        let writing = store;
        let runtime = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let reader = writing.clone();
                let create = tokio::spawn(async move { writing.create_access_key(key("a")).await });
                // On this thread, this runs only if the create gave the thread up.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let before = reader.snapshot().await.unwrap();
                seen.send(before.access_keys.len()).unwrap();
                create.await.unwrap()
            })
        });
        let keys_before = read
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the runtime ran other tasks and read the state while the write waited");
        assert_eq!(keys_before, 0, "the state before the change");
        release.send(()).unwrap();
        runtime.join().unwrap().unwrap();
        let reopened = FileStore::open(&dir).unwrap().snapshot_now();
        assert!(reopened.access_keys.contains_key("a"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A change whose caller stops waiting (a client's HTTP/2 reset drops the request's
    /// future) is still carried out whole: in the file and in memory alike, never in one only.
    #[tokio::test]
    async fn a_change_whose_caller_gives_up_still_lands_whole() {
        let dir = std::env::temp_dir().join(format!("kubegate-store-{}", uuid::Uuid::new_v4()));
        let store = FileStore::open(&dir).unwrap();
        let mut changes = store.subscribe();
        let release = hold_writer(&store);
        let given_up = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            store.create_access_key(key("a")),
        )
        .await;
        assert!(given_up.is_err(), "the writer was held");
        drop(release);
        changes.changed().await.unwrap();
        assert!(
            store
                .snapshot()
                .await
                .unwrap()
                .access_keys
                .contains_key("a")
        );
        let on_disk = FileStore::open(&dir).unwrap().snapshot_now();
        assert!(on_disk.access_keys.contains_key("a"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Readers share the state last written instead of copying it.
    #[tokio::test]
    async fn snapshots_share_the_state_until_it_changes() {
        let dir = std::env::temp_dir().join(format!("kubegate-store-{}", uuid::Uuid::new_v4()));
        let store = FileStore::open(&dir).unwrap();
        let first = store.snapshot().await.unwrap();
        assert!(Arc::ptr_eq(&first, &store.snapshot().await.unwrap()));
        store.bump_token_generation("alice").await.unwrap();
        let second = store.snapshot().await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.token_generations["alice"], 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn persists_and_reloads() {
        let dir = std::env::temp_dir().join(format!("kubegate-store-{}", uuid::Uuid::new_v4()));
        let store = FileStore::open(&dir).unwrap();
        let mut rx = store.subscribe();
        store.create_access_key(key("a")).await.unwrap();
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert!(matches!(
            store.create_access_key(key("a")).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(
            !rx.has_changed().unwrap(),
            "a refused change publishes nothing"
        );
        assert_eq!(store.bump_token_generation("alice").await.unwrap(), 1);
        assert_eq!(store.bump_token_generation("alice").await.unwrap(), 2);
        store
            .revoke(
                Revocation {
                    jti: "old".into(),
                    expires_at: 5,
                    user: "alice".into(),
                },
                0,
            )
            .await
            .unwrap();
        store
            .revoke(
                Revocation {
                    jti: "new".into(),
                    expires_at: 50,
                    user: "alice".into(),
                },
                10,
            )
            .await
            .unwrap();
        let reopened = FileStore::open(&dir).unwrap().snapshot().await.unwrap();
        assert_eq!(reopened.access_keys.len(), 1);
        assert_eq!(reopened.token_generations["alice"], 2);
        assert_eq!(
            reopened.revocations.len(),
            1,
            "expired revocations are forgotten"
        );
        assert!(
            !store.delete_access_key("a", Some("another")).await.unwrap(),
            "a UID precondition that does not hold deletes nothing"
        );
        assert!(store.delete_access_key("a", Some("u1")).await.unwrap());
        assert!(!store.delete_access_key("a", None).await.unwrap());
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A user logging in and out in a loop cannot grow the state without end: past
    /// [`MAX_REVOCATIONS_PER_USER`], the user's token generation goes up instead and their
    /// revocations go. Another user's stay; an entry of unknown user (older state) is not
    /// counted against anyone.
    #[tokio::test]
    async fn one_users_revocations_are_bounded() {
        let dir = std::env::temp_dir().join(format!("kubegate-store-{}", uuid::Uuid::new_v4()));
        let store = FileStore::open(&dir).unwrap();
        let revoke = |jti: String, user: &str| {
            store.revoke(
                Revocation {
                    jti,
                    expires_at: 1_000,
                    user: user.into(),
                },
                0,
            )
        };
        assert_eq!(revoke("bob-1".into(), "bob").await.unwrap(), Revoked::Token);
        assert_eq!(revoke("old".into(), "").await.unwrap(), Revoked::Token);
        for i in 0..MAX_REVOCATIONS_PER_USER {
            assert_eq!(
                revoke(format!("alice-{i}"), "alice").await.unwrap(),
                Revoked::Token
            );
        }
        let state = store.snapshot().await.unwrap();
        assert_eq!(state.revocations.len(), MAX_REVOCATIONS_PER_USER + 2);
        assert_eq!(
            revoke("alice-last".into(), "alice").await.unwrap(),
            Revoked::EveryTokenOfTheUser { generation: 1 }
        );
        let state = store.snapshot().await.unwrap();
        assert_eq!(state.token_generations["alice"], 1);
        let left: Vec<_> = state.revocations.iter().map(|r| r.jti.as_str()).collect();
        assert_eq!(left, ["bob-1", "old"]);
        // The count starts again under the new generation.
        assert_eq!(
            revoke("alice-next".into(), "alice").await.unwrap(),
            Revoked::Token
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn creating_a_key_forgets_the_ones_expired_by_then() {
        let dir = std::env::temp_dir().join(format!("kubegate-store-{}", uuid::Uuid::new_v4()));
        let store = FileStore::open(&dir).unwrap();
        let expiring = |name: &str, created_at: i64, expires_at: Option<i64>| {
            StoredAccessKey::for_test(name, "alice", "User", created_at, expires_at)
        };
        for k in [
            expiring("gone", 1, Some(5)),
            expiring("later", 1, Some(50)),
            expiring("forever", 1, None),
        ] {
            store.create_access_key(k).await.unwrap();
        }
        store
            .create_access_key(expiring("new", 10, None))
            .await
            .unwrap();
        let names: Vec<String> = FileStore::open(&dir)
            .unwrap()
            .snapshot()
            .await
            .unwrap()
            .access_keys
            .keys()
            .cloned()
            .collect();
        assert_eq!(names, ["forever", "later", "new"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A write that fails (here its rename: `state.json` became a directory) changes
    /// nothing, in memory or on disk, and leaves no temporary file behind.
    #[tokio::test]
    async fn a_failed_write_changes_nothing_and_leaves_nothing() {
        let dir = std::env::temp_dir().join(format!("kubegate-store-{}", uuid::Uuid::new_v4()));
        let store = FileStore::open(&dir).unwrap();
        std::fs::create_dir_all(dir.join("state.json/blocked")).unwrap();
        for _ in 0..3 {
            assert!(matches!(
                store.create_access_key(key("a")).await,
                Err(StoreError::Io { .. })
            ));
        }
        assert!(store.snapshot().await.unwrap().access_keys.is_empty());
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["state.json"], "no temporary file is left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_reset() {
        let dir = std::env::temp_dir().join(format!("kubegate-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("state.json"), b"{not json").unwrap();
        assert!(matches!(
            FileStore::open(&dir),
            Err(StoreError::Corrupt { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
