//! The built-in data set: procedural "real" images with natural-image statistics, and "fakes" made by passing
//! such images through what a generator's decoder does, so that they carry its spectral traces.
//!
//! Real: the dead-leaves model (occluding discs with radii drawn from p(r) ~ 1/r^3, which gives the 1/f
//! amplitude spectrum of natural images), a smooth lighting gradient, and sensor noise; or, with `from`, random
//! square crops (half to all of the short side) of the user's own photos, resized to the set's size.
//! Fake families, each written to its own subfolder of fake/ (a user can train on some and test on the others):
//! - `upconv`: 2x box downsampling, then a stride-2 transposed convolution whose four polyphase kernels differ:
//!   the checkerboard trace of learned upsampling (a peak at half the Nyquist frequency);
//! - `nearest`: 2x downsampling, nearest-neighbour upsampling, then a 3x3 blur: replicated-pixel traces;
//! - `fingerprint`: 2x downsampling, bilinear upsampling, and a faint fixed periodic pattern (period 8) added, as
//!   GAN fingerprints are;
//! - `periodic` (not in the default set): no resampling at all, a faint period-4 pattern added at full
//!   resolution. The three above all lose high frequencies; this one adds a peak there instead: a generator the
//!   others do not prepare a detector for (`dfgpu holdout` holds each family out in turn).
//!
//! The trace goes over the whole image or, half of the time, into a soft face-sized ellipse at the centre.
//! Both classes are JPEG-compressed at a random quality (70 to 95), so that compression is no cue.
//! Everything is a function of the seed: the same seed gives the same files.

use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::rng::Rng;
use rayon::prelude::*;
use std::f32::consts::FRAC_PI_2;
use std::path::{Path, PathBuf};

pub const FAMILIES: [&str; 4] = ["upconv", "nearest", "fingerprint", "periodic"];
/// The built-in set's families. `periodic` is left out: its trace goes the other way (see the module
/// documentation), which makes it the generator to hold out when testing generalization.
pub const DEFAULT_FAMILIES: [&str; 3] = ["upconv", "nearest", "fingerprint"];

#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    pub n_real: usize,
    pub n_fake: usize,
    pub size: usize,
    pub seed: u64,
    /// Which fake families, from FAMILIES; the fakes are spread evenly over them.
    pub families: Vec<String>,
    /// A folder of photos to crop the images from, instead of drawing them.
    pub from: Option<PathBuf>,
}

impl Default for SynthConfig {
    /// 1 real to 5 fakes, as in DFWild-Cup; 64 x 64, small enough to train on a CPU in minutes.
    fn default() -> Self {
        SynthConfig {
            n_real: 200,
            n_fake: 1000,
            size: 64,
            seed: 0,
            families: DEFAULT_FAMILIES.map(String::from).to_vec(),
            from: None,
        }
    }
}

impl SynthConfig {
    pub fn validate(&self) -> Result<()> {
        if let Some(f) = self.families.iter().find(|f| !FAMILIES.contains(&f.as_str())) {
            return Err(Error::Invalid(format!("unknown fake family '{f}': choose from {}", FAMILIES.join(", "))));
        }
        if self.families.is_empty() {
            return Err(Error::Invalid("no fake family chosen".into()));
        }
        if !(16..=1024).contains(&self.size) || !self.size.is_multiple_of(2) {
            return Err(Error::Invalid(format!("synthetic image size {} must be even, from 16 to 1024", self.size)));
        }
        if self.n_real == 0 || self.n_fake == 0 {
            return Err(Error::Invalid("a synthetic set needs at least one real and one fake image".into()));
        }
        Ok(())
    }
}

/// An RGB image in [0, 1], row-major, 3 floats per pixel.
#[derive(Clone)]
pub struct Image {
    pub size: usize,
    pub px: Vec<f32>,
}

impl Image {
    fn at(&self, y: usize, x: usize, c: usize) -> f32 {
        self.px[(y * self.size + x) * 3 + c]
    }
}

/// A dead-leaves image with lighting and noise.
pub fn real_image(size: usize, rng: &mut Rng) -> Image {
    let s = size as f32;
    let mut px = vec![0f32; size * size * 3];
    let mut covered = vec![false; size * size];
    let mut left = size * size;
    let (rmin, rmax) = (0.01 * s + 0.5, 0.4 * s);
    // Discs are drawn front to back: a pixel keeps the first disc that covers it (occlusion).
    for _ in 0..20_000 {
        if left == 0 {
            break;
        }
        // Inverse CDF of p(r) ~ r^-3 on [rmin, rmax].
        let u = rng.uniform();
        let r = 1.0 / (1.0 / (rmin * rmin) - u * (1.0 / (rmin * rmin) - 1.0 / (rmax * rmax))).sqrt();
        let (cx, cy) = (rng.uniform() * s, rng.uniform() * s);
        let base = [rng.uniform(), rng.uniform(), rng.uniform()];
        let grey = rng.uniform();
        let color = base.map(|b| 0.6 * grey + 0.4 * b);
        let (y0, y1) = ((cy - r).max(0.0) as usize, ((cy + r).ceil() as usize).min(size));
        let (x0, x1) = ((cx - r).max(0.0) as usize, ((cx + r).ceil() as usize).min(size));
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                if !covered[y * size + x] && dx * dx + dy * dy <= r * r {
                    covered[y * size + x] = true;
                    left -= 1;
                    px[(y * size + x) * 3..][..3].copy_from_slice(&color);
                }
            }
        }
    }
    let (gx, gy, g0) = (rng.uniform() - 0.5, rng.uniform() - 0.5, 0.7 + 0.3 * rng.uniform());
    let noise = 0.005 + 0.01 * rng.uniform();
    for y in 0..size {
        for x in 0..size {
            let light = g0 + 0.4 * (gx * x as f32 / s + gy * y as f32 / s);
            for c in 0..3 {
                let v = &mut px[(y * size + x) * 3 + c];
                *v = (*v * light + noise * rng.normal() as f32).clamp(0.0, 1.0);
            }
        }
    }
    Image { size, px }
}

