//! Training augmentations on decoded u8 RGB images, each applied with its own probability, in this order:
//! random resized crop, down-and-up rescaling, Gaussian blur, JPEG re-compression, horizontal flip. The last
//! four are what images meet on the way to a detector (resizing, soft focus, re-encoding), so a detector trained
//! with them leans less on traces that one re-save erases.
//!
//! Deterministic: each image's draws come from its own seed, so a batch is the same whatever the thread count
//! and whichever thread makes it.

use crate::error::{Error, Result};
use crate::rng::Rng;
use image::imageops::{self, FilterType};
use image::RgbImage;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// Random resized crop: a region of `crop_area` to all of the image's area, aspect ratio 3:4 to 4:3.
    pub crop: f32,
    pub crop_area: f32,
    /// Down by a factor of 0.35 to 0.8, then back up (both bilinear).
    pub rescale: f32,
    /// Gaussian blur, sigma 0.3 to 1.5 pixels.
    pub blur: f32,
    /// JPEG re-compression at quality 40 to 95.
    pub jpeg: f32,
    pub flip: f32,
    /// The probability that a real training image becomes a self-fake (data/self_fake.rs, `--self-fakes`),
    /// before the others apply.
    pub self_fakes: f32,
}

impl Default for Augment {
    /// Flips only. The others blur the spectral traces that the frequency branch looks for: on a small built-in
    /// set (300 training images, 3 epochs, tiny at 64) crop=0.25,rescale=0.1,blur=0.1,jpeg=0.2 took the
    /// validation AUC from 0.879 to 0.826. They are for longer runs on real data, where robustness to re-saving
    /// and resizing matters more than the last point of AUC on clean images.
    fn default() -> Self {
        Augment { crop: 0.0, crop_area: 0.6, rescale: 0.0, blur: 0.0, jpeg: 0.0, flip: 0.5, self_fakes: 0.0 }
    }
}

/// The names `--augment` takes, each a probability.
const NAMES: [&str; 5] = ["crop", "rescale", "blur", "jpeg", "flip"];

impl Augment {
    pub const NONE: Augment =
        Augment { crop: 0.0, crop_area: 1.0, rescale: 0.0, blur: 0.0, jpeg: 0.0, flip: 0.0, self_fakes: 0.0 };

    fn slot(&mut self, name: &str) -> Option<&mut f32> {
        Some(match name {
            "crop" => &mut self.crop,
            "rescale" => &mut self.rescale,
            "blur" => &mut self.blur,
            "jpeg" => &mut self.jpeg,
            "flip" => &mut self.flip,
            _ => return None,
        })
    }

    /// `none`, `default` (flip=0.5), `robust` (crop=0.25,rescale=0.1,blur=0.1,jpeg=0.2,flip=0.5), or
    /// `name=p,...` (e.g. `flip=0.5,jpeg=0.3`; the ones not named are off).
    pub fn parse(spec: &str) -> Result<Augment> {
        match spec {
            "none" => return Ok(Augment::NONE),
            "default" => return Ok(Augment::default()),
            "robust" => return Ok(Augment { crop: 0.25, rescale: 0.1, blur: 0.1, jpeg: 0.2, ..Augment::default() }),
            _ => {}
        }
        let mut a = Augment { crop_area: Augment::default().crop_area, ..Augment::NONE };
        for item in spec.split(',').map(str::trim) {
            let bad = || {
                Error::Invalid(format!(
                    "--augment '{item}': expected none, default, robust, or NAME=P,... with NAME one of {} and P in [0, 1]",
                    NAMES.join(", ")
                ))
            };
            let (name, p) = item.split_once('=').ok_or_else(bad)?;
            let p: f32 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=1.0).contains(&p) {
                return Err(bad());
            }
            *a.slot(name.trim()).ok_or_else(bad)? = p;
        }
        Ok(a)
    }

    /// The spec that `parse` reads back.
    pub fn describe(&self) -> String {
        let mut copy = *self;
        let on: Vec<String> =
            NAMES.iter().filter_map(|n| copy.slot(n).filter(|p| **p > 0.0).map(|p| format!("{n}={p}"))).collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(",")
        }
    }

    /// Augments one `size` x `size` RGB image (HWC u8) in place, with the draws of `seed`.
    pub fn apply(&self, px: &mut [u8], size: usize, seed: u64) -> Result<()> {
        if [self.crop, self.rescale, self.blur, self.jpeg, self.flip].iter().all(|&p| p <= 0.0) {
            return Ok(()); // nothing can fire: no copy into an image and back
        }
        let mut rng = Rng::new(seed);
        let s = size as u32;
        let mut img = RgbImage::from_raw(s, s, px.to_vec()).expect("a size x size x 3 buffer");
        let mut hit = |p: f32| p > 0.0 && rng.uniform() < p;
        let (crop, rescale, blur, jpeg, flip) =
            (hit(self.crop), hit(self.rescale), hit(self.blur), hit(self.jpeg), hit(self.flip));
        if crop {
            let area = self.crop_area + (1.0 - self.crop_area) * rng.uniform();
            let ratio = ((4.0f32 / 3.0).ln() * (2.0 * rng.uniform() - 1.0)).exp();
            let w = ((area * ratio).sqrt() * size as f32).round().clamp(1.0, size as f32) as u32;
            let h = ((area / ratio).sqrt() * size as f32).round().clamp(1.0, size as f32) as u32;
            let (x0, y0) = (rng.below((s - w + 1) as u64) as u32, rng.below((s - h + 1) as u64) as u32);
            let region = imageops::crop_imm(&img, x0, y0, w, h).to_image();
            img = imageops::resize(&region, s, s, FilterType::Triangle);
        }
        if rescale {
            let small = ((0.35 + 0.45 * rng.uniform()) * size as f32).round().max(4.0) as u32;
            img = imageops::resize(
                &imageops::resize(&img, small, small, FilterType::Triangle),
                s,
                s,
                FilterType::Triangle,
            );
        }
        if blur {
            img = imageops::blur(&img, 0.3 + 1.2 * rng.uniform());
        }
        if jpeg {
            img = jpeg_round_trip(&img, 40 + rng.below(56) as u8)?;
        }
        if flip {
            imageops::flip_horizontal_in_place(&mut img);
        }
        px.copy_from_slice(img.as_raw());
        Ok(())
    }
}

/// `img` encoded as JPEG at `quality` and decoded again.
pub fn jpeg_round_trip(img: &RgbImage, quality: u8) -> Result<RgbImage> {
    let bad = |e: image::ImageError| Error::Invalid(format!("JPEG re-compression at quality {quality}: {e}"));
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality).encode_image(img).map_err(bad)?;
    Ok(image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).map_err(bad)?.to_rgb8())
}
