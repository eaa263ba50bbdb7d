//! Where log lines go: stderr (as zap's default output), and the `logFile` with rotation.

use crate::local::LogFile;
use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// The log file cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("log file {path}: {source}")]
pub struct OutputError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// stderr, and the log file when there is one. Each line is written whole to each.
#[derive(Clone)]
pub(crate) struct Output {
    stderr: bool,
    file: Option<Arc<Mutex<FileRotate<AppendCount>>>>,
}

impl Output {
    pub(crate) fn stderr() -> Self {
        Self {
            stderr: true,
            file: None,
        }
    }

    /// stderr and `path`, rotated at `maxSizeMb` (after a whole line) into `maxBackups`
    /// files `path.1`, `path.2`, … (gzipped when `compress`), as lumberjack does for isp-kit.
    pub(crate) fn stderr_and_file(path: &Path, config: &LogFile) -> Result<Self, OutputError> {
        let fail = |source| OutputError {
            path: path.to_path_buf(),
            source,
        };
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map_err(fail)?.join(path)
        };
        // file-rotate panics when it cannot make the folder: make it first.
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(fail)?;
        }
        // And check the file opens, to report an error instead of losing every line.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(fail)?;
        let bytes = usize::try_from(config.max_size_mb.max(1).saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX);
        let compression = if config.compress {
            Compression::OnRotate(0)
        } else {
            Compression::None
        };
        let file = FileRotate::new(
            &path,
            AppendCount::new(config.max_backups.max(1)),
            ContentLimit::BytesSurpassed(bytes),
            compression,
            None,
        );
        Ok(Self {
            stderr: true,
            file: Some(Arc::new(Mutex::new(file))),
        })
    }
}

/// One line's writer: buffers the line, then writes it to each output.
pub(crate) struct LineWriter {
    line: Vec<u8>,
    stderr: bool,
    file: Option<Arc<Mutex<FileRotate<AppendCount>>>>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        // A log line that cannot be written has nowhere to be reported: it is dropped.
        if self.stderr {
            let _ = io::stderr().lock().write_all(&self.line);
        }
        if let Some(file) = &self.file
            && let Ok(mut file) = file.lock()
        {
            let _ = file.write_all(&self.line);
        }
    }
}

impl<'a> MakeWriter<'a> for Output {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            line: Vec::with_capacity(256),
            stderr: self.stderr,
            file: self.file.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_and_it_rotates() {
        let dir =
            std::env::temp_dir().join(format!("cluster-bootstrap-logfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("logs/app.log");
        let config = LogFile {
            path: path.display().to_string(),
            max_size_mb: 1,
            max_backups: 2,
            compress: false,
        };
        let mut output = Output::stderr_and_file(&path, &config).unwrap();
        output.stderr = false;
        let line = format!("{}\n", "x".repeat(600 * 1024));
        for _ in 0..3 {
            let mut writer = output.make_writer();
            writer.write_all(line.as_bytes()).unwrap();
        }
        let backup = dir.join("logs/app.log.1");
        assert!(backup.exists(), "rotated once past 1 MiB");
        assert!(std::fs::metadata(&path).unwrap().len() > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let config = LogFile::default();
        let err = match Output::stderr_and_file(Path::new("/proc/no/such/dir/app.log"), &config) {
            Err(err) => err,
            Ok(_) => panic!("opened"),
        };
        assert!(
            err.to_string()
                .starts_with("log file /proc/no/such/dir/app.log"),
            "{err}"
        );
    }
}