fn down2(img: &Image) -> Image {
    let h = img.size / 2;
    let mut px = vec![0f32; h * h * 3];
    for y in 0..h {
        for x in 0..h {
            for c in 0..3 {
                let v = img.at(2 * y, 2 * x, c)
                    + img.at(2 * y + 1, 2 * x, c)
                    + img.at(2 * y, 2 * x + 1, c)
                    + img.at(2 * y + 1, 2 * x + 1, c);
                px[(y * h + x) * 3 + c] = v / 4.0;
            }
        }
    }
    Image { size: h, px }
}

/// An image of `size` whose pixel (y, x), channel c is f(y, x, c), clamped to [0, 1].
fn build(size: usize, f: impl Fn(usize, usize, usize) -> f32) -> Image {
    let mut px = vec![0f32; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            for c in 0..3 {
                px[(y * size + x) * 3 + c] = f(y, x, c).clamp(0.0, 1.0);
            }
        }
    }
    Image { size, px }
}

fn clamped(img: &Image, y: isize, x: isize, c: usize) -> f32 {
    let m = img.size as isize - 1;
    img.at(y.clamp(0, m) as usize, x.clamp(0, m) as usize, c)
}

/// The trace of one family applied to the whole of `img`.
fn decode_like(img: &Image, family: &str) -> Image {
    let lo = &down2(img);
    let size = img.size;
    match family {
        // Transposed convolution, stride 2: each output phase (y%2, x%2) has its own 2x2 kernel, slightly unequal
        // gains, as a trained decoder's are.
        "upconv" => {
            let gain = [[1.0, 0.93], [0.95, 1.06]];
            build(size, |y, x, c| {
                let (yy, xx) = ((y / 2) as isize, (x / 2) as isize);
                let (dy, dx) = (if y % 2 == 0 { -1 } else { 1 }, if x % 2 == 0 { -1 } else { 1 });
                let v = 0.5625 * clamped(lo, yy, xx, c)
                    + 0.1875 * (clamped(lo, yy + dy, xx, c) + clamped(lo, yy, xx + dx, c))
                    + 0.0625 * clamped(lo, yy + dy, xx + dx, c);
                v * gain[y % 2][x % 2]
            })
        }
        "nearest" => {
            let nn = build(size, |y, x, c| lo.at(y / 2, x / 2, c));
            build(size, |y, x, c| {
                let mut acc = 0.0;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let w = if dy == 0 && dx == 0 { 0.5 } else { 0.0625 };
                        acc += w * clamped(&nn, y as isize + dy, x as isize + dx, c);
                    }
                }
                acc
            })
        }
        "periodic" => build(size, |y, x, c| {
            let p = ((x % 4) as f32 * FRAC_PI_2 + c as f32).sin() * ((y % 4) as f32 * FRAC_PI_2).cos();
            img.at(y, x, c) + 5.0 / 255.0 * p
        }),
        _ => build(size, |y, x, c| {
            let (fy, fx) = ((y as f32 - 0.5) / 2.0, (x as f32 - 0.5) / 2.0);
            let (y0, x0) = (fy.floor(), fx.floor());
            let (ty, tx) = (fy - y0, fx - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            let v = (1.0 - ty) * ((1.0 - tx) * clamped(lo, y0, x0, c) + tx * clamped(lo, y0, x0 + 1, c))
                + ty * ((1.0 - tx) * clamped(lo, y0 + 1, x0, c) + tx * clamped(lo, y0 + 1, x0 + 1, c));
            // A fixed pattern of period 8, 2/255 in amplitude.
            let p = ((y % 8) as f32 * 0.785).sin() * ((x % 8) as f32 * 0.785 + c as f32).cos();
            v + 2.0 / 255.0 * p
        }),
    }
}

