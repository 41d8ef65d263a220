//! Decoded images as the input geometry keeps them (data/input.rs), ready to batch: decoded from a dataset into
//! memory (in parallel), or mapped from a packed file (data/pack.rs) without decoding anything. A split or a
//! subset shares the pixels.

use crate::data::augment::Augment;
use crate::data::folder::{stratified_split, Dataset};
use crate::data::input::{self, Input, Own};
use crate::data::pack::Checksums;
use crate::data::self_fake;
use crate::error::{Choice, Result};
use crate::rng::Rng;
use crate::tensor::{Layout, Tensor};
use crate::GIB;
use rayon::prelude::*;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the pixels live: side x side x 3 bytes per image, back to back.
pub enum Pixels {
    Owned(Vec<u8>),
    /// A pack's, with its images' checksums (none in packs made before them).
    Mapped {
        map: memmap2::Mmap,
        start: usize,
        len: usize,
        checksums: Option<Checksums>,
    },
}

impl std::ops::Deref for Pixels {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Pixels::Owned(v) => v,
            Pixels::Mapped { map, start, len, .. } => &map[*start..*start + *len],
        }
    }
}

pub struct Loaded {
    /// The model's input side.
    pub size: usize,
    /// How the images were kept, and the side of each kept square (`size` for resize, larger for crop).
    pub input: Input,
    pub side: usize,
    pixels: Arc<Pixels>,
    /// Per kept image (as the pixels are indexed): where its own pixels are; empty: everywhere.
    own: Arc<Vec<Own>>,
    /// Image i of this set is image rows[i] of the pixels.
    rows: Vec<usize>,
    pub labels: Vec<u8>,
    pub groups: Vec<Option<String>>,
    /// Files that could not be read, with why: skipped, counted, reported.
    pub skipped: Vec<String>,
}

impl Loaded {
    /// Images already decoded, `size` x `size` RGB each, all their own pixels.
    pub fn new(size: usize, pixels: Pixels, labels: Vec<u8>, groups: Vec<Option<String>>) -> Loaded {
        Loaded::kept(size, Input::Resize, pixels, Vec::new(), labels, groups)
    }

    /// Images kept by `input` for a model of `size`: `input.side(size)` squares, with where their own pixels
    /// are (one per image, or empty: everywhere).
    pub fn kept(
        size: usize,
        input: Input,
        pixels: Pixels,
        own: Vec<Own>,
        labels: Vec<u8>,
        groups: Vec<Option<String>>,
    ) -> Loaded {
        let side = input.side(size);
        assert_eq!(pixels.len(), labels.len() * side * side * 3, "pixels for every label");
        assert_eq!(groups.len(), labels.len());
        assert!(own.is_empty() || own.len() == labels.len());
        let rows = (0..labels.len()).collect();
        let (pixels, own) = (Arc::new(pixels), Arc::new(own));
        Loaded { size, input, side, pixels, own, rows, labels, groups, skipped: Vec::new() }
    }

