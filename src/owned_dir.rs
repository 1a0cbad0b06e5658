//! Folders and files sonde owns, and the places it refuses to write.
//!
//! sonde replaces what it publishes wholesale (a site is swapped in as a folder, a bench
//! report rewrites its files, an export replaces its file), so it must know that what it
//! replaces is its own. A folder is sonde's when it holds sonde's marker file (written with
//! its first output) or is empty; a file is sonde's when it carries sonde's header. Anything
//! else is the user's and is never deleted or overwritten.
//!
//! Some folders are refused whatever they hold: a folder that is, or holds, the config's
//! folder, the store's folder, the home folder or the current folder — `/`, `.`, `..` and an
//! empty path among them — since replacing it would replace them.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// The marker a published site's folder holds.
pub const SITE_MARKER: &str = ".sonde-site";
/// The marker a bench report's folder holds.
pub const REPORT_MARKER: &str = ".sonde-report";

/// Why sonde will not write where it was asked to.
#[derive(Debug, Error)]
pub enum OwnedDirError {
    /// The path is empty: it would resolve to the folder it is relative to.
    #[error(
        "an empty path would be the config's own folder: give sonde a folder of its own, e.g. \"site\""
    )]
    Empty,
    /// The folder is, or holds, a folder sonde must never replace.
    #[error(
        "{} is {what}{}: publishing replaces its folder wholesale, so give sonde a folder of \
         its own, e.g. \"site\"",
        path.display(),
        if *holds { " or holds it" } else { "" }
    )]
    Protected {
        /// The folder asked for, made absolute.
        path: PathBuf,
        /// What it is ("the config's folder", …).
        what: &'static str,
        /// It holds the protected folder rather than being it.
        holds: bool,
    },
    /// The folder exists, is not empty and does not carry sonde's marker.
    #[error(
        "{} is not empty and was not written by sonde (it has no {marker} file); sonde never \
         replaces a folder it did not create: give it an empty or new folder",
        path.display()
    )]
    NotOurs {
        /// The folder.
        path: PathBuf,
        /// The marker it lacks.
        marker: &'static str,
    },
    /// The file exists and sonde did not write it.
    #[error(
        "{} exists and was not written by sonde; sonde never overwrites a file it did not \
         create: remove it or choose another path",
        path.display()
    )]
    FileNotOurs {
        /// The file.
        path: PathBuf,
    },
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The folders an output folder must neither be nor hold.
#[derive(Debug, Clone)]
pub struct Protected(Vec<(PathBuf, &'static str)>);

impl Protected {
    /// The folders of the config file and the store (when it is a file), the home folder and
    /// the current folder.
    pub fn new(config_file: &Path, store: Option<&Path>) -> Protected {
        let mut folders = Vec::new();
        let parent = |path: &Path| {
            absolute(path)
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
        };
        folders.push((resolved(&parent(config_file)), "the config's folder"));
        if let Some(store) = store {
            folders.push((resolved(&parent(store)), "the store's folder"));
        }
        if let Some(home) = std::env::var_os("HOME").filter(|home| !home.is_empty()) {
            folders.push((resolved(&absolute(Path::new(&home))), "the home folder"));
        }
        if let Ok(current) = std::env::current_dir() {
            folders.push((resolved(&current), "the current folder"));
        }
        Protected(folders)
    }

    /// `out` made absolute, or why it must not be written.
    pub fn check(&self, out: &Path) -> Result<PathBuf, OwnedDirError> {
        if out.as_os_str().is_empty() {
            return Err(OwnedDirError::Empty);
        }
        let wanted = resolved(&absolute(out));
        for (folder, what) in &self.0 {
            if folder.starts_with(&wanted) {
                return Err(OwnedDirError::Protected {
                    path: wanted.clone(),
                    what,
                    holds: *folder != wanted,
                });
            }
        }
        Ok(wanted)
    }
}

/// Checks that the folder `path` is sonde's to replace: absent, empty, or holding `marker`.
pub fn check_owned(path: &Path, marker: &'static str) -> Result<(), OwnedDirError> {
    let io = |source| OwnedDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io(err)),
    };
    if path.join(marker).is_file() || entries.next().is_none() {
        Ok(())
    } else {
        Err(OwnedDirError::NotOurs {
            path: path.to_path_buf(),
            marker,
        })
    }
}

