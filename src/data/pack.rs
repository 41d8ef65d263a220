//! The packed format (`dfgpu pack DIR OUT`): a dataset decoded and resized once, in one file that training maps
//! into memory, so that a large set (DFWild-Cup's 262,160 training images) trains without decoding anything.
//!
//! Layout: the magic `DFGPACK1`, then size x size x 3 bytes (RGB) per image, back to back, then a JSON trailer
//! (size, labels, groups, source paths), then the trailer's length (u64, little-endian) and the magic again.
//! The trailer comes last so that the images stream to disk as they are decoded: memory stays bounded by one
//! chunk whatever the set's size. Written to a temporary file and renamed.

use crate::data::folder::{load_rgb, Dataset};
use crate::data::loaded::{Loaded, Pixels};
use crate::error::{Error, Result};
use crate::json::{self, quote, Json};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"DFGPACK1";
/// Images decoded at once: bounds the memory while packing.
const CHUNK: usize = 512;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// Whether `path` is a packed file (by its first bytes).
pub fn is_pack(path: &Path) -> bool {
    let mut head = [0u8; 8];
    path.is_file()
        && std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok()
        && &head == MAGIC
}

/// What `pack` did.
pub struct Packed {
    pub images: usize,
    pub skipped: Vec<String>,
    pub bytes: u64,
}

/// Decodes `ds` at `size` x `size` and writes it to `out`; unreadable images are skipped and listed.
/// `progress` gets (done, total) after each chunk.
pub fn pack(ds: &Dataset, size: usize, out: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<Packed> {
    if out.exists() && !is_pack(out) {
        return Err(Error::Invalid(format!(
            "{}: exists and is not a dfgpu pack: not written over (choose another output)",
            out.display()
        )));
    }
    let tmp = out.with_extension("dfpack.tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
    w.write_all(MAGIC).map_err(io(&tmp))?;
    let (mut labels, mut groups, mut paths, mut skipped) = (Vec::new(), Vec::new(), Vec::new(), ds.skipped.clone());
    for (c, chunk) in ds.samples.chunks(CHUNK).enumerate() {
        let decoded: Vec<_> = chunk.par_iter().map(|s| load_rgb(&s.path, size as u32)).collect();
        for (s, r) in chunk.iter().zip(decoded) {
            match r {
                Ok(px) => {
                    w.write_all(&px).map_err(io(&tmp))?;
                    labels.push(s.label.to_string());
                    groups.push(s.group.as_deref().map_or("null".to_string(), quote));
                    paths.push(quote(&s.path.display().to_string()));
                }
                Err(e) => skipped.push(e.to_string()),
            }
        }
        progress((c * CHUNK + chunk.len()).min(ds.samples.len()), ds.samples.len());
    }
    let trailer = format!(
        "{{\"size\":{size},\"labels\":[{}],\"groups\":[{}],\"paths\":[{}]}}",
        labels.join(","),
        groups.join(","),
        paths.join(",")
    );
    w.write_all(trailer.as_bytes()).map_err(io(&tmp))?;
    w.write_all(&(trailer.len() as u64).to_le_bytes()).map_err(io(&tmp))?;
    w.write_all(MAGIC).map_err(io(&tmp))?;
    w.into_inner()
        .map_err(|e| Error::Io { path: tmp.clone(), source: e.into_error() })?
        .sync_all()
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    let bytes = std::fs::metadata(out).map_err(io(out))?.len();
    Ok(Packed { images: labels.len(), skipped, bytes })
}

/// Maps a packed file. Every inconsistency is an error naming the file.
pub fn open(path: &Path) -> Result<Loaded> {
    let bad = |m: String| Error::Invalid(format!("{}: not a readable dfgpu pack: {m}", path.display()));
    let file = std::fs::File::open(path).map_err(io(path))?;
    // SAFETY: the map is read-only; dfgpu never writes a pack in place (`pack` writes a new file and renames),
    // so the bytes cannot change under the map unless another program truncates the file while it trains.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io(path))?;
    let n = map.len();
    if n < 24 || &map[..8] != MAGIC || &map[n - 8..] != MAGIC {
        return Err(bad("no DFGPACK1 magic at both ends (written by another program, or cut short?)".into()));
    }
    let tlen = u64::from_le_bytes(map[n - 16..n - 8].try_into().unwrap()) as usize;
    let tstart =
        (n - 16).checked_sub(tlen).filter(|&s| s >= 8).ok_or_else(|| bad(format!("trailer of {tlen} bytes")))?;
    let trailer = std::str::from_utf8(&map[tstart..n - 16]).map_err(|_| bad("trailer is not UTF-8".into()))?;
    let j = json::parse(trailer).map_err(|e| bad(format!("trailer: {e}")))?;
    let size = j.get("size").and_then(Json::as_usize).ok_or_else(|| bad("no size".into()))?;
    let labels: Vec<u8> = j
        .get("labels")
        .and_then(Json::as_usizes)
        .filter(|l| l.iter().all(|&y| y <= 1))
        .ok_or_else(|| bad("labels missing or not 0/1".into()))?
        .into_iter()
        .map(|y| y as u8)
        .collect();
    let groups: Vec<Option<String>> = match j.get("groups") {
        Some(Json::Arr(g)) if g.len() == labels.len() => g.iter().map(|g| g.as_str().map(str::to_string)).collect(),
        _ => return Err(bad("groups missing or not one per image".into())),
    };
    let len = labels.len() * size * size * 3;
    if tstart - 8 != len {
        return Err(bad(format!("{} bytes of pixels for {} images at {size}x{size}", tstart - 8, labels.len())));
    }
    Ok(Loaded::new(size, Pixels::Mapped { map, start: 8, len }, labels, groups))
}
