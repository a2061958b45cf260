//! Audit sinks: one `audit.k8s.io/v1` Event JSON line per request, to standard output or to a
//! size-rotated file. Levels are per target (`audit.level`, each target's `auditLevel`); the
//! proxy's audit layer never records exec, attach, port-forward, log or watch streams, nor the
//! bodies of credential-bearing resources, whatever the level.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kubegate_proxy::{AuditEvent, AuditSink, BackgroundJsonLines};

use crate::config::{AuditConfig, AuditSinkKind};

/// Most bytes of lines held before they are written, flush or not.
const PENDING_LIMIT: usize = 64 * 1024;

/// Default rotation size.
pub const DEFAULT_MAX_SIZE: u64 = 100 * 1024 * 1024;
/// Default number of rotated files kept.
pub const DEFAULT_MAX_FILES: usize = 5;

/// The configured sink.
#[derive(Debug)]
pub enum GatewayAuditSink {
    /// Audit disabled.
    None,
    /// JSON lines on standard output, written by a thread of its own: a log pipe that backs up
    /// must not stop the request threads with it.
    Stdout(BackgroundJsonLines),
    /// JSON lines in a rotated file, written by a thread of its own (request tasks never wait
    /// for the disk: while 8 MiB of lines are queued new requests are refused instead; nothing
    /// is dropped unless the disk refuses a write, whose lines are lost and logged, never left
    /// torn, or 64 MiB are queued).
    File(BackgroundJsonLines),
}

impl GatewayAuditSink {
    /// Opens the sink the config names.
    pub fn open(config: &AuditConfig) -> std::io::Result<GatewayAuditSink> {
        Ok(match config.sink {
            AuditSinkKind::None => GatewayAuditSink::None,
            AuditSinkKind::Stdout => {
                GatewayAuditSink::Stdout(BackgroundJsonLines::spawn(std::io::stdout())?)
            }
            AuditSinkKind::File => {
                let path = config.path.clone().ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "audit file path missing")
                })?;
                GatewayAuditSink::File(BackgroundJsonLines::spawn(RotatingFile::open(
                    path,
                    config.max_size_bytes.unwrap_or(DEFAULT_MAX_SIZE),
                    config.max_files.unwrap_or(DEFAULT_MAX_FILES),
                )?)?)
            }
        })
    }

    /// Registers the writer's counters (`kubegate_audit_events_total`,
    /// `kubegate_audit_errors_total`, `kubegate_audit_queue_full_total`; see
    /// [`BackgroundJsonLines::register_metrics`]); a sink that is off has none.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        if let GatewayAuditSink::File(writer) | GatewayAuditSink::Stdout(writer) = self {
            writer.register_metrics(registry);
        }
    }

    /// Waits until every event recorded so far is written (to the file's page cache). Blocks:
    /// call it off the async workers, or at shutdown.
    pub fn flush(&self) {
        if let GatewayAuditSink::File(writer) | GatewayAuditSink::Stdout(writer) = self {
            writer.flush();
        }
    }
}

impl AuditSink for GatewayAuditSink {
    fn enabled(&self) -> bool {
        !matches!(self, GatewayAuditSink::None)
    }

    fn backlogged(&self) -> bool {
        match self {
            GatewayAuditSink::File(writer) | GatewayAuditSink::Stdout(writer) => {
                writer.is_backlogged()
            }
            GatewayAuditSink::None => false,
        }
    }

    fn record_owned(&self, event: Box<AuditEvent>) {
        match self {
            // Queued as it is; the writer thread serializes it.
            GatewayAuditSink::File(writer) | GatewayAuditSink::Stdout(writer) => {
                writer.record_owned(event)
            }
            GatewayAuditSink::None => {}
        }
    }

    fn record(&self, event: &AuditEvent) {
        match self {
            GatewayAuditSink::None => {}
            GatewayAuditSink::File(writer) | GatewayAuditSink::Stdout(writer) => {
                writer.record(event)
            }
        }
    }
}

