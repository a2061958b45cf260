//! Atomic file replacement: a reader sees the old file or the new one, never half of either.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` through a temporary file in the same directory, fsync and rename.
/// A symlink is followed so the link itself survives; an existing file keeps its permissions,
/// a new one gets `mode` (owner-only for anything holding credentials).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let io = |context: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    };
    let path = resolve_symlink(path).map_err(io("resolving", path))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io("creating directory", &dir))?;
    let existing_mode = existing_mode(&path);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = create_new(&tmp, existing_mode.unwrap_or(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        sync_dir(&dir);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io("writing", &path))
}

/// An exclusive `<file>.lock` beside a file, as client-go takes around kubeconfig writes, so two
/// concurrent read-modify-write cycles cannot lose each other's entries. Removed on drop.
#[derive(Debug)]
pub(crate) struct FileLock {
    path: PathBuf,
}

impl FileLock {
    /// Waits up to `wait` for the lock. A lock left behind by a crashed writer is reported, not
    /// broken: deciding it is stale needs a human.
    pub(crate) fn acquire(file: &Path, wait: std::time::Duration) -> Result<FileLock, Error> {
        let file = resolve_symlink(file).unwrap_or_else(|_| file.to_path_buf());
        let mut name = file
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        name.push(".lock");
        let path = file.with_file_name(name);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| Error::Io {
                context: "creating directory",
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let deadline = std::time::Instant::now() + wait;
        loop {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(FileLock { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if std::time::Instant::now() >= deadline {
                        return Err(Error::Io {
                            context: "another writer holds the lock (remove it if no writer is running)",
                            path,
                            source: e,
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(Error::Io {
                        context: "creating lock",
                        path,
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn resolve_symlink(path: &Path) -> std::io::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path),
        _ => Ok(path.to_path_buf()),
    }
}

#[cfg(unix)]
fn existing_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

#[cfg(not(unix))]
fn existing_mode(_path: &Path) -> Option<u32> {
    None
}

#[cfg(unix)]
fn create_new(path: &Path, mode: u32) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

#[cfg(not(unix))]
fn create_new(path: &Path, _mode: u32) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Makes the rename durable; best effort, some filesystems refuse to open a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_keeps_mode_and_follows_symlinks() {
        let dir = std::env::temp_dir().join(format!("kubegate-fsutil-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sub/config");
        write_atomic(&file, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"one");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o600
            );
            fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
            write_atomic(&file, b"two", 0o600).unwrap();
            assert_eq!(
                fs::metadata(&file).unwrap().permissions().mode() & 0o777,
                0o640
            );
            let link = dir.join("link");
            std::os::unix::fs::symlink(&file, &link).unwrap();
            write_atomic(&link, b"three", 0o600).unwrap();
            assert!(
                fs::symlink_metadata(&link)
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
            assert_eq!(fs::read(&file).unwrap(), b"three");
        }
        let leftovers: Vec<_> = fs::read_dir(dir.join("sub"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lock_is_exclusive_and_released() {
        let dir = std::env::temp_dir().join(format!("kubegate-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let file = dir.join("config");
        let held = FileLock::acquire(&file, std::time::Duration::ZERO).unwrap();
        assert!(dir.join("config.lock").exists());
        let err = FileLock::acquire(&file, std::time::Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("config.lock"), "{err}");
        drop(held);
        assert!(!dir.join("config.lock").exists());
        drop(FileLock::acquire(&file, std::time::Duration::ZERO).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
