//! The packed format (`dfgpu pack DIR OUT`): a dataset decoded once, as the model's input geometry keeps it
//! (data/input.rs), in one file that training maps into memory, so that a large set (DFWild-Cup's 262,160
//! training images) trains without decoding anything.
//!
//! Layout: the magic `DFGPACK2`, then side x side x 3 bytes (RGB) per image, back to back, then a JSON trailer
//! (size, input, side, labels, groups, source paths, each image's CRC-32, and for crop where each image's own
//! pixels are: rows and columns, half-open), then the trailer's CRC-32 (u32), its length (u64, both
//! little-endian) and the magic again. The trailer's checksum is verified on open; an image's the first time it
//! is read (so that training starts at once, whatever the pack's size), and every image's by `--verify`.
//! `DFGPACK1` packs (before checksums) have neither checksum and are read with a note; a pack without `input`
//! holds resized images.
//! The trailer comes last so that the images stream to disk as they are decoded: memory stays bounded by one
//! chunk whatever the set's size. Written to a temporary file and renamed.

use crate::data::folder::Dataset;
use crate::data::input::{self, Input, Own};
use crate::data::loaded::{Loaded, Pixels};
use crate::error::Choice;
use crate::error::{Error, Result};
use crate::files::tmp_path;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

const MAGIC: &[u8; 8] = b"DFGPACK2";
/// Packs made before checksums: read without them.
const MAGIC_V1: &[u8; 8] = b"DFGPACK1";
/// Images decoded at once: bounds the memory while packing.
const CHUNK: usize = 512;

/// Whether `path` is a packed file (by its first bytes).
pub fn is_pack(path: &Path) -> bool {
    let mut head = [0u8; 8];
    path.is_file()
        && std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok()
        && (&head == MAGIC || &head == MAGIC_V1)
}

/// The JSON trailer.
#[derive(Serialize, Deserialize)]
struct Trailer {
    size: usize,
    /// Absent in packs made before --input: resize.
    input: Option<String>,
    side: Option<usize>,
    labels: Vec<u8>,
    groups: Vec<Option<String>>,
    paths: Vec<String>,
    /// Per image (crop), or empty: everywhere.
    #[serde(default)]
    own: Vec<[u32; 4]>,
    /// Per image, the CRC-32 of its pixels; absent in DFGPACK1 packs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc32: Option<Vec<u32>>,
}

/// A pack's image checksums, each verified the first time its image is read.
pub struct Checksums {
    pack: PathBuf,
    crc: Vec<u32>,
    /// Where each image came from, for the error.
    paths: Vec<String>,
    verified: Vec<AtomicBool>,
}

impl Checksums {
    /// Checks image `i`'s pixels `px` against its checksum, once: an error names the pack, the image and its
    /// source file.
    pub fn check(&self, i: usize, px: &[u8]) -> Result<()> {
        if self.verified[i].load(Ordering::Relaxed) {
            return Ok(());
        }
        if crc32fast::hash(px) != self.crc[i] {
            return Err(Error::corrupt(
                &self.pack,
                format!(
                    "{} does not match its checksum: the pack is damaged; pack the data again (dfgpu pack --verify \
                     {} lists every damaged image)",
                    self.image(i),
                    self.pack.display()
                ),
            ));
        }
        self.verified[i].store(true, Ordering::Relaxed);
        Ok(())
    }

    /// "image I (packed from PATH)".
    fn image(&self, i: usize) -> String {
        format!("image {i} (packed from {})", self.paths.get(i).map_or("?", |p| p.as_str()))
    }
}

/// What `pack` did.
pub struct Packed {
    pub images: usize,
    pub skipped: Vec<String>,
    pub bytes: u64,
}

