//! The per-install API token: `{data_dir}/api.token`, made at first start.
//!
//! 32 random bytes as 64 hex characters, written with mode 0600 into a new
//! file (never over an existing one), then renamed into place, so a reader
//! never sees half a token and no other user can read it. `[api] token` in
//! the config takes precedence; `dockline-agent token` prints the one in
//! force.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::Secret;

/// The token file's name in the data folder.
pub const FILE: &str = "api.token";

/// The token file of a data folder.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Reads `{data_dir}/api.token`, making it first if it does not exist.
pub fn load_or_create(data_dir: &Path) -> std::io::Result<Secret> {
    let file = path(data_dir);
    match read(&file) {
        Ok(Some(token)) => return Ok(token),
        Ok(None) => {}
        Err(e) => return Err(e),
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = data_dir.join(format!("{FILE}.tmp.{}", std::process::id()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    // Another agent on the same folder may have won the race: keep theirs.
    if std::fs::hard_link(&tmp, &file).is_err()
        && let Ok(Some(theirs)) = read(&file)
    {
        let _ = std::fs::remove_file(&tmp);
        return Ok(theirs);
    }
    std::fs::remove_file(&tmp)?;
    Ok(Secret::new(token))
}

/// Reads the token file; `None` when it does not exist.
pub fn read(file: &Path) -> std::io::Result<Option<Secret>> {
    match std::fs::read_to_string(file) {
        Ok(text) if text.trim().len() >= 16 => Ok(Some(Secret::new(text.trim()))),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} holds no token (fewer than 16 characters); delete it and restart the agent to make a new one",
                file.display()
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_with_mode_0600_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path()).expect("token");
        assert_eq!(first.expose().len(), 64);
        let mode = std::fs::metadata(path(dir.path()))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(dir.path()).expect("token");
        assert_eq!(first.expose(), again.expose());
        let leftovers = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary file is left");
    }
}
