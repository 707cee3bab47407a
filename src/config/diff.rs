//! What a reload of `config.d/` changes, computed by value and nothing else (after Vector's
//! `config/diff.rs`): the paths to add, remove, restart or update live, and those to leave
//! alone. Pure functions; the root supervisor carries the result out.
//!
//! A broken file never costs a working path: its path keeps its last good configuration (see
//! [`reconcile`]), so from the diff's point of view it is unchanged.

use std::collections::BTreeMap;

use super::error::ConfigError;
use super::load::LoadedPaths;
use super::name::PathName;
use super::path::{PathConfig, path_name_of};

pub(crate) type PathConfigs = BTreeMap<PathName, PathConfig>;

/// How a changed path takes its new configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// The running encoder takes it: no restart, no keyframe, no frame lost.
    Live,
    /// The path's pipeline is rebuilt; its viewers stay connected and continue at a keyframe.
    Restart,
}

/// Whether `new` can be applied to a path running `old` without rebuilding its pipeline. Only
/// the encoder's rate settings can change under it; the source, the picture size and the frame
/// rate shape everything downstream; a changed on-demand setting restarts the path too (simply
/// and rarely).
pub(super) fn classify(old: &PathConfig, new: &PathConfig) -> Change {
    let (a, b) = (&old.encoding, &new.encoding);
    let same_pipeline = old.source == new.source
        && old.on_demand == new.on_demand
        && (a.width, a.height, a.fps) == (b.width, b.height, b.fps);
    if same_pipeline {
        Change::Live
    } else {
        Change::Restart
    }
}

/// The difference between the paths that run and the paths that should.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ConfigDiff {
    pub added: Vec<PathConfig>,
    pub removed: Vec<PathName>,
    pub restarted: Vec<PathConfig>,
    pub updated_live: Vec<PathConfig>,
    pub unchanged: Vec<PathName>,
}

impl ConfigDiff {
    /// Nothing to do.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.restarted.is_empty()
            && self.updated_live.is_empty()
    }
}

/// Compares what runs (`old`) with what should (`new`), by value.
pub(crate) fn diff(old: &PathConfigs, new: &PathConfigs) -> ConfigDiff {
    let mut out = ConfigDiff::default();
    for (name, config) in new {
        match old.get(name) {
            None => out.added.push(config.clone()),
            Some(running) if running == config => out.unchanged.push(name.clone()),
            Some(running) => match classify(running, config) {
                Change::Live => out.updated_live.push(config.clone()),
                Change::Restart => out.restarted.push(config.clone()),
            },
        }
    }
    out.removed = old
        .keys()
        .filter(|name| !new.contains_key(*name))
        .cloned()
        .collect();
    out
}

/// The outcome of a reload before it is applied.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    /// The paths that should run: every good file's, plus the last good configuration of each
    /// path whose file is now broken.
    pub desired: PathConfigs,
    /// Paths whose file is broken and which keep running on their last good configuration,
    /// each with its file's (first) error.
    pub kept: Vec<(PathName, ConfigError)>,
    /// Paths whose file is broken and that never had a good configuration: listed as failed.
    pub failed: Vec<(PathName, ConfigError)>,
    /// Every problem found, in file order (also those already counted above).
    pub errors: Vec<ConfigError>,
}