/// Decodes `ds` as `input` keeps it for a model of `size` and writes it to `out`; unreadable images are skipped
/// and listed. `progress` gets (done, total) after each chunk.
pub fn pack(
    ds: &Dataset,
    size: usize,
    input: Input,
    out: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Packed> {
    if out.exists() && !is_pack(out) {
        return Err(Error::Invalid(format!(
            "{}: exists and is not a dfgpu pack: not written over (choose another output)",
            out.display()
        )));
    }
    let tmp = tmp_path(out);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(Error::io(&tmp))?);
    w.write_all(MAGIC).map_err(Error::io(&tmp))?;
    let (mut labels, mut groups, mut paths, mut skipped) = (Vec::new(), Vec::new(), Vec::new(), ds.skipped.clone());
    let (mut own, mut crc) = (Vec::new(), Vec::new());
    let load = |s: &crate::data::folder::Sample| input::load(&s.path, size, input).map(|k| (crc32fast::hash(&k.px), k));
    for (c, decoded) in input::decoded_chunks(&ds.samples, CHUNK, load).enumerate() {
        let in_chunk = decoded.len();
        for (s, r) in decoded {
            match r {
                Ok((sum, k)) => {
                    w.write_all(&k.px).map_err(Error::io(&tmp))?;
                    let Own { rows, cols } = k.own;
                    own.push([rows.0, rows.1, cols.0, cols.1]);
                    crc.push(sum);
                    labels.push(s.label);
                    groups.push(s.group.clone());
                    paths.push(s.path.display().to_string());
                }
                Err(e) => skipped.push(e.to_string()),
            }
        }
        progress((c * CHUNK + in_chunk).min(ds.samples.len()), ds.samples.len());
    }
    if input != Input::Crop {
        own.clear();
    }
    let images = labels.len();
    let trailer = Trailer {
        size,
        input: Some(input.name().into()),
        side: Some(input.side(size)),
        labels,
        groups,
        paths,
        own,
        crc32: Some(crc),
    };
    let trailer = serde_json::to_vec(&trailer).expect("numbers and strings serialize");
    w.write_all(&trailer).map_err(Error::io(&tmp))?;
    w.write_all(&crc32fast::hash(&trailer).to_le_bytes()).map_err(Error::io(&tmp))?;
    w.write_all(&(trailer.len() as u64).to_le_bytes()).map_err(Error::io(&tmp))?;
    w.write_all(MAGIC).map_err(Error::io(&tmp))?;
    w.into_inner().map_err(|e| Error::io(&tmp)(e.into_error()))?.sync_all().map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(Error::io(out))?;
    let bytes = std::fs::metadata(out).map_err(Error::io(out))?.len();
    Ok(Packed { images, skipped, bytes })
}

