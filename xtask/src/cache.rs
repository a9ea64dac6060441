//! The cache every run shares (installed servers, built binaries, logs, run directories) and the
//! locks that keep two runs from building the same thing at once.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, Flock, FlockArg, fcntl};

use crate::process::{alive, read_pid};
use crate::say;

/// The cache root: CHATFLOW_CACHE, or ~/.cache/chatflow.
pub fn root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHATFLOW_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/chatflow")
}

/// A directory under the cache, created if missing.
pub fn dir(name: &str) -> Result<PathBuf> {
    let dir = root().join(name);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The log file of NAME under the cache's logs directory.
pub fn log(name: &str) -> Result<PathBuf> {
    Ok(dir("logs")?.join(format!("{name}.log")))
}

/// Runs F holding the cache lock NAME. A second run waits, and then finds the work done.
pub fn with_lock<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let root = root();
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let path = root.join(format!("{name}.lock"));
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let _lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((file, Errno::EWOULDBLOCK)) => {
            say!("waiting for another run to finish with {name}");
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| errno)
                .with_context(|| format!("locking {}", path.display()))?
        }
        Err((_, errno)) => {
            return Err(errno).with_context(|| format!("locking {}", path.display()));
        }
    };
    // Children inherit the lock, so a build orphaned by an interrupted run holds it until it
    // exits, and a later run does not start the same build beside it.
    fcntl(&*_lock, FcntlArg::F_SETFD(FdFlag::empty()))
        .with_context(|| format!("sharing {} with children", path.display()))?;
    f()
}

/// Marks RUN_DIR as this run's, so another run on the machine knows it is taken.
pub fn claim(run_dir: &Path) -> Result<()> {
    fs::create_dir_all(run_dir)?;
    fs::write(run_dir.join("owner"), format!("{}\n", std::process::id()))
        .with_context(|| format!("claiming {}", run_dir.display()))
}

/// The PID of the run that claimed RUN_DIR, if it is alive and is not this one: another test run
/// on the machine, sharing the cache and the ports.
pub fn run_owner(run_dir: &Path) -> Option<i32> {
    read_pid(&run_dir.join("owner")).filter(|&pid| pid != std::process::id() as i32 && alive(pid))
}
