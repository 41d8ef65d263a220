//! The packed format (`dfgpu pack DIR OUT`): a dataset decoded once, as the model's input geometry keeps it
//! (data/input.rs), in one file that training maps into memory, so that a large set (DFWild-Cup's 262,160
//! training images) trains without decoding anything.
//!
//! Layout: the magic `DFGPACK1`, then side x side x 3 bytes (RGB) per image, back to back, then a JSON trailer
//! (size, input, side, labels, groups, source paths, and for crop where each image's own pixels are: rows and
//! columns, half-open), then the trailer's length (u64, little-endian) and the magic again. A pack without
//! `input` (made before it existed) holds resized images.
//! The trailer comes last so that the images stream to disk as they are decoded: memory stays bounded by one
//! chunk whatever the set's size. Written to a temporary file and renamed.

use crate::data::folder::Dataset;
use crate::data::input::{self, Input, Own};
use crate::data::loaded::{Loaded, Pixels};
use crate::error::Choice;
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
    let tmp = out.with_extension("dfpack.tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
    w.write_all(MAGIC).map_err(io(&tmp))?;
    let (mut labels, mut groups, mut paths, mut skipped) = (Vec::new(), Vec::new(), Vec::new(), ds.skipped.clone());
    let mut own = Vec::new();
    for (c, chunk) in ds.samples.chunks(CHUNK).enumerate() {
        let decoded: Vec<_> = chunk.par_iter().map(|s| input::load(&s.path, size, input)).collect();
        for (s, r) in chunk.iter().zip(decoded) {
            match r {
                Ok(k) => {
                    w.write_all(&k.px).map_err(io(&tmp))?;
                    let Own { rows, cols } = k.own;
                    own.push(format!("[{},{},{},{}]", rows.0, rows.1, cols.0, cols.1));
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
        "{{\"size\":{size},\"input\":{},\"side\":{},\"labels\":[{}],\"groups\":[{}],\"paths\":[{}],\"own\":[{}]}}",
        quote(input.name()),
        input.side(size),
        labels.join(","),
        groups.join(","),
        paths.join(","),
        if input == Input::Crop { own.join(",") } else { String::new() }
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
    let input = match j.get("input").map(|i| i.as_str().ok_or_else(|| bad("input is not a string".into()))) {
        None => Input::Resize,
        Some(name) => Input::parse(name?, "the pack's input").map_err(|e| bad(e.to_string()))?,
    };
    let side = input.side(size);
    if j.get("side").is_some_and(|s| s.as_usize() != Some(side)) {
        return Err(bad(format!("side is not {side}, what --input {} keeps for size {size}", input.name())));
    }
    let own: Vec<Own> = match j.get("own") {
        Some(Json::Arr(o)) if o.is_empty() => Vec::new(),
        Some(Json::Arr(o)) if o.len() == labels.len() => o
            .iter()
            .map(|r| match r.as_usizes().as_deref() {
                Some(&[r0, r1, c0, c1]) if r0 < r1 && r1 <= side && c0 < c1 && c1 <= side => {
                    Ok(Own { rows: (r0 as u32, r1 as u32), cols: (c0 as u32, c1 as u32) })
                }
                _ => Err(bad(format!("an image's own region is not 4 numbers within its {side}x{side} square"))),
            })
            .collect::<Result<_>>()?,
        None => Vec::new(),
        _ => return Err(bad("own regions are not one per image".into())),
    };
    let len = labels.len() * side * side * 3;
    if tstart - 8 != len {
        return Err(bad(format!("{} bytes of pixels for {} images at {side}x{side}", tstart - 8, labels.len())));
    }
    Ok(Loaded::kept(size, input, Pixels::Mapped { map, start: 8, len }, own, labels, groups))
}
