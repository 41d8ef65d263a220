//! Decoded images at the model's input size, ready to batch: decoded from a dataset into memory (in parallel),
//! or mapped from a packed file (data/pack.rs) without decoding anything. A split or a subset shares the pixels.

use crate::data::augment::Augment;
use crate::data::folder::{load_rgb, stratified_split, Dataset};
use crate::error::Result;
use crate::tensor::{Layout, Tensor};
use rayon::prelude::*;
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

    /// Decodes a dataset at `size` x `size`, in parallel; unreadable files are skipped and listed.
    pub fn decode(ds: &Dataset, size: usize) -> Loaded {
        let decoded: Vec<_> = ds.samples.par_iter().map(|s| (s, load_rgb(&s.path, size as u32))).collect();
        let (mut px, mut labels, mut groups, mut skipped) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (s, r) in decoded {
            match r {
                Ok(p) => {
                    px.extend(p);
                    labels.push(s.label);
                    groups.push(s.group.clone());
                }
                Err(e) => skipped.push(e.to_string()),
            }
        }
        Loaded { skipped, ..Loaded::new(size, Pixels::Owned(px), labels, groups) }
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
