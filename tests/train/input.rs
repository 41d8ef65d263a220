//! The input geometry: crops are native pixels, bit for bit; training crops move inside the image; a small image
//! is padded by reflection and counted; tiles cover the image; resize is what it was.

use dfgpu::data::augment::Augment;
use dfgpu::data::input::{self, Combine, Input, Tiles};
use dfgpu::data::loaded::{Loaded, Pixels};
use image::RgbImage;
use std::path::PathBuf;

/// An image whose every pixel says where it is: (row, column, a hash of both).
fn coordinates(h: u32, w: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| image::Rgb([y as u8, x as u8, ((y * 7 + x * 13) % 256) as u8]))
}

fn png(name: &str, img: &RgbImage) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dfgpu-test-input-{}-{name}.png", std::process::id()));
    img.save(&p).unwrap();
    p
}

/// The `size` crop of `img` at (y, x).
fn region(img: &RgbImage, (y, x): (usize, usize), size: usize) -> Vec<u8> {
    image::imageops::crop_imm(img, x as u32, y as u32, size as u32, size as u32).to_image().into_raw()
}

fn loaded(paths: &[PathBuf], size: usize) -> Loaded {
    let kept: Vec<_> = paths.iter().map(|p| input::load(p, size, Input::Crop).unwrap()).collect();
    let own = kept.iter().map(|k| k.own).collect();
    let px = kept.into_iter().flat_map(|k| k.px).collect();
    Loaded::kept(size, Input::Crop, Pixels::Owned(px), own, vec![0; paths.len()], vec![None; paths.len()])
}

#[test]
fn crops_are_the_images_own_pixels_bit_for_bit() {
    let (h, w, size) = (100usize, 150usize, 32usize);
    let img = coordinates(h as u32, w as u32);
    let data = loaded(&[png("native", &img)], size);
    assert_eq!((data.side, data.padded()), (64, 0));
    // Validation and eval: the centre crop.
    let (x, _) = data.batch(&[0], None).unwrap();
    assert_eq!(x.host::<u8>().unwrap(), region(&img, ((h - size) / 2, (w - size) / 2), size));
    // Training: a random crop, each an exact region of the image, moving with the seed.
    let mut origins = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let (x, _) = data.batch(&[0], Some((&Augment::NONE, seed))).unwrap();
        let px = x.host::<u8>().unwrap();
        let at = (px[0] as usize, px[1] as usize);
        assert!(at.0 + size <= h && at.1 + size <= w, "{at:?}");
        assert_eq!(px, region(&img, at, size), "seed {seed}");
        origins.insert(at);
    }
    assert!(origins.len() >= 30, "{origins:?}");
    // Inside the kept square: within a crop's width of the centre crop.
    assert!(origins
        .iter()
        .all(|&(y, x)| y.abs_diff((h - size) / 2) <= size / 2 && x.abs_diff((w - size) / 2) <= size / 2));
}

#[test]
fn a_small_image_is_padded_by_reflection_and_counted() {
    let size = 32;
    let img = coordinates(20, 40);
    let data = loaded(&[png("small", &img), png("large", &coordinates(64, 64))], size);
    assert_eq!(data.padded(), 1);
    for seed in [None, Some(3u64)] {
        let (x, _) = data.batch(&[0], seed.map(|s| (&Augment::NONE, s))).unwrap();
        let px = x.host::<u8>().unwrap();
        let at = |r: usize, c: usize| &px[(r * size + c) * 3..][..3];
        // Rows 6..26 of the crop are the image's 20 rows, centred as its centre crop is (20 - 32 = -12, half
        // of it above); the rows beyond mirror them.
        let x0 = at(6, 0)[1] as usize;
        for r in 0..20 {
            assert_eq!(
                &px[((r + 6) * size) * 3..][..size * 3],
                &region(&coordinates(20, 40), (r, x0), size)[..size * 3]
            );
        }
        assert_eq!(at(5, 0), at(6, 0));
        assert_eq!(at(4, 0), at(7, 0));
        assert_eq!(at(26, 0), at(25, 0));
        if seed.is_none() {
            assert_eq!(x0, 4); // (40 - 32) / 2
        }
    }
}

#[test]
fn tiles_cover_the_whole_image_with_native_crops() {
    // 3 x 3 tiles of 32 cover 90 x 80 pixels; on a larger image they span it from edge to edge.
    let size = 32usize;
    let spread = Tiles::new(9, Combine::Mean, Input::Crop).unwrap().of_file(
        &png("wide", &coordinates(200, 250)),
        size,
        Input::Crop,
    );
    let spread = spread.unwrap();
    let corner = |k: usize| (spread[k * size * size * 3] as usize, spread[k * size * size * 3 + 1] as usize);
    assert_eq!((corner(0), corner(4), corner(8)), ((0, 0), (84, 109), (168, 218)));
    let (h, w) = (90usize, 80usize);
    let img = coordinates(h as u32, w as u32);
    let path = png("tiles", &img);
    let px = Tiles::new(9, Combine::Mean, Input::Crop).unwrap().of_file(&path, size, Input::Crop).unwrap();
    let per = size * size * 3;
    assert_eq!(px.len(), 9 * per);
    let mut covered = vec![false; h * w];
    for crop in px.chunks(per) {
        let at = (crop[0] as usize, crop[1] as usize);
        assert_eq!(crop, region(&img, at, size));
        (at.0..at.0 + size).for_each(|y| (at.1..at.1 + size).for_each(|x| covered[y * w + x] = true));
    }
    assert!(covered.iter().all(|&c| c), "some pixels are in no tile");
    // One tile is the centre crop, as eval's.
    let one = Tiles::CENTRE.of_file(&path, size, Input::Crop).unwrap();
    assert_eq!(one, region(&img, ((h - size) / 2, (w - size) / 2), size));
    let data = loaded(&[path], size);
    assert_eq!(data.tiles(&[0], 1).unwrap().host::<u8>().unwrap(), &one[..]);
    // Eval's tiles span the kept square's native pixels.
    let t = data.tiles(&[0], 2).unwrap();
    for crop in t.host::<u8>().unwrap().chunks(per) {
        assert_eq!(crop, region(&img, (crop[0] as usize, crop[1] as usize), size));
    }
}

#[test]
fn tiles_are_a_square_grid_and_need_native_pixels() {
    let e = Tiles::new(3, Combine::Mean, Input::Crop).unwrap_err().to_string();
    assert!(e.contains("--tiles 3") && e.contains("1, 4, 9"), "{e}");
    let e = Tiles::new(4, Combine::Max, Input::Resize).unwrap_err().to_string();
    assert!(e.contains("--input resize") && e.contains("--input crop"), "{e}");
    assert_eq!(Tiles::new(1, Combine::Mean, Input::Resize).unwrap(), Tiles::CENTRE);
    assert_eq!((Combine::Mean.apply(&[1.0, 3.0, -1.0]), Combine::Max.apply(&[1.0, 3.0, -1.0])), (1.0, 3.0));
}

#[test]
fn resize_squashes_the_whole_image_as_before() {
    let img = coordinates(100, 150);
    let k = input::load(&png("resize", &img), 32, Input::Resize).unwrap();
    let want = image::imageops::resize(&img, 32, 32, image::imageops::FilterType::Triangle).into_raw();
    assert_eq!((k.px, k.own), (want, input::Own::all(32)));
}
