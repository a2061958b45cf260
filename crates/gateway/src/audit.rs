//! Audit sinks: one `audit.k8s.io/v1` Event JSON line per request, to standard output or to a
//! size-rotated file. Levels are per target (`audit.level`, each target's `auditLevel`); the
//! proxy's audit layer never records exec, attach, port-forward, log or watch streams, nor the
//! bodies of credential-bearing resources, whatever the level.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kubegate_proxy::{AuditEvent, AuditSink};

use crate::config::{AuditConfig, AuditSinkKind};

/// Default rotation size.
pub const DEFAULT_MAX_SIZE: u64 = 100 * 1024 * 1024;
/// Default number of rotated files kept.
pub const DEFAULT_MAX_FILES: usize = 5;

/// The configured sink.
#[derive(Debug)]
pub enum GatewayAuditSink {
    /// Audit disabled.
    None,
    /// JSON lines on standard output.
    Stdout,
    /// JSON lines in a rotated file.
    File(Mutex<RotatingFile>),
}

impl GatewayAuditSink {
    /// Opens the sink the config names.
    pub fn open(config: &AuditConfig) -> std::io::Result<GatewayAuditSink> {
        Ok(match config.sink {
            AuditSinkKind::None => GatewayAuditSink::None,
            AuditSinkKind::Stdout => GatewayAuditSink::Stdout,
            AuditSinkKind::File => {
                let path = config.path.clone().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "audit file path missing")
                })?;
                GatewayAuditSink::File(Mutex::new(RotatingFile::open(
                    path,
                    config.max_size_bytes.unwrap_or(DEFAULT_MAX_SIZE),
                    config.max_files.unwrap_or(DEFAULT_MAX_FILES),
                )?))
            }
        })
    }
}

impl AuditSink for GatewayAuditSink {
    fn enabled(&self) -> bool {
        !matches!(self, GatewayAuditSink::None)
    }

    fn record(&self, event: &AuditEvent) {
        let line = match self {
            GatewayAuditSink::None => return,
            _ => match serde_json::to_vec(event) {
                Ok(mut line) => {
                    line.push(b'\n');
                    line
                }
                Err(_) => return,
            },
        };
        let result = match self {
            GatewayAuditSink::None => Ok(()),
            GatewayAuditSink::Stdout => std::io::stdout().lock().write_all(&line),
            GatewayAuditSink::File(file) => file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .write_line(&line),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "writing an audit event failed");
        }
    }
}

/// An append-only file rotated by size: `audit.log` → `audit.log.1` → … → `audit.log.N`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: usize,
}

impl RotatingFile {
    /// Opens (appending to) `path`.
    pub fn open(path: PathBuf, max_size: u64, max_files: usize) -> std::io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            file,
            size,
            max_size: max_size.max(1),
            max_files,
        })
    }

    /// Appends one line, rotating first if it would overflow the size limit.
    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotated(path: &Path, n: usize) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        if self.max_files == 0 {
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
        } else {
            for n in (1..self.max_files).rev() {
                let from = Self::rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, Self::rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, Self::rotated(&self.path, 1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("kubegate-audit-{}", uuid::Uuid::new_v4()));
        let path = dir.join("audit.log");
        let mut f = RotatingFile::open(path.clone(), 10, 2).unwrap();
        for i in 0..5 {
            f.write_line(format!("line-{i}\n").as_bytes()).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line-4\n");
        assert_eq!(
            std::fs::read_to_string(RotatingFile::rotated(&path, 1)).unwrap(),
            "line-3\n"
        );
        assert_eq!(
            std::fs::read_to_string(RotatingFile::rotated(&path, 2)).unwrap(),
            "line-2\n"
        );
        assert!(!RotatingFile::rotated(&path, 3).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
