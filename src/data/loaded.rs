//! Decoded images at the model's input size, ready to batch: decoded from a dataset into memory (in parallel),
//! or mapped from a packed file (data/pack.rs) without decoding anything. A split or a subset shares the pixels.

use crate::data::augment::Augment;
use crate::data::folder::{load_rgb, stratified_split, Dataset};
use crate::error::Result;
use crate::tensor::{Layout, Tensor};
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the pixels live: size x size x 3 bytes per image, back to back.
pub enum Pixels {
    Owned(Vec<u8>),
    Mapped { map: memmap2::Mmap, start: usize, len: usize },
}

impl std::ops::Deref for Pixels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Pixels::Owned(v) => v,
            Pixels::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }
}

pub struct Loaded {
    pub size: usize,
    pixels: Arc<Pixels>,
    /// Image i of this set is image rows[i] of the pixels.
    rows: Vec<usize>,
    pub labels: Vec<u8>,
    pub groups: Vec<Option<String>>,
    /// Files that could not be read, with why: skipped, counted, reported.
    pub skipped: Vec<String>,
}

impl Loaded {
    /// Images already decoded, `size` x `size` RGB each.
    pub fn new(size: usize, pixels: Pixels, labels: Vec<u8>, groups: Vec<Option<String>>) -> Loaded {
        assert_eq!(pixels.len(), labels.len() * size * size * 3, "pixels for every label");
        assert_eq!(groups.len(), labels.len());
        let rows = (0..labels.len()).collect();
        Loaded { size, pixels: Arc::new(pixels), rows, labels, groups, skipped: Vec::new() }
    }

    /// Decodes a dataset at `size` x `size`, in parallel; unreadable files are skipped and listed. `log` gets a
    /// progress line every few seconds. A set too large for this machine's memory is an error that says to
    /// pack it, before anything is decoded.
    pub fn decode(ds: &Dataset, size: usize, what: &Path, log: &mut dyn FnMut(&str)) -> Result<Loaded> {
        let n = ds.samples.len();
        fits_in_memory(what, n, size, available_memory())?;
        let (mut px, mut labels, mut groups, mut skipped) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (start, mut last) = (Instant::now(), Instant::now());
        for chunk in ds.samples.chunks(1024) {
            let decoded: Vec<_> = chunk.par_iter().map(|s| load_rgb(&s.path, size as u32)).collect();
            for (s, r) in chunk.iter().zip(decoded) {
                match r {
                    Ok(p) => {
                        px.extend(p);
                        labels.push(s.label);
                        groups.push(s.group.clone());
                    }
                    Err(e) => skipped.push(e.to_string()),
                }
            }
            let done = labels.len() + skipped.len();
            if last.elapsed() >= Duration::from_secs(5) && done < n {
                last = Instant::now();
                let rate = done as f64 / start.elapsed().as_secs_f64();
                log(&format!(
                    "decoding: {done}/{n} images, {rate:.0} images/s, done in {:.0} s",
                    (n - done) as f64 / rate
                ));
            }
        }
        let skipped = [ds.skipped.clone(), skipped].concat(); // the walk's first: it ran first
        Ok(Loaded { skipped, ..Loaded::new(size, Pixels::Owned(px), labels, groups) })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// [real, fake].
    pub fn counts(&self) -> [usize; 2] {
        let fake = self.labels.iter().filter(|&&y| y == 1).count();
        [self.len() - fake, fake]
    }

    /// Image i, size x size x 3 bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.size * self.size * 3;
        &self.pixels[self.rows[i] * per..(self.rows[i] + 1) * per]
    }

    /// The images `idx`, sharing the pixels.
    pub fn subset(&self, idx: &[usize]) -> Loaded {
        Loaded {
            size: self.size,
            pixels: self.pixels.clone(),
            rows: idx.iter().map(|&i| self.rows[i]).collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            groups: idx.iter().map(|&i| self.groups[i].clone()).collect(),
            skipped: Vec::new(),
        }
    }

    /// The stratified, seeded split that `Dataset::split` makes.
    pub fn split(&self, fraction: f64, seed: u64) -> Result<(Loaded, Loaded)> {
        let (train, val) = stratified_split(&self.labels, fraction, seed)?;
        Ok((self.subset(&train), self.subset(&val)))
    }

    /// A u8 NHWC batch and its f32 labels; with `aug`, image k augmented with seed `aug.1` + k.
    pub fn batch(&self, idx: &[usize], aug: Option<(&Augment, u64)>) -> Result<(Tensor, Tensor)> {
        let per = self.size * self.size * 3;
        let mut px = vec![0u8; idx.len() * per];
        px.par_chunks_mut(per).zip(idx).enumerate().try_for_each(|(k, (dst, &i))| {
            dst.copy_from_slice(self.image(i));
            match aug {
                Some((a, seed)) => a.apply(dst, self.size, seed.wrapping_add(k as u64)),
                None => Ok(()),
            }
        })?;
        let labels: Vec<f32> = idx.iter().map(|&i| self.labels[i] as f32).collect();
        Ok((
            Tensor::from_vec(&[idx.len(), self.size, self.size, 3], Layout::Nhwc, px)?,
            Tensor::from_vec(&[idx.len()], Layout::Plain, labels)?,
        ))
    }

    /// Makes the batches of `plan` (indices, augmentation seed) on a background thread, up to `ahead` of the
    /// consumer, and hands each to `f` with how long the caller waited for it: the time the device sat idle for
    /// want of data. Stops at the first error, from either side.
    pub fn for_each_batch(
        &self,
        plan: &[(Vec<usize>, u64)],
        aug: &Augment,
        ahead: usize,
        mut f: impl FnMut(usize, Tensor, Tensor, Duration) -> Result<()>,
    ) -> Result<()> {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel(ahead.max(1));
            scope.spawn(move || {
                for (idx, seed) in plan {
                    // A send fails only when the consumer has stopped: then so does this thread.
                    if tx.send(self.batch(idx, Some((aug, *seed)))).is_err() {
                        break;
                    }
                }
            });
            for i in 0..plan.len() {
                let wait = Instant::now();
                let (x, y) = rx.recv().map_err(|_| crate::Error::Invalid("the batch thread stopped".into()))??;
                f(i, x, y, wait.elapsed())?;
            }
            Ok(())
        })
    }
}

/// MemAvailable from /proc/meminfo, in bytes; None where there is no such file.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// Whether `n` decoded images of `size` x `size` fit in `available` bytes with room to spare (3/4 of it);
/// if not, an error naming the data set and the way out (`dfgpu pack`).
pub fn fits_in_memory(what: &Path, n: usize, size: usize, available: Option<u64>) -> Result<()> {
    let need = (n * size * size * 3) as u64;
    match available {
        Some(avail) if need > avail / 4 * 3 => Err(crate::Error::Invalid(format!(
            "{}: {n} images at {size}x{size} take {:.1} GiB decoded, more than 3/4 of the {:.1} GiB of memory \
             available: pack them once (dfgpu pack {} OUT.dfpack --size {size}) and train from the pack, which is \
             mapped from disk, not loaded",
            what.display(),
            need as f64 / GIB,
            avail as f64 / GIB,
            what.display()
        ))),
        _ => Ok(()),
    }
}

const GIB: f64 = (1u64 << 30) as f64;
