//! Loading every path file of the `config.d/` directory. One bad file never hides the good
//! ones: its problem is collected and the rest still load.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::limits::read_capped;
use super::name::{PathName, is_config_file_name};
use super::path::{PathConfig, parse_path_file, path_name_of};

/// The outcome of loading a directory: the paths that are fine, and one error per file that
/// is not (in file name order).
#[derive(Debug, Default)]
pub struct LoadedPaths {
    pub paths: BTreeMap<PathName, PathConfig>,
    pub errors: Vec<ConfigError>,
}

/// Loads every path file (see [`is_config_file_name`]) in `dir`. Fails only if `dir` itself
/// cannot be read.
///
/// Blocking file I/O and parsing: async callers run it on a blocking thread. Each file costs
/// at most [`MAX_FILE_BYTES`](super::limits::MAX_FILE_BYTES) of reading, and a link that leads
/// out of `dir` is refused unread.
pub fn load_paths_dir(dir: &Path) -> Result<LoadedPaths, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::new(dir, format!("cannot read directory: {e}")))?;
    // Where links may lead: `dir` itself may be a link (e.g. /etc/camportal -> /srv/...).
    let root = dir
        .canonicalize()
        .map_err(|e| ConfigError::new(dir, format!("cannot read directory: {e}")))?;
    let mut loaded = LoadedPaths::default();

    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                loaded.errors.push(ConfigError::new(
                    dir,
                    format!("cannot list directory entry: {e}"),
                ));
                continue;
            }
        };
        let file_name = entry.file_name();
        // A name that is not UTF-8 is still reported if it otherwise looks like a path file.
        if is_config_file_name(&file_name.to_string_lossy()) {
            files.push(entry.path());
        } else {
            tracing::trace!(file = %entry.path().display(), "not a path file, ignored");
        }
    }
    // read_dir order is arbitrary; sort so that errors and logs come out the same every time.
    files.sort();

    // Group by path name first: `x.yml` and `x.yaml` both claiming `x` disqualifies both, as
    // neither is obviously the one meant.
    let mut by_name: BTreeMap<PathName, Vec<PathBuf>> = BTreeMap::new();
    let mut valid_files: Vec<(PathName, PathBuf)> = Vec::new();
    for file in files {
        match path_name_of(&file) {
            Ok(name) => {
                by_name.entry(name.clone()).or_default().push(file.clone());
                valid_files.push((name, file));
            }
            Err(e) => loaded.errors.push(e),
        }
    }

    for (name, file) in valid_files {
        let claimants = by_name.get(&name).map_or(&[][..], Vec::as_slice);
        if claimants.len() > 1 {
            let list: Vec<String> = claimants
                .iter()
                .map(|f| {
                    f.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            loaded.errors.push(ConfigError::new(
                &file,
                format!(
                    "path `{name}` is defined by more than one file ({}); keep only one",
                    list.join(", ")
                ),
            ));
            continue;
        }
        match load_one(&file, &root) {
            Ok(config) => {
                loaded.paths.insert(name, config);
            }
            Err(e) => loaded.errors.push(e),
        }
    }
    loaded.errors.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(loaded)
}

fn load_one(file: &Path, root: &Path) -> Result<PathConfig, ConfigError> {
    let opened = open_path_file(file, root)?;
    let text = read_capped(file, opened)?;
    parse_path_file(file, &text)
}

/// Opens the path file `file` of the directory whose canonical path is `root`, if it is a
/// regular file, or a symbolic link to one inside `root`. A link that leads elsewhere (say to
/// `/etc/shadow`) is refused without opening its target: the daemon may read files its users
/// cannot, and its errors are shown to everyone. The error does not name the target either.
fn open_path_file(file: &Path, root: &Path) -> Result<File, ConfigError> {
    let cannot_read = |e: std::io::Error| ConfigError::new(file, format!("cannot read: {e}"));
    let not_regular = || ConfigError::new(file, "not a regular file");
    let metadata = std::fs::symlink_metadata(file).map_err(cannot_read)?;
    let target = if metadata.file_type().is_symlink() {
        let target = file.canonicalize().map_err(cannot_read)?;
        if !target.starts_with(root) {
            return Err(ConfigError::new(
                file,
                "a symbolic link to a file outside the config directory: refused, not read \
                 (copy the file into the directory, or link within it)",
            ));
        }
        if !std::fs::symlink_metadata(&target)
            .map_err(cannot_read)?
            .is_file()
        {
            return Err(not_regular());
        }
        target
    } else if metadata.is_file() {
        file.to_path_buf()
    } else {
        return Err(not_regular());
    };
    // What was checked is what is opened: no link followed at the last step (the file swapped
    // for a link meanwhile fails with ELOOP), and no wait if it became a FIFO.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&target)
        .map_err(cannot_read)?;
    if !opened.metadata().map_err(cannot_read)?.is_file() {
        return Err(not_regular());
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::limits::MAX_FILE_BYTES;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "camportal-config-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const GOOD: &str = "source: testsrc\n";

    #[test]
    fn good_bad_junk_and_duplicates() {
        let dir = TempDir::new();
        dir.write("cam1.yml", GOOD);
        dir.write(
            "cam2.yaml",
            "source:\n  type: testsrc\nencoding:\n  fps: 10\n",
        );
        // Bad content.
        dir.write("bad.yml", "source: testsrc\nencoding:\n  fps: 0\n");
        dir.write("empty.yml", "");
        // Bad names.
        dir.write("_x.yml", GOOD);
        dir.write("api.yml", GOOD);
        // Duplicates: both rejected.
        dir.write("dup.yml", GOOD);
        dir.write("dup.yaml", GOOD);
        // Junk: silently ignored.
        for junk in [
            ".hidden.yml",
            "cam1.yml~",
            ".cam1.yml.swp",
            ".#cam1.yml",
            "notes.txt",
        ] {
            dir.write(junk, "this is: [not yaml");
        }
        // A directory with a path file's name.
        std::fs::create_dir(dir.0.join("sub.yml")).unwrap();

        let loaded = load_paths_dir(&dir.0).unwrap();
        let names: Vec<&str> = loaded.paths.keys().map(PathName::as_str).collect();
        assert_eq!(names, ["cam1", "cam2"]);
        assert_eq!(loaded.paths["cam1"].encoding.fps, 30);
        let cam2 = PathName::new("cam2").unwrap();
        assert_eq!(loaded.paths[&cam2].encoding.fps, 10);

        assert_eq!(
            errors_of(&dir, &loaded),
            [
                "_x.yml: path name `_x` must not start with `.`, `_` or `-`",
                "api.yml: path name `api` is reserved",
                "bad.yml:3:8: encoding.fps: 0 is out of range 1..=60",
                "dup.yaml: path `dup` is defined by more than one file (dup.yaml, dup.yml); keep only one",
                "dup.yml: path `dup` is defined by more than one file (dup.yaml, dup.yml); keep only one",
                "empty.yml: empty path file: expected at least `source:`",
                "sub.yml: not a regular file",
            ]
        );
    }

    #[test]
    fn empty_directory() {
        let dir = TempDir::new();
        let loaded = load_paths_dir(&dir.0).unwrap();
        assert!(loaded.paths.is_empty() && loaded.errors.is_empty());
    }

    /// `config.d/<name>` as the error names it, relative to the directory.
    fn errors_of(dir: &TempDir, loaded: &LoadedPaths) -> Vec<String> {
        loaded
            .errors
            .iter()
            .map(|e| {
                let rel = e.file.strip_prefix(&dir.0).unwrap().to_path_buf();
                ConfigError {
                    file: rel,
                    ..e.clone()
                }
                .to_string()
            })
            .collect()
    }

    /// A valid path file of `size` bytes: comments after the one key.
    fn padded(size: usize) -> String {
        let mut text = String::from(GOOD);
        let line = "# padding padding padding padding padding padding padding padding\n";
        while text.len() + line.len() <= size {
            text.push_str(line);
        }
        text.push_str(&"#".repeat(size - text.len() - 1));
        text.push('\n');
        assert_eq!(text.len(), size);
        text
    }

    #[test]
    fn files_over_the_size_cap_are_refused_unread() {
        let dir = TempDir::new();
        dir.write("limit.yml", &padded(MAX_FILE_BYTES as usize));
        dir.write("over.yml", &padded(MAX_FILE_BYTES as usize + 1));
        dir.write("big.yml", &padded(2 << 20));
        // The 52 MB file peaked at 1.69 GB; this one must cost nothing.
        std::fs::write(dir.0.join("huge.yml"), padded(50 << 20)).unwrap();
        let started = Instant::now();
        let loaded = load_paths_dir(&dir.0).unwrap();
        eprintln!(
            "a directory with 2 MiB and 50 MiB path files loaded in {:.2} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        let names: Vec<&str> = loaded.paths.keys().map(PathName::as_str).collect();
        assert_eq!(names, ["limit"]);
        assert_eq!(
            errors_of(&dir, &loaded),
            [
                "big.yml: the file is too large (2097152 bytes): a configuration file may be at \
                 most 1 MiB (1048576 bytes)",
                "huge.yml: the file is too large (52428800 bytes): a configuration file may be at \
                 most 1 MiB (1048576 bytes)",
                "over.yml: the file is too large (1048577 bytes): a configuration file may be at \
                 most 1 MiB (1048576 bytes)",
            ]
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    const SECRET: &str = "root:$6$S3cr3tSalt$c2VjcmV0aGFzaA:19700:0:99999:7:::";

    #[test]
    fn links_may_not_leave_the_directory() {
        use std::os::unix::fs::symlink;
        let outside = TempDir::new();
        std::fs::write(outside.0.join("shadow"), format!("{SECRET}\n")).unwrap();
        std::fs::write(outside.0.join("cam.yml"), GOOD).unwrap();
        let dir = TempDir::new();
        dir.write("real.yml", GOOD);
        std::fs::create_dir(dir.0.join("shared")).unwrap();
        std::fs::write(dir.0.join("shared/cam.txt"), GOOD).unwrap();
        // Inside: followed.
        symlink("real.yml", dir.0.join("alias.yml")).unwrap();
        symlink(dir.0.join("shared/cam.txt"), dir.0.join("shared-cam.yml")).unwrap();
        symlink("shared/../real.yml", dir.0.join("dotted.yml")).unwrap();
        // Outside, even to a valid path file, directly or through a linked directory: refused.
        symlink(outside.0.join("shadow"), dir.0.join("shadow.yml")).unwrap();
        symlink(outside.0.join("cam.yml"), dir.0.join("outcam.yml")).unwrap();
        symlink(&outside.0, dir.0.join("elsewhere")).unwrap();
        symlink("elsewhere/shadow", dir.0.join("via-dir.yml")).unwrap();
        symlink("../", dir.0.join("up")).unwrap();
        let up = format!(
            "up/{}/shadow",
            outside.0.file_name().unwrap().to_string_lossy()
        );
        symlink(up, dir.0.join("via-up.yml")).unwrap();
        // Dangling, and a link to the directory itself.
        symlink("nowhere.yml", dir.0.join("dangling.yml")).unwrap();
        symlink(".", dir.0.join("self.yml")).unwrap();

        let loaded = load_paths_dir(&dir.0).unwrap();
        let names: Vec<&str> = loaded.paths.keys().map(PathName::as_str).collect();
        assert_eq!(names, ["alias", "dotted", "real", "shared-cam"]);
        let refused = "a symbolic link to a file outside the config directory: refused, not \
                       read (copy the file into the directory, or link within it)";
        assert_eq!(
            errors_of(&dir, &loaded),
            [
                "dangling.yml: cannot read: No such file or directory (os error 2)".to_owned(),
                format!("outcam.yml: {refused}"),
                "self.yml: not a regular file".to_owned(),
                format!("shadow.yml: {refused}"),
                format!("via-dir.yml: {refused}"),
                format!("via-up.yml: {refused}"),
            ]
        );
        for e in &loaded.errors {
            assert!(
                !e.to_string().contains(&*outside.0.to_string_lossy()),
                "{e}"
            );
        }

        // The directory itself may be reached through a link.
        let linked = TempDir::new();
        let via = linked.0.join("config.d");
        symlink(&dir.0, &via).unwrap();
        let loaded = load_paths_dir(&via).unwrap();
        assert_eq!(loaded.paths.len(), 4);
        assert_eq!(loaded.errors.len(), 6);
    }

    #[test]
    fn a_foreign_file_is_not_shown_through_its_errors() {
        // Copied in (or hard-linked): read, being in the directory, but none of it is shown.
        let dir = TempDir::new();
        dir.write(
            "shadow.yml",
            &format!("{SECRET}\ndaemon:*:19700:0:99999:7:::\n"),
        );
        dir.write(
            "key.yml",
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END PRIVATE KEY-----\n",
        );
        dir.write("env.yml", "TOKEN=ghp_S3cr3tT0ken\n");
        dir.write(
            "json.yml",
            "{\"type\": \"service_account\", \"private_key\": \"S3cr3t\"}\n",
        );
        let loaded = load_paths_dir(&dir.0).unwrap();
        let errors = errors_of(&dir, &loaded);
        assert_eq!(
            errors,
            [
                "env.yml:1:1: invalid type: string, expected struct PathFile",
                "json.yml:1:2: unknown field `type`, expected one of `source`, `encoding`, `sourceOnDemand`, `sourceOnDemandCloseAfter`",
                "key.yml:1:1: invalid type: string, expected struct PathFile",
                "shadow.yml:1:1: unknown field (name not shown), expected one of `source`, `encoding`, `sourceOnDemand`, `sourceOnDemandCloseAfter`",
            ]
        );
        for e in errors {
            for secret in ["S3cr3t", "MIIE", "daemon", "19700"] {
                assert!(!e.contains(secret), "{e}");
            }
        }
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = TempDir::new();
        let missing = dir.0.join("nope");
        let e = load_paths_dir(&missing).unwrap_err();
        assert!(e.message.starts_with("cannot read directory"), "{e}");
    }
}
