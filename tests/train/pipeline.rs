//! The input pipeline: augmentations (deterministic per seed, each one doing what it says), the packed format
//! (the same images as decoding, errors that name the file), splits, and the batch thread.

use dfgpu::data::augment::Augment;
use dfgpu::data::folder::Dataset;
use dfgpu::data::input::Input;
use dfgpu::data::loaded::{Loaded, Pixels};
use dfgpu::data::open::open_data;
use dfgpu::data::{pack, synth};
use dfgpu::error::Choice;
use dfgpu::rng::Rng;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dfgpu-pipeline-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A smooth image with texture, so that blur and re-compression have something to change.
fn image(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..size * size * 3)
        .map(|i| {
            let (y, x) = ((i / 3) / size, (i / 3) % size);
            (((x * 7 + y * 3) % 64) as f32 * 2.0 + rng.uniform() * 100.0) as u8
        })
        .collect()
}

fn applied(a: &Augment, seed: u64) -> Vec<u8> {
    let mut px = image(32, 1);
    a.apply(&mut px, 32, seed).unwrap();
    px
}

#[test]
fn each_augmentation_changes_the_image_and_none_does_not() {
    let orig = image(32, 1);
    assert_eq!(applied(&Augment::NONE, 3), orig);
    for spec in ["crop=1", "rescale=1", "blur=1", "jpeg=1", "flip=1"] {
        let a = Augment::parse(spec).unwrap();
        let px = applied(&a, 3);
        assert_ne!(px, orig, "{spec}");
        assert_eq!(px, applied(&a, 3), "{spec}: the same seed gives the same image");
    }
    // A flip is exact: row by row reversed pixels.
    let px = applied(&Augment::parse("flip=1").unwrap(), 3);
    for y in 0..32 {
        for x in 0..32 {
            assert_eq!(px[(y * 32 + x) * 3..][..3], orig[(y * 32 + 31 - x) * 3..][..3]);
        }
    }
    // Blur keeps the mean (to rounding) and lowers the pixel-to-pixel differences.
    let blurred = applied(&Augment::parse("blur=1").unwrap(), 3);
    let tv = |v: &[u8]| v.windows(4).map(|w| (w[3] as i32 - w[0] as i32).abs()).sum::<i32>();
    assert!(tv(&blurred) < tv(&orig) / 2);
    let mean = |v: &[u8]| v.iter().map(|&p| p as f64).sum::<f64>() / v.len() as f64;
    assert!((mean(&blurred) - mean(&orig)).abs() < 2.0);
}

#[test]
fn augmentation_draws_differ_by_seed_and_respect_probabilities() {
    let a = Augment::parse("flip=0.5").unwrap();
    let flipped = (0..400).filter(|&s| applied(&a, s) != image(32, 1)).count();
    assert!((150..250).contains(&flipped), "{flipped} of 400 flipped at p = 0.5");
    let d = Augment::parse("robust").unwrap();
    let distinct: std::collections::HashSet<Vec<u8>> = (0..20).map(|s| applied(&d, s)).collect();
    assert!(distinct.len() > 10);
}

#[test]
fn augment_specs_parse_and_bad_ones_say_why() {
    assert_eq!(Augment::parse("none").unwrap(), Augment::NONE);
    assert_eq!(Augment::parse("default").unwrap(), Augment::default());
    assert_eq!(Augment::default().describe(), "flip=0.5");
    assert_eq!(Augment::parse("robust").unwrap().describe(), "crop=0.25,rescale=0.1,blur=0.1,jpeg=0.2,flip=0.5");
    let a = Augment::parse("jpeg=0.3, flip=0.5").unwrap();
    assert_eq!((a.jpeg, a.flip, a.crop, a.blur), (0.3, 0.5, 0.0, 0.0));
    assert_eq!(Augment::parse(&a.describe()).unwrap(), a);
    assert_eq!(Augment::NONE.describe(), "none");
    for bad in ["sharpen=0.5", "flip=2", "flip", "jpeg=x"] {
        let e = Augment::parse(bad).unwrap_err().to_string();
        assert!(e.contains(&format!("--augment '{bad}'")) && e.contains("crop, rescale, blur, jpeg, flip"), "{e}");
    }
}

