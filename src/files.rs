//! Files written whole or not at all: through a temporary file beside the target (so that the rename stays on
//! one file system), a crash leaves the old file or the new one, never a torn one.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Where `path` is written before it is renamed into place: `path` with `.tmp` appended. A run folder's files of
/// this kind are a killed run's, removed when the next run starts (train/rundir.rs).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Writes `bytes` to `path` through its temporary file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}
