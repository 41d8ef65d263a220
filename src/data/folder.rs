//! Datasets: a folder (`DIR/real/**` and `DIR/fake/**`, any nesting; a fake's first subfolder names its group,
//! one per generator or source set), or a CSV file of `path,label[,group]` or with a header naming those columns
//! (label 0/1 or real/fake; paths relative to the CSV's folder). Problems a user can fix are errors before training starts, naming the file or folder.

use crate::error::{Error, Result};
use crate::rng::Rng;
use std::path::{Path, PathBuf};

pub const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "bmp"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    /// 1 fake, 0 real.
    pub label: u8,
    /// For fakes: the generator group (first subfolder under fake/, or the CSV's third column), if any.
    pub group: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub samples: Vec<Sample>,
    /// What the folder walk left out, and why (links that loop back into the data folder).
    pub skipped: Vec<String>,
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A walk for image files that reaches each folder once. A link to a folder inside or above one of its roots,
/// or to one already walked, is skipped and reported: following `real/loop -> ..` would never end, or would
/// label every fake under it real.
pub(crate) struct Walk {
    roots: Vec<PathBuf>,
    seen: std::collections::HashSet<PathBuf>,
    /// The links not followed, each with why.
    pub skipped: Vec<String>,
}

impl Walk {
    pub fn new(roots: &[&Path]) -> Result<Walk> {
        let roots = roots.iter().map(|r| r.canonicalize().map_err(Error::io(r))).collect::<Result<_>>()?;
        Ok(Walk { roots, seen: Default::default(), skipped: Vec::new() })
    }

    /// Every image file under `dir`, in the order the folders list them.
    pub fn images(&mut self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        self.walk(dir, &mut out)?;
        Ok(out)
    }

    fn walk(&mut self, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        if !self.seen.insert(dir.canonicalize().map_err(Error::io(dir))?) {
            return Ok(());
        }
        for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
            let entry = entry.map_err(Error::io(dir))?;
            let path = entry.path();
            if !path.is_dir() {
                if is_image(&path) {
                    out.push(path);
                }
                continue;
            }
            if entry.file_type().map_err(Error::io(&path))?.is_symlink() {
                let to = path.canonicalize().map_err(Error::io(&path))?;
                if self.seen.contains(&to) || self.roots.iter().any(|r| to.starts_with(r) || r.starts_with(&to)) {
                    self.skipped.push(format!(
                        "{}: a link to {}, inside or above the data folder or already walked (a loop): not \
                         followed",
                        path.display(),
                        to.display()
                    ));
                    continue;
                }
            }
            self.walk(&path, out)?;
        }
        Ok(())
    }
}

/// Every image file under `dir`, sorted (so that a dataset is the same on every machine), and the links skipped.
pub(crate) fn images_under(dir: &Path) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut walk = Walk::new(&[dir])?;
    let mut files = walk.images(dir)?;
    files.sort();
    Ok((files, walk.skipped))
}

