//! The input geometry: how an image of any size becomes the model's `size` x `size` input (`--input`).
//! - `crop`: native pixels, never resampled. Each image keeps the centre `2 size` x `2 size` square of its own
//!   pixels (in memory and in packs: the range a training crop can move in); training takes a random `size` x
//!   `size` crop inside the image's pixels, validation and eval the centre crop. An image smaller than `size` on
//!   a side is padded by reflection, counted and reported. `predict --tiles` scores a grid of crops over the
//!   whole image.
//! - `resize`: the image squashed to `size` x `size` with a triangle filter: for sets of face crops already at
//!   about the model's size. Resampling low-pass filters the high frequencies where an upsampler's traces are.

use crate::backend::cpu::real::Real;
use crate::error::{Choice, Error, Result};
use crate::rng::Rng;
use image::RgbImage;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Resize,
    Crop,
}

impl Choice for Input {
    const NAMES: &'static [(&'static str, Self)] = &[("resize", Input::Resize), ("crop", Input::Crop)];
}

impl Input {
    /// The side of the square kept per image for a model of `size`.
    pub fn side(self, size: usize) -> usize {
        match self {
            Input::Resize => size,
            Input::Crop => 2 * size,
        }
    }
}

/// One image as kept: `side` x `side` RGB, and where in that square its own pixels are (`rows`, `cols`: half-open
/// ranges; the rest is reflection). A resized image is all its own.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub px: Vec<u8>,
    pub own: Own,
}

/// The rows and columns of a kept square that hold the image's own pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Own {
    pub rows: (u32, u32),
    pub cols: (u32, u32),
}

impl Own {
    pub fn all(side: usize) -> Own {
        Own { rows: (0, side as u32), cols: (0, side as u32) }
    }

    /// Whether the image is smaller than `size` on a side (so that its crops hold reflected pixels).
    pub fn padded(&self, size: usize) -> bool {
        ((self.rows.1 - self.rows.0) as usize) < size || ((self.cols.1 - self.cols.0) as usize) < size
    }
}

/// `items` decoded in parallel `chunk` at a time, so that memory stays bounded whatever their number: each chunk
/// as (item, result) pairs in order. Used by every path that decodes a set (loading, packing, predicting).
pub fn decoded_chunks<'a, T: Sync, R: Send>(
    items: &'a [T],
    chunk: usize,
    decode: impl Fn(&T) -> Result<R> + Sync + 'a,
) -> impl Iterator<Item = Vec<(&'a T, Result<R>)>> + 'a {
    use rayon::prelude::*;
    items.chunks(chunk).map(move |c| c.iter().zip(c.par_iter().map(&decode).collect::<Vec<_>>()).collect())
}

/// Decodes an image file to RGB at its own resolution. The error names the file, so that a long run can skip
/// it and say which.
pub fn decode(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    // Some decoders' messages end in a newline: trimmed, so that a list of skipped files has no blank lines.
    let bad = |m: &str| Error::corrupt(path, format!("cannot decode: {}", m.trim_end()));
    let reader =
        image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format().map_err(Error::io(path))?;
    // The JPEG decoder fills what a cut file lacks with grey, and says nothing.
    if reader.format() == Some(image::ImageFormat::Jpeg) && jpeg_cut_short(&bytes) {
        return Err(bad("the file ends inside the image data (no end-of-image marker): a truncated JPEG"));
    }
    Ok(reader.decode().map_err(|e| bad(&e.to_string()))?.to_rgb8())
}

/// Whether a JPEG ends before its image data does: no end-of-image marker (FF D9) after its last start of scan
/// (FF DA). Neither pair occurs inside the entropy-coded data (an FF there is followed by 00 or a restart
/// marker), and what a camera appends after the end-of-image marker does not matter.
fn jpeg_cut_short(bytes: &[u8]) -> bool {
    let Some(scan) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else { return false };
    !bytes[scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// An image file as `input` keeps it for a model of `size`.
pub fn load(path: &Path, size: usize, input: Input) -> Result<Kept> {
    let img = decode(path)?;
    Ok(match input {
        Input::Resize => {
            let s = size as u32;
            let img = if img.dimensions() == (s, s) {
                img
            } else {
                image::imageops::resize(&img, s, s, image::imageops::FilterType::Triangle)
            };
            Kept { px: img.into_raw(), own: Own::all(size) }
        }
        Input::Crop => keep_centre(&img, size),
    })
}

/// The centre `2 size` square of `img`, placed so that its centre crop is the image's centre crop.
pub fn keep_centre(img: &RgbImage, size: usize) -> Kept {
    let side = Input::Crop.side(size);
    let (h, w) = (img.height() as usize, img.width() as usize);
    let first = |len: usize| centre_origin(len as isize, size) - centre_origin(side as isize, size);
    let (y0, x0) = (first(h), first(w));
    let own = |first: isize, len: usize| ((-first).max(0) as u32, (len as isize - first).min(side as isize) as u32);
    Kept { px: window(img, y0, x0, side, side), own: Own { rows: own(y0, h), cols: own(x0, w) } }
}

/// The first row of the centre `size` crop of `len` rows (negative when the image is smaller).
fn centre_origin(len: isize, size: usize) -> isize {
    (len - size as isize).div_euclid(2)
}

/// The `rows` x `cols` window of `img` whose top-left pixel is (y0, x0), with indices outside the image
/// reflected (symmetric: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...).
pub fn window(img: &RgbImage, y0: isize, x0: isize, rows: usize, cols: usize) -> Vec<u8> {
    let (h, w) = (img.height() as isize, img.width() as isize);
    let reflect = |i: isize, n: isize| {
        let p = i.rem_euclid(2 * n);
        if p >= n {
            2 * n - 1 - p
        } else {
            p
        }
    };
    let src = img.as_raw();
    let mut out = Vec::with_capacity(rows * cols * 3);
    for y in 0..rows as isize {
        let row = &src[(reflect(y0 + y, h) * w * 3) as usize..][..(w * 3) as usize];
        for x in 0..cols as isize {
            let sx = (reflect(x0 + x, w) * 3) as usize;
            out.extend_from_slice(&row[sx..sx + 3]);
        }
    }
    out
}

/// Where in a kept square of `side` the `size` crop starts: a random origin inside the image's own pixels
/// (with `rng`; where the image is too small on an axis, its centre), or the centre crop.
pub fn crop_origin(own: &Own, side: usize, size: usize, rng: Option<&mut Rng>) -> (usize, usize) {
    let centre = centre_origin(side as isize, size) as usize;
    let Some(rng) = rng else { return (centre, centre) };
    let mut pick = |(lo, hi): (u32, u32)| {
        let free = (hi - lo) as usize;
        if free >= size {
            lo as usize + rng.below((free - size + 1) as u64) as usize
        } else {
            centre
        }
    };
    let y = pick(own.rows);
    (y, pick(own.cols))
}

/// The origins of a `k` x `k` grid of `size` crops spread evenly over the image's own pixels in a kept square
/// of `side` (on an axis where the image is smaller than `size`: the centre).
pub fn tile_origins(own: &Own, side: usize, size: usize, k: usize) -> Vec<(usize, usize)> {
    let along = |(lo, hi): (u32, u32)| -> Vec<usize> {
        let (lo, free) = (lo as usize, (hi - lo) as usize);
        if free < size {
            return vec![centre_origin(side as isize, size) as usize; k];
        }
        if k == 1 {
            return vec![lo + (free - size) / 2];
        }
        (0..k).map(|j| lo + ((free - size) as f64 * j as f64 / (k - 1) as f64).round() as usize).collect()
    };
    let (ys, xs) = (along(own.rows), along(own.cols));
    ys.iter().flat_map(|&y| xs.iter().map(move |&x| (y, x))).collect()
}

/// The `size` crop at (y, x) of a `cols`-wide RGB image, into `dst` (size x size x 3 bytes).
pub fn crop_into(src: &[u8], cols: usize, (y, x): (usize, usize), size: usize, dst: &mut [u8]) {
    let row = size * 3;
    for (r, d) in dst.chunks_exact_mut(row).enumerate() {
        let start = ((y + r) * cols + x) * 3;
        d.copy_from_slice(&src[start..start + row]);
    }
}

/// A whole image for tiling: at least `size` on each side (a smaller one padded by reflection, centred as its
/// centre crop is), and its extent as `Own` (rows and columns from 0).
pub fn whole(img: &RgbImage, size: usize) -> (Vec<u8>, Own) {
    let (h, w) = (img.height() as usize, img.width() as usize);
    let (rows, cols) = (h.max(size), w.max(size));
    let first = |len: usize| if len >= size { 0 } else { centre_origin(len as isize, size) };
    (window(img, first(h), first(w), rows, cols), Own { rows: (0, rows as u32), cols: (0, cols as u32) })
}

/// How the tiles' logits become one: their mean, or their max (one tile that looks fake is enough).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    Mean,
    Max,
}

impl Choice for Combine {
    const NAMES: &'static [(&'static str, Self)] = &[("mean", Combine::Mean), ("max", Combine::Max)];
}