/// An append-only file rotated by size: `audit.log` → `audit.log.1` → … → `audit.log.N`.
///
/// Only a regular file is rotated. A path that opens something else — `/dev/null`,
/// `/dev/stdout`, a FIFO a log shipper reads, or a symlink to one of them — is only written to:
/// renaming it would take a device or a pipe away from every other process on the machine (a
/// gateway running as root once turned `/dev/null` into a regular file that way).
///
/// The file written to can leave its path under the gateway: deleted to free space, or moved
/// away by an outside rotation (logrotate without `copytruncate`). Events written on into it
/// would be lost to whoever reads the path, so at most once a second, at a flush, the path is
/// checked and opened again when it no longer names that file. A rotation shifts the kept files
/// only when the file written to is still there to become `.1` (shifting for a file that is
/// gone would push out a kept one on every try), and one that fails (a directory turned
/// read-only) leaves events going to the current file rather than losing them; it is tried
/// again after another `max_size` bytes.
///
/// Lines are buffered and written whole: a write that fails (a full disk) is cut back to the
/// last whole line, so the next line written never continues a torn one into a line that is
/// not JSON. The lines of that write are lost, as kube-apiserver's log backend loses a batch it
/// cannot write; [`BackgroundJsonLines`] logs it.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    /// Lines not written yet.
    pending: Vec<u8>,
    /// Length of the file when its last write ended: whole lines only.
    committed: u64,
    /// Device and inode of the file written to.
    identity: (u64, u64),
    /// Bytes counted towards the next rotation.
    size: u64,
    max_size: u64,
    max_files: usize,
    rotates: bool,
    /// When the path was last checked against `identity`, and how often it is.
    checked: Instant,
    check_every: Duration,
}