impl Dataset {
    /// A folder dataset or a CSV file, by what `spec` is.
    pub fn open(spec: &Path) -> Result<Dataset> {
        let ds = if spec.is_dir() {
            Self::folder(spec)?
        } else if spec.is_file() && spec.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
            Self::csv(spec)?
        } else if spec.extension().is_some_and(|e| e.eq_ignore_ascii_case("dfpack")) {
            return Err(Error::Invalid(format!(
                "{}: not a readable pack: it does not start with dfgpu's pack header (damaged, or not written by \
                 dfgpu pack)",
                spec.display()
            )));
        } else if spec.exists() {
            return Err(Error::Invalid(format!(
                "{}: a dataset is a folder (with real/ and fake/), a .csv file or a pack (dfgpu pack)",
                spec.display()
            )));
        } else {
            return Err(Error::Invalid(format!("{}: no such folder or file", spec.display())));
        };
        let [real, fake] = ds.counts();
        if real == 0 || fake == 0 {
            let which = if real == 0 { "real" } else { "fake" };
            return Err(Error::Invalid(format!("{}: no {which} images ({real} real, {fake} fake)", spec.display())));
        }
        Ok(ds)
    }

    fn folder(dir: &Path) -> Result<Dataset> {
        let mut samples = Vec::new();
        let classes = [("real", 0u8), ("fake", 1u8)].map(|(class, label)| (dir.join(class), class, label));
        if let Some((_, class, _)) = classes.iter().find(|(root, ..)| !root.is_dir()) {
            return Err(Error::Invalid(format!(
                "{}: missing folder '{class}/' (a folder dataset has real/ and fake/ inside)",
                dir.display()
            )));
        }
        let mut walk = Walk::new(&[dir, &classes[0].0, &classes[1].0])?;
        for (root, _, label) in classes {
            let mut files = walk.images(&root)?;
            files.sort();
            for path in files {
                let rel = path.strip_prefix(&root).unwrap_or(&path);
                let group = (label == 1 && rel.components().count() > 1)
                    .then(|| rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned());
                samples.push(Sample { path, label, group });
            }
        }
        Ok(Dataset { samples, skipped: walk.skipped })
    }

    /// A CSV (RFC 4180: quoted fields, a UTF-8 BOM) of path,label[,group], or with a header naming them
    /// (`CSV_COLUMNS`, in any order, other columns ignored).
    fn csv(file: &Path) -> Result<Dataset> {
        let bytes = std::fs::read(file).map_err(Error::io(file))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let mut rows =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(&bytes[..]);
        let mut samples = Vec::new();
        // Column indices of (path, label, group): by position until a header says otherwise.
        let mut cols = (0, 1, Some(2));
        for (i, row) in rows.records().enumerate() {
            let row = row.map_err(|e| Error::corrupt(file, format!("not a readable CSV: {e}")))?;
            let line = row.position().map_or(i as u64 + 1, |p| p.line());
            let bad = |m: String| Error::corrupt_at(file, line, m);
            if i == 0 && row.get(1).is_none_or(|l| label(l).is_none()) {
                cols = header_columns(&row).map_err(bad)?;
                continue;
            }
            let cell = |c: usize| row.get(c).unwrap_or("");
            let label = label(cell(cols.1)).ok_or_else(|| {
                let got: Vec<&str> = row.iter().collect();
                bad(format!("label '{}' is not 0, 1, real or fake (the row: {got:?})", cell(cols.1)))
            })?;
            if cell(cols.0).is_empty() {
                return Err(bad("no path".into()));
            }
            let path = base.join(cell(cols.0));
            if !path.is_file() {
                return Err(bad(format!("{} does not exist", path.display())));
            }
            let group = cols.2.map(cell).filter(|g| !g.is_empty() && label == 1).map(str::to_string);
            samples.push(Sample { path, label, group });
        }
        Ok(Dataset { samples, skipped: Vec::new() })
    }

    /// [real, fake].
    pub fn counts(&self) -> [usize; 2] {
        let fake = self.samples.iter().filter(|s| s.label == 1).count();
        [self.samples.len() - fake, fake]
    }

    /// One line for the start of a run: the counts and the imbalance.
    pub fn describe(&self) -> String {
        describe(self.counts())
    }

    /// A stratified, seeded split: `fraction` of each class (at least one each) goes to the second set.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        let labels: Vec<u8> = self.samples.iter().map(|s| s.label).collect();
        let (train, val) = stratified_split(&labels, fraction, seed)?;
        let pick = |idx: Vec<usize>| Dataset {
            samples: idx.into_iter().map(|i| self.samples[i].clone()).collect(),
            skipped: Vec::new(),
        };
        Ok((pick(train), pick(val)))
    }
}

/// The column names a CSV header may use (case aside): path, label and the optional group.
pub const CSV_COLUMNS: [(&str, &[&str]); 3] = [
    ("path", &["path", "file", "filename", "filepath", "image", "image_path"]),
    ("label", &["label", "target", "class", "is_fake"]),
    ("group", &["group", "generator", "method", "source"]),
];

/// A CSV label: 0 or real, 1 or fake.
fn label(cell: &str) -> Option<u8> {
    match cell.to_ascii_lowercase().as_str() {
        "0" | "real" => Some(0),
        "1" | "fake" => Some(1),
        _ => None,
    }
}

/// The (path, label, group) columns that a header names, or what it should have said.
fn header_columns(row: &csv::StringRecord) -> std::result::Result<(usize, usize, Option<usize>), String> {
    let find = |names: &[&str]| row.iter().position(|c| names.iter().any(|n| c.eq_ignore_ascii_case(n)));
    let (path, label, group) = (find(CSV_COLUMNS[0].1), find(CSV_COLUMNS[1].1), find(CSV_COLUMNS[2].1));
    match (path, label) {
        (Some(p), Some(l)) => Ok((p, l, group)),
        _ => {
            let names: Vec<String> =
                CSV_COLUMNS.iter().map(|(what, names)| format!("{what}: {}", names.join(" or "))).collect();
            let got: Vec<&str> = row.iter().collect();
            Err(format!(
                "the first row {got:?} is neither a path,label row (label 0, 1, real or fake) nor a header naming the \
                 columns ({}; case aside, group optional)",
                names.join("; ")
            ))
        }
    }
}

/// "N images: R real, F fake (1 real to F/R fake)".
pub fn describe([r, f]: [usize; 2]) -> String {
    format!("{} images: {r} real, {f} fake (1 real to {:.2} fake)", r + f, f as f64 / r.max(1) as f64)
}

/// The indices of a stratified, seeded split of `labels`: `fraction` of each class (at least one each) in the
/// second list.
pub fn stratified_split(labels: &[u8], fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(Error::Invalid(format!("validation fraction {fraction} must be between 0 and 1")));
    }
    let mut rng = Rng::new(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for label in [0u8, 1] {
        let mut class: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == label).collect();
        rng.shuffle(&mut class);
        if class.len() < 2 {
            return Err(Error::Invalid(format!("cannot split {} image(s) of class {label}", class.len())));
        }
        let n_val = ((class.len() as f64 * fraction).round() as usize).clamp(1, class.len() - 1);
        val.extend_from_slice(&class[..n_val]);
        train.extend_from_slice(&class[n_val..]);
    }
    Ok((train, val))
}
