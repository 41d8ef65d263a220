//! Opening a data set for a model: a pack, a folder or a CSV, as the model's input geometry keeps it; and the
//! built-in synthetic set, generated once into a cache folder.

use crate::data::folder::Dataset;
use crate::data::input::Input;
use crate::data::loaded::Loaded;
use crate::data::pack;
use crate::data::synth::{self, SynthConfig};
use crate::error::{Choice, Error, Result};
use std::path::{Path, PathBuf};

/// The built-in set in the cache folder (~/.cache/dfgpu/synth/...), generated on first use.
pub fn builtin_data(cfg: &SynthConfig, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join("dfgpu/synth").join(format!(
        "v1-{}real-{}fake-{}px-seed{}-{}",
        cfg.n_real,
        cfg.n_fake,
        cfg.size,
        cfg.seed,
        cfg.families.join("+")
    ));
    let done = dir.join(".complete");
    if !done.exists() {
        log(&format!("generating the built-in synthetic set in {}", dir.display()));
        synth::write(cfg, &dir)?;
        std::fs::write(&done, b"").map_err(Error::io(&done))?;
    }
    Ok(dir)
}

/// Opens a dataset as `input` keeps it for a model of `size`: a packed file (mapped, nothing decoded; it must
/// have been packed for the same size and input) or a folder or CSV (decoded in parallel, unreadable files
/// skipped and listed, images smaller than the model counted).
pub fn open_data(spec: &Path, size: usize, input: Input, log: &mut dyn FnMut(&str)) -> Result<Loaded> {
    let l = if pack::is_pack(spec) {
        let l = pack::open(spec, log)?;
        if (l.size, l.input) != (size, input) {
            return Err(Error::Invalid(format!(
                "{}: packed for {p}x{p} inputs by --input {}, the model takes {size}x{size} by --input {}: pack \
                 again with --size {size} --input {}, or train with --size {p} --input {}",
                spec.display(),
                l.input.name(),
                input.name(),
                input.name(),
                l.input.name(),
                p = l.size
            )));
        }
        l
    } else {
        Loaded::decode(&Dataset::open(spec)?, size, input, spec, log)?
    };
    // A class that no image is left of gives no metric worth printing: say which files took it away.
    let [r, f] = l.counts();
    if r == 0 || f == 0 {
        let which = if r == 0 { "real" } else { "fake" };
        let why = match l.skipped.len() {
            0 => String::new(),
            n => format!("; {n} unreadable file(s) skipped:\n  {}", l.skipped.join("\n  ")),
        };
        return Err(Error::Invalid(format!(
            "{}: no {which} image could be read ({r} real, {f} fake){why}",
            spec.display()
        )));
    }
    let padded = l.padded();
    if padded > 0 {
        log(&format!(
            "{}: {padded} of {} images are smaller than {size}x{size} on a side: padded by reflection",
            spec.display(),
            l.len()
        ));
    }
    Ok(l)
}
