//! Writing a file so that a crash at any instant leaves either the old content or the new, never
//! a torn mix: the bytes go to a temporary file beside the target, are fsynced, renamed over it,
//! and the directory is fsynced so the rename itself survives a power cut. Secrets (tokens, keys,
//! credentials) are written [`Visibility::Private`]: mode 0600 from the moment the temporary file
//! exists, so there is no instant at which another user could open it.
//!
//! One implementation for every crate that keeps state on disk (agent, server, operator tools,
//! TUF client), so they cannot differ in how safe a write is.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Who may read the file written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Mode 0600: only this user.
    Private,
    /// Mode 0640: this user, and its group may read (a broker's password file, read by the
    /// broker's group).
    OwnerAndGroup,
    /// Mode 0644 (less the umask): anyone may read it.
    Public,
}

impl Visibility {
    fn mode(self) -> u32 {
        match self {
            Visibility::Private => 0o600,
            Visibility::OwnerAndGroup => 0o640,
            Visibility::Public => 0o644,
        }
    }
}

/// The temporary file a write of `path` goes through: hidden, in the same directory (a rename
/// is atomic only within one file system).
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` with `bytes`, crash-safely, creating its directory if needed.
pub fn write_atomic(path: &Path, bytes: &[u8], visibility: Visibility) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = temporary_path(path);
    // A temporary file left by a crash may have other permissions; start afresh.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(visibility.mode())
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// [`write_atomic`], private.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic(path, bytes, Visibility::Private)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_private_file_is_0600_and_replaces_the_old_content_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/token");
        write_private(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(mode(&path), 0o600);
        write_private(&path, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        assert!(!temporary_path(&path).exists(), "nothing left beside it");
    }

    #[test]
    fn a_leftover_temporary_file_from_a_crash_does_not_leak_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let tmp = temporary_path(&path);
        std::fs::write(&tmp, b"torn").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
        write_private(&path, b"whole").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn a_public_file_is_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.json");
        write_atomic(&path, b"{}", Visibility::Public).unwrap();
        assert_eq!(mode(&path) & 0o600, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    }
}