/// Decides what should run after loading the directory again. `running` is what runs now;
/// `loaded` is `Err` when the directory itself could not be read (removed, say): then every
/// path keeps what it has, since an empty directory and a missing one are not the same thing
/// (and no path's own file is to blame, so none is listed as kept).
pub(crate) fn reconcile(
    running: &PathConfigs,
    loaded: Result<LoadedPaths, ConfigError>,
) -> Reconciled {
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            return Reconciled {
                desired: running.clone(),
                kept: Vec::new(),
                failed: Vec::new(),
                errors: vec![err],
            };
        }
    };
    let mut out = Reconciled {
        desired: loaded.paths,
        errors: loaded.errors,
        ..Reconciled::default()
    };
    for err in &out.errors {
        // An error about a file whose name is not a path name (or about the directory) has no
        // path to keep or fail.
        let Ok(name) = path_name_of(&err.file) else {
            continue;
        };
        if out.desired.contains_key(&name)
            || out.kept.iter().any(|(n, _)| *n == name)
            || out.failed.iter().any(|(n, _)| *n == name)
        {
            continue;
        }
        match running.get(&name) {
            Some(last_good) => {
                out.desired.insert(name.clone(), last_good.clone());
                out.kept.push((name, err.clone()));
            }
            None => out.failed.push((name, err.clone())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn config(name: &str, yaml: &str) -> PathConfig {
        super::super::parse_path_file(Path::new(&format!("config.d/{name}.yml")), yaml).unwrap()
    }

    fn configs(list: &[(&str, &str)]) -> PathConfigs {
        list.iter()
            .map(|(name, yaml)| (PathName::new(name).unwrap(), config(name, yaml)))
            .collect()
    }

    fn names(list: &[PathName]) -> Vec<&str> {
        list.iter().map(PathName::as_str).collect()
    }

    fn kept_names(r: &Reconciled) -> Vec<&str> {
        r.kept.iter().map(|(name, _)| name.as_str()).collect()
    }

    fn config_names(list: &[PathConfig]) -> Vec<&str> {
        list.iter().map(|c| c.name.as_str()).collect()
    }

    const BASE: &str = "source: testsrc\nencoding:\n  width: 640\n  height: 480\n";

    #[test]
    fn added_removed_changed_unchanged() {
        let old = configs(&[("a", BASE), ("b", BASE), ("c", BASE), ("d", BASE)]);
        let new = configs(&[
            ("a", BASE),
            (
                "b",
                "source: testsrc\nencoding:\n  width: 320\n  height: 480\n",
            ),
            ("c", &format!("{BASE}  bitrate: 800k\n")),
            ("e", BASE),
        ]);
        let d = diff(&old, &new);
        assert_eq!(config_names(&d.added), ["e"]);
        assert_eq!(names(&d.removed), ["d"]);
        assert_eq!(config_names(&d.restarted), ["b"]);
        assert_eq!(config_names(&d.updated_live), ["c"]);
        assert_eq!(names(&d.unchanged), ["a"]);
        assert!(!d.is_empty());
        assert_eq!(d.updated_live[0].encoding.bitrate_bps, 800_000);
    }

    #[test]
    fn same_values_written_differently_are_unchanged() {
        let old = configs(&[("a", "source: testsrc\n")]);
        let new = configs(&[(
            "a",
            "# a comment\nsource:\n  type: testsrc\nencoding:\n  bitrate: 2M\n  keyframeInterval: 2000ms\n",
        )]);
        let d = diff(&old, &new);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(names(&d.unchanged), ["a"]);
    }

    #[test]
    fn only_rate_settings_apply_live() {
        let old = config("a", BASE);
        let live = [
            "  bitrate: 500k\n",
            "  keyframeInterval: 5s\n",
            "  bitrate: 4M\n  keyframeInterval: 1s\n",
        ];
        for extra in live {
            let new = config("a", &format!("{BASE}{extra}"));
            assert_eq!(classify(&old, &new), Change::Live, "{extra}");
        }
        let restart = [
            "source: testsrc\nencoding:\n  width: 320\n  height: 480\n",
            "source: testsrc\nencoding:\n  width: 640\n  height: 360\n",
            &format!("{BASE}  fps: 15\n"),
            &format!("{BASE}  fps: 15\n  bitrate: 500k\n"),
        ];
        for yaml in restart {
            assert_eq!(
                classify(&old, &config("a", yaml)),
                Change::Restart,
                "{yaml}"
            );
        }
    }

    #[test]
    fn empty_to_empty_is_nothing() {
        assert!(diff(&PathConfigs::new(), &PathConfigs::new()).is_empty());
    }

    fn loaded(good: &[(&str, &str)], bad_files: &[&str]) -> LoadedPaths {
        LoadedPaths {
            paths: configs(good),
            errors: bad_files
                .iter()
                .map(|file| ConfigError::new(Path::new(file), "broken"))
                .collect(),
        }
    }

    #[test]
    fn a_broken_file_keeps_its_path_on_the_last_good_config() {
        let running = configs(&[("a", BASE), ("b", BASE)]);
        let r = reconcile(&running, Ok(loaded(&[("b", BASE)], &["config.d/a.yml"])));
        assert_eq!(r.desired, running);
        assert_eq!(kept_names(&r), ["a"]);
        assert!(r.failed.is_empty());
        assert_eq!(r.errors.len(), 1);
        assert!(diff(&running, &r.desired).is_empty());
    }

    #[test]
    fn a_broken_file_that_never_worked_is_failed() {
        let running = configs(&[("b", BASE)]);
        let r = reconcile(&running, Ok(loaded(&[("b", BASE)], &["config.d/new.yml"])));
        assert_eq!(r.desired, running);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0.as_str(), "new");
    }

    #[test]
    fn a_duplicate_does_not_take_down_the_running_path() {
        // `a.yml` ran; someone adds `a.yaml`: both are rejected, `a` runs on.
        let running = configs(&[("a", BASE)]);
        let r = reconcile(
            &running,
            Ok(loaded(&[], &["config.d/a.yaml", "config.d/a.yml"])),
        );
        assert_eq!(r.desired, running);
        assert_eq!(kept_names(&r), ["a"]);
        assert_eq!(r.errors.len(), 2);
    }

    #[test]
    fn errors_without_a_path_name_only_report() {
        let running = configs(&[("a", BASE)]);
        let r = reconcile(
            &running,
            Ok(loaded(&[("a", BASE)], &["config.d/_bad.yml", "config.d"])),
        );
        assert_eq!(r.desired, running);
        assert!(r.kept.is_empty() && r.failed.is_empty());
        assert_eq!(r.errors.len(), 2);
    }

    #[test]
    fn a_missing_directory_keeps_everything() {
        let running = configs(&[("a", BASE), ("b", BASE)]);
        let r = reconcile(
            &running,
            Err(ConfigError::new(Path::new("config.d"), "cannot read")),
        );
        assert_eq!(r.desired, running);
        assert!(r.kept.is_empty() && r.failed.is_empty());
        assert_eq!(r.errors.len(), 1);
    }

    #[test]
    fn fixing_a_file_applies_it() {
        let running = configs(&[("a", BASE)]);
        let fixed = format!("{BASE}  keyframeInterval: 4s\n");
        let r = reconcile(&running, Ok(loaded(&[("a", &fixed)], &[])));
        let d = diff(&running, &r.desired);
        assert_eq!(config_names(&d.updated_live), ["a"]);
        assert_eq!(
            d.updated_live[0].encoding.keyframe_interval,
            Duration::from_secs(4)
        );
    }
}