/// Maps a packed file; the trailer's checksum is verified here, each image's when it is first read. Every
/// inconsistency is an error naming the file; a DFGPACK1 pack (no checksums) is read with a note to `log`.
pub fn open(path: &Path, log: &mut dyn FnMut(&str)) -> Result<Loaded> {
    let bad = |m: String| Error::corrupt(path, format!("not a readable dfgpu pack: {m}"));
    let file = std::fs::File::open(path).map_err(Error::io(path))?;
    // SAFETY: the map is read-only; dfgpu never writes a pack in place (`pack` writes a new file and renames),
    // so the bytes cannot change under the map unless another program truncates the file while it trains.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Error::io(path))?;
    let n = map.len();
    let v1 = n >= 8 && &map[n - 8..] == MAGIC_V1;
    // After the trailer: its CRC-32 (not in DFGPACK1), its length, the magic.
    let tail = if v1 { 16 } else { 20 };
    if n < 8 + tail || map[..8] != map[n - 8..] || !(v1 || &map[..8] == MAGIC) {
        return Err(bad(
            "no DFGPACK2 (or DFGPACK1) magic at both ends (written by another program, or cut short?)".into()
        ));
    }
    let tlen = u64::from_le_bytes(map[n - 16..n - 8].try_into().unwrap()) as usize;
    let tstart =
        (n - tail).checked_sub(tlen).filter(|&s| s >= 8).ok_or_else(|| bad(format!("trailer of {tlen} bytes")))?;
    let raw = &map[tstart..n - tail];
    if !v1 && crc32fast::hash(raw).to_le_bytes() != map[n - 20..n - 16] {
        return Err(bad("the trailer (labels, groups, paths) does not match its checksum: the file is damaged; \
                        pack the data again"
            .into()));
    }
    let t: Trailer = serde_json::from_slice(raw).map_err(|e| bad(format!("trailer: {e}")))?;
    let count = t.labels.len();
    if t.labels.iter().any(|&y| y > 1) {
        return Err(bad("a label is not 0 or 1".into()));
    }
    if t.groups.len() != count {
        return Err(bad(format!("{} groups for {count} images", t.groups.len())));
    }
    let input = match &t.input {
        None => Input::Resize,
        Some(name) => Input::parse(name, "the pack's input").map_err(|e| bad(e.to_string()))?,
    };
    // The trailer's numbers are the file's word: checked, so that a damaged size is an error, not an overflow.
    let side = t.size.checked_mul(input.side(1)).ok_or_else(|| bad(format!("size {} is too large", t.size)))?;
    if t.side.is_some_and(|s| s != side) {
        return Err(bad(format!("side is not {side}, what --input {} keeps for size {}", input.name(), t.size)));
    }
    if !t.own.is_empty() && t.own.len() != count {
        return Err(bad("own regions are not one per image".into()));
    }
    let own: Vec<Own> = t
        .own
        .iter()
        .map(|&[r0, r1, c0, c1]| {
            let within = r0 < r1 && r1 as usize <= side && c0 < c1 && c1 as usize <= side;
            within
                .then_some(Own { rows: (r0, r1), cols: (c0, c1) })
                .ok_or_else(|| bad(format!("an image's own region is not within its {side}x{side} square")))
        })
        .collect::<Result<_>>()?;
    let len = [side, side, 3]
        .into_iter()
        .try_fold(count, usize::checked_mul)
        .ok_or_else(|| bad(format!("{count} images at {side}x{side} are more bytes than a file can hold")))?;
    if tstart - 8 != len {
        return Err(bad(format!("{} bytes of pixels for {count} images at {side}x{side}", tstart - 8)));
    }
    let checksums = match t.crc32 {
        Some(crc) if crc.len() == count => Some(Checksums {
            pack: path.to_path_buf(),
            crc,
            paths: t.paths,
            verified: (0..count).map(|_| AtomicBool::new(false)).collect(),
        }),
        Some(crc) => return Err(bad(format!("{} checksums for {count} images", crc.len()))),
        None if v1 => {
            log(&format!(
                "{}: packed before dfgpu checked packs (DFGPACK1): its bytes are not verified; pack the data again \
                 to have them checked",
                path.display()
            ));
            None
        }
        None => return Err(bad("no image checksums".into())),
    };
    let pixels = Pixels::Mapped { map, start: 8, len, checksums };
    Ok(Loaded::kept(t.size, input, pixels, own, t.labels, t.groups))
}

/// `dfgpu pack --verify`: reads every image of the pack and checks it against its checksum, in parallel; an
/// error lists every damaged image. Returns the number of images.
pub fn verify(path: &Path, log: &mut dyn FnMut(&str)) -> Result<usize> {
    let l = open(path, log)?;
    let Some(sums) = l.checksums() else {
        return Err(Error::Invalid(format!(
            "{}: packed before dfgpu checked packs (DFGPACK1): no checksums to verify; pack the data again",
            path.display()
        )));
    };
    let damaged: Vec<usize> = (0..l.len()).into_par_iter().filter(|&i| l.image(i).is_err()).collect();
    if damaged.is_empty() {
        return Ok(l.len());
    }
    let list: Vec<String> = damaged.iter().map(|&i| format!("  {}", sums.image(i))).collect();
    Err(Error::corrupt(
        path,
        format!(
            "{} of {} images do not match their checksums (the pack is damaged; pack the data again):\n{}",
            damaged.len(),
            l.len(),
            list.join("\n")
        ),
    ))
}