impl Combine {
    /// An image's score from its tiles' (logits, or peak scores).
    pub fn apply<T: Real>(self, scores: &[T]) -> T {
        match self {
            Combine::Mean => scores.iter().copied().sum::<T>() / T::of(scores.len() as f64),
            Combine::Max => scores.iter().copied().fold(T::of(f64::NEG_INFINITY), T::max),
        }
    }
}

/// What eval and predict score per image: a `k` x `k` grid of crops, their logits combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    pub k: usize,
    pub combine: Combine,
}

impl Tiles {
    /// The centre crop alone.
    pub const CENTRE: Tiles = Tiles { k: 1, combine: Combine::Mean };

    /// `--tiles N` (a square: 1, 4, 9, ...) for a model whose input is `input`: tiles need native pixels.
    pub fn new(n: usize, combine: Combine, input: Input) -> Result<Tiles> {
        let k = (n as f64).sqrt().round() as usize;
        if n == 0 || k * k != n {
            return Err(Error::Invalid(format!("--tiles {n}: the tiles form a square grid: 1, 4, 9, 16, ...")));
        }
        if k > 1 && input == Input::Resize {
            return Err(Error::Invalid(format!(
                "--tiles {n}: this model was trained on resized images (--input resize), which have no tiles: \
                 tiles need a model trained with --input crop"
            )));
        }
        Ok(Tiles { k, combine })
    }

    /// The crops of an image file for a model of `size` taking `input`: k^2 of them, or the resized image.
    pub fn of_file(self, path: &Path, size: usize, input: Input) -> Result<Vec<u8>> {
        if input == Input::Resize {
            return Ok(load(path, size, input)?.px);
        }
        let (px, own) = whole(&decode(path)?, size);
        let cols = own.cols.1 as usize;
        let per = size * size * 3;
        let mut out = vec![0; self.k * self.k * per];
        for (at, dst) in tile_origins(&own, cols, size, self.k).into_iter().zip(out.chunks_exact_mut(per)) {
            crop_into(&px, cols, at, size, dst);
        }
        Ok(out)
    }
}
