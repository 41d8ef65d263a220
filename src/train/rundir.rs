//! The run folder (`train --out`): locked while a run writes into it, never taken from an earlier run silently,
//! cleared of the temporary files an interrupted run leaves, written through temporary files and renames (an
//! epoch's last.safetensors last of its files: the point --resume starts from), and repaired on --resume when a
//! kill fell between the files of one epoch (in runs written before that order).

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::model::checkpoint::{self, Meta};
use crate::train::runlog::EpochLine;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A run folder that holds an earlier run (its log or checkpoints) is never silently overwritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingRun {
    /// An error that says what to do: the user named the folder.
    Refuse,
    /// The earlier run is moved to the first free `NAME-K` beside it: the default folder, reused by every run.
    MoveAside,
    /// Written over: the files a run writes are removed (--overwrite, and each run of an ablation or a holdout,
    /// whose folder it owns).
    Overwrite,
}

/// Files whose presence means a folder holds a run.
const RUN_FILES: [&str; 3] = ["metrics.jsonl", "last.safetensors", "best.safetensors"];

/// Every other file a run writes at the top of its folder.
const RUN_OUTPUTS: [&str; 3] = ["metrics.csv", "curves.png", "roc.png"];
/// The folder of the gradient charts (`grad_chart`).
const GRAD_DIR: &str = "grad";

/// Where the gradient chart of step `t` goes: GRAD_DIR/step-NNNNNN.png.
pub fn grad_chart(out: &Path, t: u64) -> PathBuf {
    out.join(GRAD_DIR).join(format!("step-{t:06}.png"))
}

/// Whether a file name is one that `grad_chart` gives.
fn is_grad_chart(name: &str) -> bool {
    let step = name.strip_prefix("step-").and_then(|n| n.strip_suffix(".png"));
    step.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The lock file: it holds the id of the process that writes into the folder.
pub const LOCK: &str = "dfgpu.lock";

/// A run folder that this process holds: locked until dropped.
pub struct RunDir {
    pub dir: PathBuf,
    /// What becomes of the earlier run it holds (`clear_earlier`): MoveAside or Overwrite; None when it holds none.
    earlier: Option<ExistingRun>,
    /// Whether this run made the folder: dropped empty (an error before the first file), it goes too.
    created: bool,
}

/// Whether a process runs under this id (Linux's /proc; elsewhere every lock counts as stale).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

impl RunDir {
    /// Creates and locks `dir`, then checks it: a folder that holds an earlier run is an error (`Refuse`) or noted
    /// for `clear_earlier`, unless `resume` is a checkpoint in it (that run goes on). Stale temporary files go.
    pub fn open(dir: &Path, existing: ExistingRun, resume: Option<&Path>, log: &mut dyn FnMut(&str)) -> Result<RunDir> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        lock(dir, log)?;
        // Only now: a RunDir removes the lock when dropped.
        let mut run = RunDir { dir: dir.to_path_buf(), earlier: None, created };
        let held: Vec<&str> = RUN_FILES.iter().filter(|f| dir.join(f).exists()).copied().collect();
        // Resuming into the checkpoint's own folder continues that run; any other folder is a run of its own.
        let own = |ckpt: &Path| {
            let d = ckpt.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            matches!((d.canonicalize(), dir.canonicalize()), (Ok(a), Ok(b)) if a == b)
        };
        if !held.is_empty() && !resume.is_some_and(own) {
            // last.safetensors is an epoch's last file: without it, no epoch of that run finished.
            let last = dir.join("last.safetensors");
            if existing == ExistingRun::Refuse && last.exists() {
                return Err(Error::Invalid(format!(
                    "{}: holds an earlier run ({}): choose another --out, continue it with --resume {}, or pass \
                     --overwrite",
                    dir.display(),
                    held.join(", "),
                    last.display()
                )));
            }
            if existing == ExistingRun::Refuse {
                return Err(Error::Invalid(format!(
                    "{}: holds the files of an earlier run that ended in its first epoch ({}; no last.safetensors \
                     to resume from): pass --overwrite to start again, or choose another --out",
                    dir.display(),
                    held.join(", ")
                )));
            }
            run.earlier = Some(existing);
        }
        for e in std::fs::read_dir(dir).map_err(Error::io(dir))? {
            let p = e.map_err(Error::io(dir))?.path();
            if p.is_file() && p.extension().is_some_and(|x| x == "tmp") {
                std::fs::remove_file(&p).map_err(Error::io(&p))?;
                log(&format!("removed {}: a temporary file left by an interrupted run", p.display()));
            }
        }
        Ok(run)
    }

    /// The earlier run found by `open`, once the data is in and the model runs (a failure before leaves it where
    /// it was): moved to the first free `NAME-K` beside the folder (every file but the lock), or, with --overwrite,
    /// its files removed, so that a run killed before its first epoch ends leaves none of the earlier run's files
    /// beside its own. Then the folder of the gradient charts, if `grad_charts`; a `grad` that is not a folder is
    /// refused first, with the earlier run untouched.
    pub fn clear_earlier(&mut self, grad_charts: bool, log: &mut dyn FnMut(&str)) -> Result<()> {
        let grad = self.dir.join(GRAD_DIR);
        if grad_charts && grad.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            return Err(Error::Invalid(format!(
                "{} is not a folder: the gradient charts (--grad-report) go there; move it, or pass --grad-report 0",
                grad.display()
            )));
        }
        match self.earlier.take() {
            Some(ExistingRun::MoveAside) => self.move_aside(log)?,
            Some(ExistingRun::Overwrite) => self.remove_earlier(log)?,
            _ => {}
        }
        if grad_charts {
            std::fs::create_dir_all(&grad).map_err(Error::io(&grad))?;
        }
        Ok(())
    }

    fn move_aside(&self, log: &mut dyn FnMut(&str)) -> Result<()> {
        let dir = &self.dir;
        let name = dir.file_name().map_or("run".into(), |n| n.to_string_lossy().into_owned());
        let aside = (1..).map(|k| dir.with_file_name(format!("{name}-{k}"))).find(|p| !p.exists()).unwrap();
        std::fs::create_dir(&aside).map_err(Error::io(&aside))?;
        for e in std::fs::read_dir(dir).map_err(Error::io(dir))? {
            let e = e.map_err(Error::io(dir))?;
            if e.file_name() != LOCK {
                std::fs::rename(e.path(), aside.join(e.file_name())).map_err(Error::io(&e.path()))?;
            }
        }
        log(&format!("{} held an earlier run: moved it to {}", dir.display(), aside.display()));
        Ok(())
    }

    /// Removes the files a run writes (and only those: anything else in the folder is the user's).
    fn remove_earlier(&self, log: &mut dyn FnMut(&str)) -> Result<()> {
        let mut removed = Vec::new();
        for name in RUN_FILES.iter().chain(&RUN_OUTPUTS) {
            let p = self.dir.join(name);
            if p.is_file() {
                std::fs::remove_file(&p).map_err(Error::io(&p))?;
                removed.push(name.to_string());
            }
        }
        // The charts in a real grad folder: never through a link, which may lead out of the run's folder.
        let grad = self.dir.join(GRAD_DIR);
        if std::fs::symlink_metadata(&grad).is_ok_and(|m| m.is_dir()) {
            let mut charts = 0;
            for e in std::fs::read_dir(&grad).map_err(Error::io(&grad))? {
                let e = e.map_err(Error::io(&grad))?;
                if is_grad_chart(&e.file_name().to_string_lossy()) && e.file_type().is_ok_and(|t| t.is_file()) {
                    std::fs::remove_file(e.path()).map_err(Error::io(&e.path()))?;
                    charts += 1;
                }
            }
            let _ = std::fs::remove_dir(&grad); // only if empty
            if charts > 0 {
                removed.push(format!("{charts} gradient chart{}", if charts == 1 { "" } else { "s" }));
            }
        }
        log(&format!("{}: written over: removed the earlier run's {}", self.dir.display(), removed.join(", ")));
        Ok(())
    }
}

