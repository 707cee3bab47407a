//! What reading one configuration file may cost: its size is capped before it is read, so
//! that a huge file cannot fill the daemon's memory (a 52 MB file took 1.9 GB and 8 s to be
//! refused by `camportal check`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::error::ConfigError;

/// The largest configuration file read, in bytes (1 MiB). A path file is a dozen lines.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads the opened `f` (named `file` in errors) as UTF-8, refusing a file larger than
/// [`MAX_FILE_BYTES`]: a regular file by its size, before reading anything; any other (a pipe,
/// a device, a file growing meanwhile) by reading at most one byte more than the cap.
pub(super) fn read_capped(file: &Path, f: File) -> Result<String, ConfigError> {
    let size = f
        .metadata()
        .map_err(|e| ConfigError::new(file, format!("cannot read: {e}")))?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(too_big(file, Some(size)));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::new(file, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(file, None));
    }
    String::from_utf8(bytes)
        .map_err(|_| ConfigError::new(file, "cannot read: the file is not valid UTF-8 text"))
}

fn too_big(file: &Path, size: Option<u64>) -> ConfigError {
    let size = size
        .map(|size| format!(" ({size} bytes)"))
        .unwrap_or_default();
    ConfigError::new(
        file,
        format!(
            "the file is too large{size}: a configuration file may be at most 1 MiB \
             ({MAX_FILE_BYTES} bytes)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_stream_is_read_no_further_than_the_cap() {
        // A device has no size to check first: reading stops one byte past the cap.
        let started = Instant::now();
        let e = read_capped(Path::new("/dev/zero"), File::open("/dev/zero").unwrap()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: the file is too large: a configuration file may be at most 1 MiB \
             (1048576 bytes)"
        );
        eprintln!(
            "/dev/zero refused after {:.2} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}
