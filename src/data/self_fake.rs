//! Self-fakes (`--self-fakes P`): with probability P a real training image becomes a fake, labelled fake, made on
//! the fly by a random generator-like pipeline. The detector then learns the family of traces that a generator's
//! upsampling leaves, not only the few generators of its training set: the idea behind self-blended images
//! (Shiohara and Yamasaki, CVPR 2022) and the spectral studies of upsampling (Durall et al. 2020, Frank et al.
//! 2020). The pipeline, every draw from the image's own seed:
//! 1. down by a random factor, 1.5 to 4 (2 for the two learned upsamplers, which double), triangle filter;
//! 2. back up by one of the `Method`s;
//! 3. half of the time only inside a random soft-edged ellipse (a local edit), the rest of the image untouched;
//! 4. a third of the time sharpened, a third blurred;
//! 5. JPEG at a random quality, 60 to 95.

use crate::data::augment::jpeg_round_trip;
use crate::error::Result;
use crate::rng::Rng;
use image::imageops::{self, FilterType};
use image::RgbImage;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Nearest,
    Bilinear,
    Bicubic,
    /// A stride-2 transposed convolution (4 x 4, padding 1) with a random kernel: each output phase sums its own
    /// four taps, so phases that differ leave a checkerboard (a peak at half the Nyquist frequency).
    TransposedConv,
    /// Pixel shuffle of a random linear map: each low-resolution pixel becomes 2 x 2 pixels, each a random 3 x 3
    /// colour map of it, near the identity.
    PixelShuffle,
}

pub const METHODS: [Method; 5] =
    [Method::Nearest, Method::Bilinear, Method::Bicubic, Method::TransposedConv, Method::PixelShuffle];

/// Turns the `size` x `size` RGB image `px` into a self-fake with a random method, in place.
pub fn make(px: &mut [u8], size: usize, rng: &mut Rng) -> Result<()> {
    let method = METHODS[rng.below(METHODS.len() as u64) as usize];
    make_with(px, size, method, rng)
}

/// `make` with the upsampling method chosen.
pub fn make_with(px: &mut [u8], size: usize, method: Method, rng: &mut Rng) -> Result<()> {
    let s = size as u32;
    let real = RgbImage::from_raw(s, s, px.to_vec()).expect("a size x size x 3 buffer");
    let learned = matches!(method, Method::TransposedConv | Method::PixelShuffle);
    let factor = if learned { 2.0 } else { 1.5 + 2.5 * rng.uniform() };
    let low_side = ((size as f32 / factor).round() as u32).max(2);
    let low = imageops::resize(&real, low_side, low_side, FilterType::Triangle);
    let mut fake = match method {
        Method::Nearest => imageops::resize(&low, s, s, FilterType::Nearest),
        Method::Bilinear => imageops::resize(&low, s, s, FilterType::Triangle),
        Method::Bicubic => imageops::resize(&low, s, s, FilterType::CatmullRom),
        Method::TransposedConv => to_side(transposed_conv(&low, rng), s),
        Method::PixelShuffle => to_side(pixel_shuffle(&low, rng), s),
    };
    if rng.uniform() < 0.5 {
        local_edit(&real, &mut fake, rng);
    }
    let finish = rng.uniform();
    if finish < 1.0 / 3.0 {
        fake = imageops::unsharpen(&fake, 0.5 + 0.7 * rng.uniform(), 0);
    } else if finish < 2.0 / 3.0 {
        fake = imageops::blur(&fake, 0.4 + 0.6 * rng.uniform());
    }
    let quality = 60 + rng.below(36) as u8;
    px.copy_from_slice(jpeg_round_trip(&fake, quality)?.as_raw());
    Ok(())
}

/// A doubled image brought to `side` (an odd side: one row and column more by nearest): the learned upsamplers
/// double.
fn to_side(img: RgbImage, side: u32) -> RgbImage {
    if img.dimensions() == (side, side) {
        img
    } else {
        imageops::resize(&img, side, side, FilterType::Nearest)
    }
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// The stride-2 transposed convolution: a bilinear 4 x 4 kernel with noise on every tap, each phase's four taps
/// then normalized to sum 1 (the image keeps its brightness; the phases differ).
fn transposed_conv(low: &RgbImage, rng: &mut Rng) -> RgbImage {
    let bilinear = [0.25f32, 0.75, 0.75, 0.25];
    let mut k = [[0f32; 4]; 4];
    for (ky, row) in k.iter_mut().enumerate() {
        for (kx, t) in row.iter_mut().enumerate() {
            *t = (bilinear[ky] * bilinear[kx] + 0.15 * rng.normal() as f32).max(0.01);
        }
    }
    let (w, h) = (low.width() as isize, low.height() as isize);
    RgbImage::from_fn(2 * w as u32, 2 * h as u32, |ox, oy| {
        // Output o takes inputs i with o = 2 i - 1 + t (padding 1): t = o + 1 - 2 i, two taps per axis.
        let taps = |o: isize| [(o + 1) % 2, (o + 1) % 2 + 2].map(|t| (t as usize, (o + 1 - t) / 2));
        let (ty, tx) = (taps(oy as isize), taps(ox as isize));
        let (mut acc, mut norm) = ([0f32; 3], 0f32);
        for &(ky, iy) in &ty {
            for &(kx, ix) in &tx {
                let p = low.get_pixel(ix.clamp(0, w - 1) as u32, iy.clamp(0, h - 1) as u32);
                let wgt = k[ky][kx];
                (0..3).for_each(|c| acc[c] += wgt * f32::from(p[c]));
                norm += wgt;
            }
        }
        image::Rgb(acc.map(|a| to_u8(a / norm)))
    })
}

/// Pixel shuffle: four random 3 x 3 colour maps near the identity (one per position in the 2 x 2 block).
fn pixel_shuffle(low: &RgbImage, rng: &mut Rng) -> RgbImage {
    let maps: Vec<[[f32; 3]; 3]> = (0..4)
        .map(|_| std::array::from_fn(|r| std::array::from_fn(|c| (r == c) as u8 as f32 + 0.08 * rng.normal() as f32)))
        .collect();
    RgbImage::from_fn(2 * low.width(), 2 * low.height(), |ox, oy| {
        let p = low.get_pixel(ox / 2, oy / 2);
        let m = &maps[((oy % 2) * 2 + ox % 2) as usize];
        image::Rgb(std::array::from_fn(|r| to_u8((0..3).map(|c| m[r][c] * f32::from(p[c])).sum())))
    })
}

/// Keeps `fake` only inside a random ellipse with a soft edge; `real` elsewhere.
fn local_edit(real: &RgbImage, fake: &mut RgbImage, rng: &mut Rng) {
    let s = real.width() as f32;
    let (cy, cx) = (s * (0.3 + 0.4 * rng.uniform()), s * (0.3 + 0.4 * rng.uniform()));
    let (ry, rx) = (s * (0.2 + 0.25 * rng.uniform()), s * (0.2 + 0.25 * rng.uniform()));
    for (x, y, p) in fake.enumerate_pixels_mut() {
        let d = ((y as f32 - cy) / ry).powi(2) + ((x as f32 - cx) / rx).powi(2);
        // 1 inside d < 0.6, 0 outside d > 1, smooth between.
        let t = ((1.0 - d) / 0.4).clamp(0.0, 1.0);
        let m = t * t * (3.0 - 2.0 * t);
        let r = real.get_pixel(x, y);
        (0..3).for_each(|c| p[c] = to_u8(m * f32::from(p[c]) + (1.0 - m) * f32::from(r[c])));
    }
}