/// A fake of `family` made from `real`: the trace over the whole image, or blended into a soft central ellipse.
pub fn fake_image(real: Image, family: &str, rng: &mut Rng) -> Image {
    let size = real.size;
    let traced = decode_like(&real, family);
    if rng.uniform() < 0.5 {
        return traced;
    }
    let s = size as f32;
    let (ry, rx) = (0.35 * s, 0.28 * s);
    let mut out = real.clone();
    for y in 0..size {
        for x in 0..size {
            let (dy, dx) = ((y as f32 + 0.5 - s / 2.0) / ry, (x as f32 + 0.5 - s / 2.0) / rx);
            let m = (1.0 - (dy * dy + dx * dx)).clamp(0.0, 0.25) * 4.0; // 1 inside, feathered edge
            for c in 0..3 {
                let i = (y * size + x) * 3 + c;
                out.px[i] = m * traced.px[i] + (1.0 - m) * real.px[i];
            }
        }
    }
    out
}

/// JPEG bytes of `img` at `quality`.
pub fn jpeg(img: &Image, quality: u8) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = img.px.iter().map(|v| (v * 255.0).round() as u8).collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode(&bytes, img.size as u32, img.size as u32, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::Invalid(format!("JPEG encoding failed: {e}")))?;
    Ok(out)
}

/// (relative path, class, family) of every file of the set, in order.
fn listing(cfg: &SynthConfig) -> Vec<(PathBuf, bool, Option<String>)> {
    let mut files: Vec<(PathBuf, bool, Option<String>)> =
        (0..cfg.n_real).map(|i| (PathBuf::from(format!("real/{i:06}.jpg")), false, None)).collect();
    for i in 0..cfg.n_fake {
        let fam = &cfg.families[i % cfg.families.len()];
        files.push((PathBuf::from(format!("fake/{fam}/{i:06}.jpg")), true, Some(fam.clone())));
    }
    files
}

/// The photos of `--from`, decoded once, each scaled so that its short side is at most twice the set's size
/// (a crop keeps detail at the size it is cut to; memory stays small). At most `limit` of them, in path order.
fn load_photos(dir: &Path, size: usize, limit: usize) -> Result<Vec<image::RgbImage>> {
    // A link that loops back is left out; the photos under it are reached directly or not at all.
    let (mut files, _) = crate::data::folder::images_under(dir)?;
    files.truncate(limit);
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no images (jpg, jpeg, png, webp, bmp) under it to crop the set from",
            dir.display()
        )));
    }
    files
        .par_iter()
        .map(|p| {
            let img =
                image::open(p).map_err(|e| Error::Invalid(format!("{}: cannot decode: {e}", p.display())))?.to_rgb8();
            let short = img.width().min(img.height());
            if (short as usize) < size {
                return Err(Error::Invalid(format!(
                    "{}: {}x{} is smaller than the set's {size}x{size}",
                    p.display(),
                    img.width(),
                    img.height()
                )));
            }
            let scale = ((2 * size) as f64 / short as f64).min(1.0);
            let (w, h) = ((img.width() as f64 * scale).round() as u32, (img.height() as f64 * scale).round() as u32);
            Ok(if scale < 1.0 {
                image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
            } else {
                img
            })
        })
        .collect()
}

/// A random square crop of a random photo, half to all of its short side, resized to `size`.
fn photo_crop(photos: &[image::RgbImage], size: usize, rng: &mut Rng) -> Image {
    let p = &photos[rng.below(photos.len() as u64) as usize];
    let short = p.width().min(p.height());
    let side = ((0.5 + 0.5 * rng.uniform()) * short as f32).round().max(1.0) as u32;
    let (x0, y0) = (rng.below((p.width() - side + 1) as u64) as u32, rng.below((p.height() - side + 1) as u64) as u32);
    let crop = image::imageops::crop_imm(p, x0, y0, side, side).to_image();
    let s = size as u32;
    let rgb = image::imageops::resize(&crop, s, s, image::imageops::FilterType::Triangle);
    Image { size, px: rgb.as_raw().iter().map(|&v| v as f32 / 255.0).collect() }
}

/// Writes the set as a folder dataset under `out` (out/real, out/fake/FAMILY). Returns the number of files.
/// Files are written to a temporary name and renamed, so an interrupted run leaves no half-written image.
pub fn write(cfg: &SynthConfig, out: &Path) -> Result<usize> {
    cfg.validate()?;
    let files = listing(cfg);
    // The photos first: a --from without any leaves no empty set behind.
    let photos = match &cfg.from {
        Some(dir) => Some(load_photos(dir, cfg.size, files.len())?),
        None => None,
    };
    for dir in ["real".to_string()].into_iter().chain(cfg.families.iter().map(|f| format!("fake/{f}"))) {
        let d = out.join(dir);
        std::fs::create_dir_all(&d).map_err(Error::io(&d))?;
    }
    files.par_iter().enumerate().try_for_each(|(i, (rel, fake, family))| {
        let mut rng = Rng::new(cfg.seed ^ (0xD1B5_4A32_D192_ED03u64.wrapping_mul(i as u64 + 1)));
        let base = match &photos {
            Some(p) => photo_crop(p, cfg.size, &mut rng),
            None => real_image(cfg.size, &mut rng),
        };
        let img = match family {
            Some(f) if *fake => fake_image(base, f, &mut rng),
            _ => base,
        };
        let quality = 70 + rng.below(26) as u8;
        let path = out.join(rel);
        write_atomic(&path, &jpeg(&img, quality)?)
    })?;
    Ok(files.len())
}