#[test]
fn a_pack_holds_the_decoded_images_and_splits_as_the_dataset_does() {
    let dir = tmp("pack");
    synth::write(&synth::SynthConfig { n_real: 5, n_fake: 11, size: 32, seed: 4, ..Default::default() }, &dir).unwrap();
    // One corrupt image: skipped and listed by both routes.
    let bad = dir.join("fake/upconv/broken.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let ds = Dataset::open(&dir).unwrap();
    for input in [Input::Resize, Input::Crop] {
        let file = dir.with_extension(format!("{}.dfpack", input.name()));
        let mut calls = 0;
        let p = pack::pack(&ds, 24, input, &file, &mut |done, total| {
            calls += 1;
            assert!(done <= total)
        })
        .unwrap();
        assert!(calls >= 1);
        assert_eq!((p.images, p.skipped.len()), (16, 1));
        assert!(p.skipped[0].contains("broken.png"), "{:?}", p.skipped);
        assert!(pack::is_pack(&file) && !pack::is_pack(&dir) && !pack::is_pack(&bad));

        let open = |spec: &Path| open_data(spec, 24, input, &mut |_| {}).unwrap();
        let (mapped, decoded) = (open(&file), open(&dir));
        assert_eq!(decoded.skipped.len(), 1);
        assert_eq!(
            (mapped.len(), mapped.labels.clone(), mapped.groups.clone(), mapped.side),
            (16, decoded.labels.clone(), decoded.groups.clone(), input.side(24))
        );
        for i in 0..16 {
            assert_eq!(
                (mapped.image(i).unwrap(), mapped.own(i)),
                (decoded.image(i).unwrap(), decoded.own(i)),
                "image {i}"
            );
        }
        let ((mt, mv), (dt, dv)) = (mapped.split(0.25, 7).unwrap(), decoded.split(0.25, 7).unwrap());
        assert_eq!((mt.labels.clone(), mv.labels.clone()), (dt.labels.clone(), dv.labels.clone()));
        assert_eq!(mv.counts(), [1, 3]);
        for i in 0..mv.len() {
            assert_eq!(mv.image(i).unwrap(), dv.image(i).unwrap());
        }
        // The split of the indices is Dataset::split's.
        let ok: Vec<_> = ds.samples.iter().filter(|s| s.path != bad).cloned().collect();
        let (_, val_ds) = Dataset { samples: ok, skipped: Vec::new() }.split(0.25, 7).unwrap();
        assert_eq!(val_ds.samples.iter().map(|s| s.label).collect::<Vec<_>>(), mv.labels);

        // A file that is not a pack is never written over.
        let e = pack::pack(&ds, 24, input, &bad, &mut |_, _| {}).err().unwrap().to_string();
        assert!(e.contains("broken.png: exists and is not a dfgpu pack"), "{e}");
        assert_eq!(std::fs::read(&bad).unwrap(), b"not a png");
        // A pack serves the size and the input it was made for.
        let e = open_data(&file, 32, input, &mut |_| {}).err().unwrap().to_string();
        assert!(e.contains("packed for 24x24 inputs") && e.contains("--size 32") && e.contains(".dfpack"), "{e}");
        let other = if input == Input::Crop { Input::Resize } else { Input::Crop };
        let e = open_data(&file, 24, other, &mut |_| {}).err().unwrap().to_string();
        assert!(
            e.contains(&format!("by --input {}, the model takes 24x24 by --input {}", input.name(), other.name())),
            "{e}"
        );
    }
}

#[test]
fn a_damaged_pack_is_an_error_naming_it() {
    let dir = tmp("damaged");
    std::fs::create_dir_all(&dir).unwrap();
    let ds_dir = dir.join("set");
    synth::write(&synth::SynthConfig { n_real: 2, n_fake: 2, size: 16, seed: 1, ..Default::default() }, &ds_dir)
        .unwrap();
    let file = dir.join("set.dfpack");
    pack::pack(&Dataset::open(&ds_dir).unwrap(), 16, Input::Resize, &file, &mut |_, _| {}).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.dfpack");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
    let e = pack::open(&cut, &mut |_| {}).err().unwrap();
    assert!(matches!(e, dfgpu::Error::Corrupt { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("cut.dfpack: not a readable dfgpu pack"), "{e}");
    // Pixels missing in the middle: the trailer no longer matches.
    let short = dir.join("short.dfpack");
    std::fs::write(&short, [&bytes[..8], &bytes[8 + 16 * 16 * 3..]].concat()).unwrap();
    let e = pack::open(&short, &mut |_| {}).err().unwrap().to_string();
    assert!(e.contains("short.dfpack") && e.contains("bytes of pixels for 4 images"), "{e}");
}

#[test]
fn the_batch_thread_delivers_every_batch_in_order_and_stops_on_error() {
    let n = 10;
    let px: Vec<u8> = (0..n).flat_map(|i| vec![i as u8; 8 * 8 * 3]).collect();
    let l = Loaded::new(8, Pixels::Owned(px), (0..n).map(|i| (i % 2) as u8).collect(), vec![None; n]);
    let plan: Vec<(Vec<usize>, u64)> = (0..5).map(|b| (vec![(2 * b + 3) % n, (7 * b + 1) % n], b as u64)).collect();
    let mut seen = Vec::new();
    l.for_each_batch(&plan, &Augment::NONE, 2, |i, x, y, _| {
        let px = x.host::<u8>().unwrap();
        seen.push((i, px[0], px[8 * 8 * 3], y.host::<f32>().unwrap().to_vec()));
        Ok(())
    })
    .unwrap();
    let want: Vec<_> = plan
        .iter()
        .enumerate()
        .map(|(i, (idx, _))| (i, idx[0] as u8, idx[1] as u8, idx.iter().map(|&j| (j % 2) as f32).collect::<Vec<_>>()))
        .collect();
    assert_eq!(seen, want);
    let mut calls = 0;
    let e = l.for_each_batch(&plan, &Augment::NONE, 1, |i, _, _, _| {
        calls += 1;
        if i == 1 {
            return Err(dfgpu::Error::Invalid("stop here".into()));
        }
        Ok(())
    });
    assert_eq!((calls, e.unwrap_err().to_string().contains("stop here")), (2, true));
}

#[test]
fn a_set_too_large_for_memory_is_an_error_that_says_to_pack_it() {
    use dfgpu::data::loaded::fits_in_memory;
    let dir = std::path::Path::new("/data/dfwild");
    // DFWild-Cup's training set at 224 (39 GB) on a 64 GiB machine with 48 GiB free: too much.
    let e = fits_in_memory(dir, 262_160, 224, Input::Resize, Some(48 << 30)).unwrap_err().to_string();
    assert!(
        e.contains("/data/dfwild: 262160 images kept at 224x224 (--input resize) take 36.8 GiB decoded")
            && e.contains("3/4 of the 48.0 GiB of memory available")
            && e.contains("dfgpu pack /data/dfwild OUT.dfpack --size 224 --input resize"),
        "{e}"
    );
    // Crops keep a square twice the side: four times the bytes.
    let e = fits_in_memory(dir, 20_000, 224, Input::Crop, Some(14 << 30)).unwrap_err().to_string();
    assert!(
        e.contains("20000 images kept at 448x448 (--input crop) take 11.2 GiB")
            && e.contains("--size 224 --input crop"),
        "{e}"
    );
    fits_in_memory(dir, 20_000, 224, Input::Resize, Some(14 << 30)).unwrap();
    fits_in_memory(dir, 262_160, 224, Input::Resize, None).unwrap();
}

/// A pack made before checksums (magic DFGPACK1: no image checksums, no trailer checksum) still opens, with a
/// note that its bytes are not verified; `verify` says it has nothing to check.
#[test]
fn a_pack_from_before_checksums_still_opens() {
    let dir = tmp("v1pack");
    synth::write(&synth::SynthConfig { n_real: 2, n_fake: 2, size: 16, seed: 1, ..Default::default() }, &dir).unwrap();
    let file = dir.with_extension("dfpack");
    pack::pack(&Dataset::open(&dir).unwrap(), 16, Input::Resize, &file, &mut |_, _| {}).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    let tlen = u64::from_le_bytes(bytes[n - 16..n - 8].try_into().unwrap()) as usize;
    let mut trailer: serde_json::Value = serde_json::from_slice(&bytes[n - 20 - tlen..n - 20]).unwrap();
    trailer.as_object_mut().unwrap().remove("crc32").expect("v2 packs carry checksums");
    let trailer = serde_json::to_vec(&trailer).unwrap();
    let v1 =
        [b"DFGPACK1", &bytes[8..n - 20 - tlen], &trailer, &(trailer.len() as u64).to_le_bytes(), b"DFGPACK1"].concat();
    let old = dir.with_extension("v1.dfpack");
    std::fs::write(&old, v1).unwrap();
    let mut notes = Vec::new();
    let (l, now) =
        (pack::open(&old, &mut |l| notes.push(l.to_string())).unwrap(), pack::open(&file, &mut |_| {}).unwrap());
    assert_eq!((l.len(), l.labels.clone()), (4, now.labels.clone()));
    assert!((0..4).all(|i| l.image(i).unwrap() == now.image(i).unwrap()));
    assert!(
        notes.len() == 1 && notes[0].contains("v1.dfpack: packed before dfgpu checked packs (DFGPACK1)"),
        "{notes:?}"
    );
    let e = pack::verify(&old, &mut |_| {}).unwrap_err().to_string();
    assert!(e.contains("no checksums to verify"), "{e}");
}

/// Found by tests/fuzz: a trailer (with a valid checksum) whose size is near usize::MAX overflowed the pixel
/// count (or, for crop, the side) instead of being refused with the pack's name.
#[test]
fn a_pack_trailer_with_an_extreme_size_is_an_error() {
    let dir = tmp("pack-extreme");
    synth::write(&synth::SynthConfig { n_real: 2, n_fake: 2, size: 16, seed: 1, ..Default::default() }, &dir).unwrap();
    let ds = Dataset::open(&dir).unwrap();
    for input in [Input::Resize, Input::Crop] {
        let file = dir.with_extension(format!("{}.extreme.dfpack", input.name()));
        pack::pack(&ds, 8, input, &file, &mut |_, _| {}).unwrap();
        let good = std::fs::read(&file).unwrap();
        let n = good.len();
        let tlen = u64::from_le_bytes(good[n - 16..n - 8].try_into().unwrap()) as usize;
        let text = std::str::from_utf8(&good[n - 20 - tlen..n - 20]).unwrap();
        let side = input.side(8);
        for v in [usize::MAX / 3, usize::MAX / 2, 1 << 32] {
            let trailer = text.replace("\"size\":8", &format!("\"size\":{v}")).replace(
                &format!("\"side\":{side}"),
                &format!("\"side\":{}", v.checked_mul(input.side(1)).unwrap_or(v)),
            );
            let mut bytes = good[..n - 20 - tlen].to_vec();
            bytes.extend_from_slice(trailer.as_bytes());
            bytes.extend_from_slice(&crc32fast::hash(trailer.as_bytes()).to_le_bytes());
            bytes.extend_from_slice(&(trailer.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&good[n - 8..]);
            std::fs::write(&file, &bytes).unwrap();
            let e = std::panic::catch_unwind(|| pack::open(&file, &mut |_| {}).map(|_| ()))
                .unwrap_or_else(|_| panic!("{} size {v}: a panic", input.name()))
                .unwrap_err()
                .to_string();
            assert!(e.contains(".extreme.dfpack: not a readable dfgpu pack"), "{e}");
        }
    }
}