/// Takes the lock: created anew, so that of two runs only one gets it. A lock whose process has ended (a
/// killed run) is taken over.
fn lock(dir: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    let path = dir.join(LOCK);
    loop {
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => return write!(f, "{}", std::process::id()).map_err(Error::io(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let Ok(pid) = text.trim().parse::<u32>() else {
                    return Err(Error::Invalid(format!(
                        "{}: a lock that names no process ('{}'): if no run writes into {}, remove it",
                        path.display(),
                        text.trim(),
                        dir.display()
                    )));
                };
                if alive(pid) {
                    return Err(Error::Invalid(format!(
                        "{}: another dfgpu run (process {pid}) is writing into this folder ({} says so): wait \
                         for it to end, or choose another --out",
                        dir.display(),
                        path.display()
                    )));
                }
                log(&format!("{}: taken over from process {pid}, which is no longer running", path.display()));
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path)(e)),
                    _ => {}
                }
            }
            Err(e) => return Err(Error::io(&path)(e)),
        }
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(LOCK));
        if self.created {
            let _ = std::fs::remove_dir(&self.dir); // only if empty
        }
    }
}

/// The metrics log of a run resumed from `ckpt` (of `epoch`, with metadata `meta`): the lines of the epochs up
/// to the checkpoint's, from the log beside it (a line that is not an epoch's, as an older dfgpu wrote for some
/// group names, is left out with a note). A kill between the checkpoint and the log loses the epoch's line: it is
/// restored from the checkpoint, which carries it (without the timing).
pub fn resumed_log(ckpt: &Path, epoch: usize, meta: &Meta, log: &mut dyn FnMut(&str)) -> Vec<EpochLine> {
    let path = ckpt.with_file_name("metrics.jsonl");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines = Vec::new();
    for (i, l) in old.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        match serde_json::from_str::<EpochLine>(l) {
            Ok(line) if line.row.epoch == lines.len() + 1 => lines.push(line),
            _ => log(&format!(
                "{}:{}: not the metrics line of epoch {}: left out",
                path.display(),
                i + 1,
                lines.len() + 1
            )),
        }
        if lines.len() == epoch {
            break;
        }
    }
    let kept: Option<EpochLine> = meta.get("dfgpu.metrics").and_then(|m| serde_json::from_str(m).ok());
    if let Some(line) = kept.filter(|_| lines.len() + 1 == epoch) {
        lines.push(line);
        log(&format!("{}: restored epoch {epoch}'s line from {}", path.display(), ckpt.display()));
    }
    lines
}

/// On --resume from `ckpt`: when its epoch was the best so far but `out`'s best.safetensors is not that epoch's
/// (a kill between the two checkpoints), the checkpoint is copied there; both were written with the same content.
pub fn restore_best(ckpt: &Path, meta: &Meta, out: &Path, log: &mut dyn FnMut(&str)) -> Result<()> {
    if meta.get("dfgpu.best").map(String::as_str) != Some("true") {
        return Ok(());
    }
    let best = out.join("best.safetensors");
    let epoch = |m: &Meta| m.get("dfgpu.epoch").cloned();
    if checkpoint::read_some(&best, |_| false).is_ok_and(|(_, m)| epoch(&m) == epoch(meta)) {
        return Ok(());
    }
    write_atomic(&best, &std::fs::read(ckpt).map_err(Error::io(ckpt))?)?;
    log(&format!("{}: restored from {}, the best epoch so far", best.display(), ckpt.display()));
    Ok(())
}