    /// Decodes a dataset as `input` keeps it for a model of `size`, in parallel; unreadable files are skipped
    /// and listed; images smaller than the model (crop: padded by reflection) are counted. `log` gets a progress
    /// line every few seconds. A set too large for this machine's memory is an error that says to pack it,
    /// before anything is decoded.
    pub fn decode(ds: &Dataset, size: usize, input: Input, what: &Path, log: &mut dyn FnMut(&str)) -> Result<Loaded> {
        let n = ds.samples.len();
        fits_in_memory(what, n, size, input, crate::memory::available_memory())?;
        let (mut px, mut own, mut labels, mut groups, mut skipped) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (start, mut last) = (Instant::now(), Instant::now());
        for decoded in input::decoded_chunks(&ds.samples, 1024, |s| input::load(&s.path, size, input)) {
            for (s, r) in decoded {
                match r {
                    Ok(k) => {
                        px.extend(k.px);
                        own.push(k.own);
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
        Ok(Loaded { skipped, ..Loaded::kept(size, input, Pixels::Owned(px), own, labels, groups) })
    }

    /// Where image i's own pixels are in its kept square.
    pub fn own(&self, i: usize) -> Own {
        self.own.get(self.rows[i]).copied().unwrap_or(Own::all(self.side))
    }

    /// How many images are smaller than the model on a side (their crops hold reflected pixels).
    pub fn padded(&self) -> usize {
        (0..self.len()).filter(|&i| self.own(i).padded(self.size)).count()
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

    /// Image i as kept, side x side x 3 bytes; a pack's is checked against its checksum the first time.
    pub fn image(&self, i: usize) -> Result<&[u8]> {
        let (per, row) = (self.side * self.side * 3, self.rows[i]);
        let px = &self.pixels[row * per..(row + 1) * per];
        if let Some(sums) = self.checksums() {
            sums.check(row, px)?;
        }
        Ok(px)
    }

    /// A pack's image checksums.
    pub fn checksums(&self) -> Option<&Checksums> {
        match &*self.pixels {
            Pixels::Mapped { checksums, .. } => checksums.as_ref(),
            Pixels::Owned(_) => None,
        }
    }

    /// The images `idx`, sharing the pixels.
    pub fn subset(&self, idx: &[usize]) -> Loaded {
        Loaded {
            size: self.size,
            input: self.input,
            side: self.side,
            pixels: self.pixels.clone(),
            own: self.own.clone(),
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

    /// A u8 NHWC batch and its f32 labels: each image's centre crop, or with `aug` a random crop inside its own
    /// pixels, a real one made a self-fake (labelled fake) with probability `aug.0.self_fakes`, then augmented;
    /// image k draws from seed `aug.1` + k.
    pub fn batch(&self, idx: &[usize], aug: Option<(&Augment, u64)>) -> Result<(Tensor, Tensor)> {
        let per = self.size * self.size * 3;
        let mut px = vec![0u8; idx.len() * per];
        let made: Vec<bool> = px
            .par_chunks_mut(per)
            .zip(idx)
            .enumerate()
            .map(|(k, (dst, &i))| {
                let seed = aug.map(|(_, seed)| seed.wrapping_add(k as u64));
                // The crop and the self-fake draw from streams of their own, so that the augmentations draw
                // what they drew before either existed.
                let mut rng = seed.map(|s| Rng::new(s ^ 0xC0FF_EE00_C0FF_EE00));
                let at = input::crop_origin(&self.own(i), self.side, self.size, rng.as_mut());
                input::crop_into(self.image(i)?, self.side, at, self.size, dst);
                let (Some((a, _)), Some(seed)) = (aug, seed) else { return Ok(false) };
                let mut rng = Rng::new(seed ^ 0x5E1F_FA6E_5E1F_FA6E);
                let made = self.labels[i] == 0 && a.self_fakes > 0.0 && rng.uniform() < a.self_fakes;
                if made {
                    self_fake::make(dst, self.size, &mut rng)?;
                }
                a.apply(dst, self.size, seed)?;
                Ok(made)
            })
            .collect::<Result<_>>()?;
        let labels: Vec<f32> =
            idx.iter().zip(&made).map(|(&i, &m)| if m { 1.0 } else { self.labels[i] as f32 }).collect();
        Ok((
            Tensor::from_vec(&[idx.len(), self.size, self.size, 3], Layout::Nhwc, px)?,
            Tensor::from_vec(&[idx.len()], Layout::Plain, labels)?,
        ))
    }

    /// A `k` x `k` grid of crops per image of `idx` (input::tile_origins), image after image: a u8 NHWC batch of
    /// `idx.len() k^2` crops.
    pub fn tiles(&self, idx: &[usize], k: usize) -> Result<Tensor> {
        let per = self.size * self.size * 3;
        let mut px = vec![0u8; idx.len() * k * k * per];
        px.par_chunks_mut(k * k * per).zip(idx).try_for_each(|(dst, &i)| {
            let origins = input::tile_origins(&self.own(i), self.side, self.size, k);
            for (at, d) in origins.into_iter().zip(dst.chunks_exact_mut(per)) {
                input::crop_into(self.image(i)?, self.side, at, self.size, d);
            }
            Ok::<_, crate::Error>(())
        })?;
        Tensor::from_vec(&[idx.len() * k * k, self.size, self.size, 3], Layout::Nhwc, px)
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

/// Whether `n` images kept by `input` for a model of `size` fit in `available` bytes with room to spare (3/4 of
/// it); if not, an error naming the data set and the way out (`dfgpu pack`).
pub fn fits_in_memory(what: &Path, n: usize, size: usize, input: Input, available: Option<u64>) -> Result<()> {
    let side = input.side(size);
    let need = (n * side * side * 3) as u64;
    match available {
        Some(avail) if need > avail / 4 * 3 => Err(crate::Error::Invalid(format!(
            "{}: {n} images kept at {side}x{side} (--input {}) take {:.1} GiB decoded, more than 3/4 of the {:.1} GiB \
             of memory available: pack them once (dfgpu pack {} OUT.dfpack --size {size} --input {}) and train from \
             the pack, which is mapped from disk, not loaded",
            what.display(),
            input.name(),
            need as f64 / GIB,
            avail as f64 / GIB,
            what.display(),
            input.name()
        ))),
        _ => Ok(()),
    }
}