/// Creates the folder `path` (and its parents) if needed and claims it with `marker`, after
/// checking it is sonde's ([`check_owned`]).
pub fn claim(path: &Path, marker: &'static str) -> Result<(), OwnedDirError> {
    check_owned(path, marker)?;
    let io = |source| OwnedDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(io)?;
    std::fs::write(path.join(marker), marker_text()).map_err(io)
}

/// What a marker file says to whoever finds it.
pub fn marker_text() -> &'static str {
    "This folder is written by sonde. Its contents are replaced on every run: keep your own \
     files elsewhere.\n"
}

/// Writes `bytes` to the file `path` atomically (a temporary file beside it, then a rename),
/// refusing to replace an existing file for which `ours` is false.
pub fn write_file(
    path: &Path,
    bytes: &[u8],
    ours: impl Fn(&[u8]) -> bool,
) -> Result<(), OwnedDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OwnedDirError::Io { path, source }
    };
    match std::fs::read(path) {
        Ok(existing) if !ours(&existing) => {
            return Err(OwnedDirError::FileNotOurs {
                path: path.to_path_buf(),
            });
        }
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io(path)(err)),
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let temporary = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(io(path)(err));
    }
    Ok(())
}

/// `path` made absolute against the current folder, with `.` and `..` resolved lexically.
fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// An absolute path with the symbolic links of its longest existing prefix resolved, so a
/// link to a protected folder is that folder.
fn resolved(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_that_holds_a_protected_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("conf/sonde.toml");
        let store = dir.path().join("data/sonde.db");
        let protected = Protected::new(&config, Some(&store));
        for refused in [
            dir.path().join("conf"),
            dir.path().join("conf/../data"),
            dir.path().to_path_buf(),
            PathBuf::from("/"),
            PathBuf::from("."),
            PathBuf::from(".."),
        ] {
            assert!(
                matches!(
                    protected.check(&refused),
                    Err(OwnedDirError::Protected { .. })
                ),
                "{}",
                refused.display()
            );
        }
        assert!(matches!(
            protected.check(Path::new("")),
            Err(OwnedDirError::Empty)
        ));
        let site = protected.check(&dir.path().join("conf/site")).unwrap();
        assert!(site.ends_with("conf/site"));
    }

    #[test]
    fn only_an_empty_or_marked_folder_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        assert!(check_owned(&out, SITE_MARKER).is_ok(), "absent");
        std::fs::create_dir(&out).unwrap();
        assert!(check_owned(&out, SITE_MARKER).is_ok(), "empty");
        std::fs::write(out.join("notes.txt"), "mine").unwrap();
        assert!(matches!(
            check_owned(&out, SITE_MARKER),
            Err(OwnedDirError::NotOurs { .. })
        ));
        std::fs::write(out.join(SITE_MARKER), "").unwrap();
        assert!(check_owned(&out, SITE_MARKER).is_ok(), "marked");
        assert!(
            check_owned(&out, REPORT_MARKER).is_err(),
            "a site is not a report"
        );
    }

    #[test]
    fn a_file_is_replaced_only_when_it_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.yaml");
        let ours = |bytes: &[u8]| bytes.starts_with(b"# sonde");
        write_file(&path, b"# sonde 1", ours).unwrap();
        write_file(&path, b"# sonde 2", ours).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"# sonde 2");
        std::fs::write(&path, "user: config").unwrap();
        assert!(matches!(
            write_file(&path, b"# sonde 3", ours),
            Err(OwnedDirError::FileNotOurs { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"user: config");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }
}