impl RotatingFile {
    /// Opens (appending to) `path`.
    pub fn open(path: PathBuf, max_size: u64, max_files: usize) -> std::io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let (file, metadata) = Self::open_appending(&path)?;
        Ok(RotatingFile {
            path,
            file,
            pending: Vec::new(),
            committed: metadata.len(),
            identity: identity(&metadata),
            size: metadata.len(),
            max_size: max_size.max(1),
            max_files,
            rotates: metadata.file_type().is_file(),
            checked: Instant::now(),
            check_every: Duration::from_secs(1),
        })
    }

    fn open_appending(path: &Path) -> std::io::Result<(File, std::fs::Metadata)> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let metadata = file.metadata()?;
        Ok((file, metadata))
    }

    /// Appends one line (buffered until [`flush`](Self::flush)), rotating first if it would
    /// overflow the size limit and the file is a regular one.
    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.rotates && self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.write_pending()?;
            if let Err(e) = self.rotate() {
                tracing::warn!(path = %self.path.display(), error = %e, "rotating the audit log failed; writing on to the current file");
                self.size = 0;
            }
        }
        self.pending.extend_from_slice(line);
        self.size += line.len() as u64;
        // Bounded for callers that write many lines between flushes.
        if self.pending.len() >= PENDING_LIMIT {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Writes the buffered lines; if that fails, cuts the file back to its last whole line and
    /// drops them.
    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = append_whole(&mut self.file, self.committed, &self.pending);
        self.pending.clear();
        self.committed = written?;
        Ok(())
    }

    fn rotated(path: &Path, n: usize) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Whether the path still names the file written to.
    fn still_at_path(&self) -> std::io::Result<bool> {
        match std::fs::metadata(&self.path) {
            Ok(metadata) => Ok(identity(&metadata) == self.identity),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes on to the file at the path, made anew if there is none.
    fn reopen(&mut self) -> std::io::Result<()> {
        let (file, metadata) = Self::open_appending(&self.path)?;
        self.file = file;
        self.identity = identity(&metadata);
        self.size = metadata.len();
        self.committed = metadata.len();
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.max_files == 0 {
            // Emptied, and still appending: a write cut back later must not leave the file
            // offset past its end (the next write would leave a run of NULs before it).
            let (file, metadata) = Self::open_appending(&self.path)?;
            file.set_len(0)?;
            self.identity = identity(&metadata);
            self.file = file;
            self.size = 0;
            self.committed = 0;
            return Ok(());
        }
        if self.still_at_path()? {
            for n in (1..self.max_files).rev() {
                let from = Self::rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, Self::rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, Self::rotated(&self.path, 1))?;
        }
        self.reopen()
    }

    /// Opens the path again if the file written to has left it, at most once per
    /// `check_every`.
    fn follow_path(&mut self) -> std::io::Result<()> {
        if !self.rotates || self.checked.elapsed() < self.check_every {
            return Ok(());
        }
        self.checked = Instant::now();
        if !self.still_at_path()? {
            tracing::warn!(path = %self.path.display(), "the audit log was moved or deleted; writing to a new file at its path");
            self.reopen()?;
        }
        Ok(())
    }
}

/// What [`append_whole`] writes to: an append-only file that can be measured and cut back.
trait Truncatable: Write {
    fn len_now(&self) -> std::io::Result<u64>;
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()>;
}

impl Truncatable for File {
    fn len_now(&self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
}

/// Appends `lines` to `file` and gives its new length. A write that fails part way (the kernel
/// takes what fits on a full disk) is cut back to where it began: the file's length just
/// before it, where an append lands, whatever else changed it since the last write (an
/// outside truncation, logrotate's `copytruncate`; another process appending). `committed`,
/// the length after the last write, stands in only if the file cannot be measured.
fn append_whole(file: &mut impl Truncatable, committed: u64, lines: &[u8]) -> std::io::Result<u64> {
    let start = file.len_now().unwrap_or(committed);
    match file.write_all(lines) {
        Ok(()) => Ok(start + lines.len() as u64),
        Err(e) => {
            if let Err(cut) = file.truncate_to(start) {
                tracing::warn!(error = %cut, "cutting a torn audit line failed");
            }
            Err(e)
        }
    }
}

fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

/// Each `write` is whole lines ([`BackgroundJsonLines`] hands over a batch of complete lines
/// at once, and this `write` always takes all of it), so rotation happens between lines, never
/// inside one.
impl Write for RotatingFile {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.write_line(line)?;
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_pending()?;
        self.follow_path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> AuditEvent {
        AuditEvent {
            kind: "Event",
            api_version: "audit.k8s.io/v1",
            level: "Metadata",
            audit_id: format!("id-{i}").into(),
            stage: "ResponseComplete",
            request_uri: "/api".into(),
            verb: "get".into(),
            user: Default::default(),
            impersonated_user: None,
            source_ips: vec![],
            user_agent: None,
            object_ref: None,
            response_status: None,
            request_object: None,
            response_object: None,
            request_received_timestamp: kubegate_proxy::MicroTime::now(),
            stage_timestamp: kubegate_proxy::MicroTime::now(),
            annotations: Default::default(),
        }
    }

    #[test]
    fn the_writer_thread_writes_every_event_from_every_thread() {
        let dir = std::env::temp_dir().join(format!("kubegate-audit-{}", uuid::Uuid::new_v4()));
        let config = AuditConfig {
            sink: AuditSinkKind::File,
            path: Some(dir.join("audit.log")),
            ..AuditConfig::default()
        };
        let sink = std::sync::Arc::new(GatewayAuditSink::open(&config).unwrap());
        // More events than the queue holds, from several threads at once.
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        sink.record(&event(t * 10_000 + i));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        sink.flush();
        let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
        let ids: std::collections::BTreeSet<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["auditID"].to_string())
            .collect();
        assert_eq!(ids.len(), 8000);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = std::env::temp_dir().join(format!("kubegate-audit-{}", uuid::Uuid::new_v4()));
        let path = dir.join("audit.log");
        let mut f = RotatingFile::open(path.clone(), 10, 2).unwrap();
        for i in 0..5 {
            f.write_line(format!("line-{i}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
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

    /// The live file deleted under the gateway (to free space): the next rotation makes it
    /// anew instead of failing on it for ever, and takes none of the kept files.
    #[test]
    fn a_deleted_file_is_made_again_and_the_kept_ones_stay() {
        let dir = std::env::temp_dir().join(format!("kubegate-audit-{}", uuid::Uuid::new_v4()));
        let path = dir.join("audit.log");
        let mut f = RotatingFile::open(path.clone(), 10, 3).unwrap();
        for i in 0..3 {
            f.write_line(format!("line-{i}\n").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        std::fs::remove_file(&path).unwrap();
        f.write_line(b"line-3\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line-3\n");
        let kept: Vec<String> = (1..=2)
            .map(|n| std::fs::read_to_string(RotatingFile::rotated(&path, n)).unwrap())
            .collect();
        assert_eq!(kept, ["line-1\n", "line-0\n"], "no kept file was shifted");
        assert!(!RotatingFile::rotated(&path, 3).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The live file moved away by an outside rotation, or deleted, before it is full: the
    /// next flush after the check interval writes to a new file at the path.
    #[test]
    fn a_file_moved_away_is_followed_by_a_new_one_at_the_path() {
        let dir = std::env::temp_dir().join(format!("kubegate-audit-{}", uuid::Uuid::new_v4()));
        let path = dir.join("audit.log");
        let mut f = RotatingFile::open(path.clone(), 1 << 20, 3).unwrap();
        f.check_every = Duration::ZERO;
        f.write_line(b"before\n").unwrap();
        f.flush().unwrap();
        std::fs::rename(&path, dir.join("audit.log-20261205")).unwrap();
        f.write_line(b"moved\n").unwrap();
        f.flush().unwrap();
        f.write_line(b"after\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.join("audit.log-20261205")).unwrap(),
            "before\nmoved\n"
        );
        std::fs::remove_file(&path).unwrap();
        f.write_line(b"deleted\n").unwrap();
        f.flush().unwrap();
        f.write_line(b"again\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "again\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file that takes part of a write and then fails (a disk filling up).
    struct FillingUp {
        bytes: Vec<u8>,
        room: usize,
    }

    impl Write for FillingUp {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let room = self.room.saturating_sub(self.bytes.len());
            if room == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            let n = room.min(buf.len());
            self.bytes.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Truncatable for FillingUp {
        fn len_now(&self) -> std::io::Result<u64> {
            Ok(self.bytes.len() as u64)
        }
        fn truncate_to(&mut self, len: u64) -> std::io::Result<()> {
            self.bytes.truncate(len as usize);
            Ok(())
        }
    }

    /// A write the disk takes only part of leaves no torn line: the file is cut back to its
    /// last whole line, and what is written once there is room again starts a line.
    #[test]
    fn a_write_cut_short_leaves_only_whole_lines() {
        let mut file = FillingUp {
            bytes: Vec::new(),
            room: 30,
        };
        let committed = append_whole(&mut file, 0, b"{\"n\":1}\n{\"n\":2}\n").unwrap();
        assert_eq!(committed, 16);
        let torn = append_whole(&mut file, committed, b"{\"n\":3}\n{\"n\":4}\n");
        assert_eq!(torn.unwrap_err().kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(
            file.bytes, b"{\"n\":1}\n{\"n\":2}\n",
            "cut back to the whole lines"
        );
        file.room = 100;
        let committed = append_whole(&mut file, committed, b"{\"n\":5}\n").unwrap();
        assert_eq!(committed, 24);
        let text = String::from_utf8(file.bytes).unwrap();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        // Emptied from outside since (copytruncate): a failed write is cut back to where it
        // began, never grown back to the old length with zeros.
        let mut emptied = FillingUp {
            bytes: Vec::new(),
            room: 4,
        };
        assert!(append_whole(&mut emptied, 24, b"{\"n\":6}\n").is_err());
        assert!(emptied.bytes.is_empty(), "{:?}", emptied.bytes);
        // Appended to by another writer since: the cut keeps their lines too.
        let theirs = b"{\"mine\":1}\n{\"theirs\":1}\n".to_vec();
        let mut shared = FillingUp {
            bytes: theirs.clone(),
            room: 30,
        };
        assert!(append_whole(&mut shared, 11, b"{\"n\":7}\n{\"n\":8}\n").is_err());
        assert_eq!(shared.bytes, theirs);
    }

    /// `maxFiles: 0` empties the file and keeps appending: after the file is cut back, the
    /// next write lands at its end, with no gap of NULs before it.
    #[test]
    fn a_file_emptied_by_rotation_is_still_appended_to() {
        let dir = std::env::temp_dir().join(format!("kubegate-audit-{}", uuid::Uuid::new_v4()));
        let path = dir.join("audit.log");
        // Lines of 7 bytes in 20: the third empties the file; the next write fits after it.
        let mut f = RotatingFile::open(path.clone(), 20, 0).unwrap();
        for i in 0..3 {
            f.write_line(format!("line-{i}\n").as_bytes()).unwrap();
            f.flush().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line-2\n");
        // Cut back as a failed write would be.
        f.file.truncate_to(0).unwrap();
        f.committed = 0;
        f.write_line(b"next\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "next\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The test goes through a symlink in a scratch directory, so that a regression renames the
    /// link, never the machine's `/dev/null`.
    #[test]
    fn never_rotates_what_is_not_a_regular_file() {
        use std::os::unix::fs::FileTypeExt;
        let dir = std::env::temp_dir().join(format!("kubegate-audit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        std::os::unix::fs::symlink("/dev/null", &path).unwrap();
        for max_files in [0, 2] {
            let mut f = RotatingFile::open(path.clone(), 10, max_files).unwrap();
            for i in 0..5 {
                f.write_line(format!("line-{i}\n").as_bytes()).unwrap();
                f.flush().unwrap();
            }
            assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
            assert!(
                std::fs::metadata(&path)
                    .unwrap()
                    .file_type()
                    .is_char_device()
            );
            assert!(!RotatingFile::rotated(&path, 1).exists());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
