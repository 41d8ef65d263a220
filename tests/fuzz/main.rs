//! Fuzz-style test of the readers that take files from users: the image decoder path, the pack reader,
//! the checkpoint reader and the CSV dataset reader. Each gets a fixed number of mutated copies of a small valid
//! seed (bit flips, byte changes, truncations, insertions, deletions, and the format's length and offset fields
//! set to extremes), drawn by the seeded `dfgpu::rng::Rng`, so that every run feeds the same inputs. Each case
//! must return (Ok or a `dfgpu::Error`) without a panic, within `CASE_LIMIT`, and without one allocation larger
//! than its bound (`Bound`, below). Its own test target: the `#[global_allocator]` below counts every allocation
//! of the process.
//!
//! A failure names the reader, the case, its seed and its mutations; `DFGPU_FUZZ_CASE=reader:case` runs one case
//! alone.

use dfgpu::data::folder::Dataset;
use dfgpu::data::input::{self, Input};
use dfgpu::data::pack;
use dfgpu::error::Choice;
use dfgpu::model::checkpoint::{self, Named};
use dfgpu::model::detector::DetectorConfig;
use dfgpu::rng::Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The largest single allocation (or reallocation) since the last `reset`, by any thread.
struct Peak;

static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// Cases of the current reader that read without an error.
static ACCEPTED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static A: Peak = Peak;

/// A case that runs longer than this is a hang. The slowest valid case (a 48x48 JPEG decoded and resized, in a
/// debug build on a loaded CI machine) takes milliseconds.
const CASE_LIMIT: Duration = Duration::from_secs(10);

/// Every reader may allocate this much whatever its input: the readers' fixed buffers (the CSV reader's, the
/// inflate window and tables of the PNG decoder, the JPEG decoder's Huffman and quantisation tables, the
/// JSON parser's scratch space) are each tens of KiB.
const FLOOR: usize = 1 << 20;
/// Per byte of input: a reader reads the file once (one allocation of its length), and what it parses from it
/// (JSON arrays of labels, tensor data, CSV records) holds at most a few bytes per byte read.
const PER_BYTE: usize = 16;

/// The largest single allocation a case may make: FLOOR + PER_BYTE x the input's length, plus, for an image,
/// 16 bytes a pixel of the image its header declares, grown by 16 on each side. 16 bytes a pixel: the widest
/// buffer of the path is the resize's intermediate (image's `resize` filters vertically first, into an
/// Rgba<f32> buffer of the old width and the new height, the model size 16 here), wider than the decoded image
/// (at most 8 bytes a pixel, 16-bit RGBA); the 16 covers the JPEG decoder's padding to whole 16x16 blocks and
/// a 1-pixel-high image resized to 16 rows. The image crate refuses (with an error) an image whose buffer would
/// be over 512 MiB, so this term cannot grow without bound either.
fn bound(bytes: &[u8], image: bool) -> usize {
    let (w, h) = if image { declared(bytes) } else { (0, 0) };
    let decoded = if image { 16usize.saturating_mul(w + 16).saturating_mul(h + 16) } else { 0 };
    (FLOOR + PER_BYTE * bytes.len()).saturating_add(decoded)
}

/// The largest width x height that a PNG's IHDR or any JPEG start-of-frame marker in `b` declares.
fn declared(b: &[u8]) -> (usize, usize) {
    let be16 = |i: usize| b.get(i..i + 2).map_or(0, |s| u16::from_be_bytes([s[0], s[1]]) as usize);
    let be32 = |i: usize| b.get(i..i + 4).map_or(0, |s| u32::from_be_bytes(s.try_into().unwrap()) as usize);
    let mut best = (0, 0);
    if b.get(12..16) == Some(b"IHDR") {
        best = (be32(16), be32(20));
    }
    for i in 0..b.len().saturating_sub(1) {
        let sof = matches!(b[i + 1], 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF);
        if b[i] == 0xFF && sof {
            let (h, w) = (be16(i + 5), be16(i + 7));
            if w * h > best.0 * best.1 {
                best = (w, h);
            }
        }
    }
    best
}

/// One mutation, applied in place; returns what it did, for the failure message.
fn mutate(b: &mut Vec<u8>, rng: &mut Rng, fields: &[Field]) -> String {
    let at = |rng: &mut Rng, n: usize| rng.below(n.max(1) as u64) as usize;
    match rng.below(if fields.is_empty() { 7 } else { 9 }) {
        _ if b.is_empty() => {
            b.push(rng.next_u64() as u8);
            "insert 1 byte into an empty file".into()
        }
        0 => {
            let i = at(rng, b.len());
            let bit = rng.below(8);
            b[i] ^= 1 << bit;
            format!("flip bit {bit} of byte {i}")
        }
        1 => {
            let i = at(rng, b.len());
            let v = [0u8, 0xFF, 0x7F, 0x80, rng.next_u64() as u8][at(rng, 5)];
            b[i] = v;
            format!("set byte {i} to {v:#04x}")
        }
        2 => {
            let n = at(rng, b.len());
            b.truncate(n);
            format!("truncate to {n} bytes")
        }
        3 => {
            let (i, n) = (at(rng, b.len() + 1), 1 + at(rng, 64));
            let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(i..i, ins);
            format!("insert {n} random bytes at {i}")
        }
        4 => {
            let i = at(rng, b.len());
            let n = 1 + at(rng, (b.len() - i).min(64));
            b.drain(i..i + n);
            format!("delete {n} bytes at {i}")
        }
        5 => {
            // A copy of a piece of the file elsewhere (a repeated chunk or segment, say).
            let (i, j) = (at(rng, b.len()), at(rng, b.len()));
            let n = 1 + at(rng, (b.len() - i).min(256));
            let piece = b[i..i + n].to_vec();
            b.splice(j..j, piece);
            format!("copy {n} bytes from {i} to {j}")
        }
        6 => {
            let n = 1 + at(rng, 8);
            for _ in 0..n {
                let i = at(rng, b.len());
                b[i] = rng.next_u64() as u8;
            }
            format!("{n} random bytes changed")
        }
        _ => {
            let f = &fields[at(rng, fields.len())];
            let v = extreme(rng, f.width);
            f.set(b, v);
            format!("{} (at {}) set to {v}", f.name, f.at)
        }
    }
}

/// A length or offset field of the format: `width` bytes at `at`, big- or little-endian.
struct Field {
    name: String,
    at: usize,
    width: usize,
    big: bool,
}

impl Field {
    fn set(&self, b: &mut [u8], v: u64) {
        let Some(s) = b.get_mut(self.at..self.at + self.width) else { return };
        let le = v.to_le_bytes();
        for (k, byte) in s.iter_mut().enumerate() {
            *byte = if self.big { le[self.width - 1 - k] } else { le[k] };
        }
    }
}

/// An extreme value for a field `width` bytes wide: 0, 1, the largest, the largest signed, or just past a
/// power of two.
fn extreme(rng: &mut Rng, width: usize) -> u64 {
    let max = if width == 8 { u64::MAX } else { (1u64 << (8 * width)) - 1 };
    let bits = 8 * width as u64;
    match rng.below(6) {
        0 => 0,
        1 => 1,
        2 => max,
        3 => max >> 1,
        4 => ((1u64 << rng.below(bits)) + rng.below(3)).min(max),
        _ => (max >> 1) + 1,
    }
}

/// A JSON mutation for formats whose header is JSON (a checkpoint's, a pack's trailer): one number in it set
/// to an extreme, as text.
fn mutate_number(text: &[u8], rng: &mut Rng) -> Mutated {
    let starts: Vec<usize> = (0..text.len())
        .filter(|&i| text[i].is_ascii_digit() && (i == 0 || !text[i - 1].is_ascii_alphanumeric()))
        .collect();
    let &i = starts.get(rng.below(starts.len().max(1) as u64) as usize)?;
    let end = (i..text.len()).find(|&k| !text[k].is_ascii_digit()).unwrap_or(text.len());
    let v = [
        "0",
        "1",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "4294967295",
        "4294967296",
        "1e400",
        "-1",
        "99999999999999999999999",
    ][rng.below(10) as usize];
    let mut out = text[..i].to_vec();
    out.extend_from_slice(v.as_bytes());
    out.extend_from_slice(&text[end..]);
    Some((out, format!("number at {i} ({}) set to {v}", String::from_utf8_lossy(&text[i..end]))))
}

/// A whole-file mutation, and what it did.
type Mutated = Option<(Vec<u8>, String)>;

/// The inputs one reader is fuzzed with.
struct Target {
    name: &'static str,
    seeds: Vec<Seed>,
    /// Reads the file; the result only has to be Ok or an error.
    read: fn(&Path) -> dfgpu::Result<()>,
    image: bool,
    /// What a mutation may also do, for this format.
    special: fn(&[u8], &mut Rng) -> Mutated,
    cases: usize,
}

struct Seed {
    bytes: Vec<u8>,
    fields: Vec<Field>,
    /// The file's name (its extension matters).
    file: &'static str,
}

fn no_special(_: &[u8], _: &mut Rng) -> Mutated {
    None
}

/// Case `i` of `t`: the seed, a case seed, and 1 to 3 mutations (or the format's special one).
fn case(t: &Target, i: usize) -> (u64, &Seed, Vec<u8>, Vec<String>) {
    let name = t.name.bytes().fold(0u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
    let seed = 0xF022_0000_0000_0000 ^ (name << 32) ^ i as u64;
    let mut rng = Rng::new(seed);
    let s = &t.seeds[rng.below(t.seeds.len() as u64) as usize];
    let mut b = s.bytes.clone();
    let mut what = Vec::new();
    if rng.below(4) == 0 {
        if let Some((m, d)) = (t.special)(&b, &mut rng) {
            b = m;
            what.push(d);
        }
    }
    if what.is_empty() || rng.below(2) == 0 {
        for _ in 0..1 + rng.below(3) {
            what.push(mutate(&mut b, &mut rng, &s.fields));
        }
    }
    (seed, s, b, what)
}

/// Runs every case of `t` on a worker thread; the test thread is the watchdog. Returns the number of cases.
fn run(t: Target, dir: &Path) -> usize {
    let name = t.name;
    let only = std::env::var("DFGPU_FUZZ_CASE").ok();
    let only: Option<usize> = only.as_deref().and_then(|o| o.strip_prefix(t.name)?.strip_prefix(':')?.parse().ok());
    let dir = dir.join(t.name);
    std::fs::create_dir_all(&dir).unwrap();
    // The seeds themselves read.
    for s in &t.seeds {
        let path = dir.join(s.file);
        std::fs::write(&path, &s.bytes).unwrap();
        if let Err(e) = (t.read)(&path) {
            panic!("{name}: a seed does not read: {e}");
        }
    }
    let (tx, rx) = mpsc::channel::<Result<String, String>>();
    let cases = t.cases;
    let worker = std::thread::spawn(move || {
        for i in 0..cases {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let (seed, s, bytes, what) = case(&t, i);
            let desc = format!("{} case {i} (seed {seed:#x}, on {}): {}", t.name, s.file, what.join(", then "));
            tx.send(Ok(desc.clone())).unwrap();
            let path = dir.join(s.file);
            std::fs::write(&path, &bytes).unwrap();
            let limit = bound(&bytes, t.image);
            LARGEST.store(0, Ordering::Relaxed);
            let r = std::panic::catch_unwind(|| (t.read)(&path));
            let largest = LARGEST.load(Ordering::Relaxed);
            let failure = match r {
                Err(p) => {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Some(format!("{desc}: panicked: {msg}"))
                }
                Ok(_) if largest > limit => Some(format!(
                    "{desc}: allocated {largest} bytes at once, over its bound of {limit} for a {}-byte input",
                    bytes.len()
                )),
                Ok(Err(e)) if !e.to_string().contains(&path.display().to_string()) => {
                    Some(format!("{desc}: the error does not name the file: {e}"))
                }
                Ok(r) => {
                    ACCEPTED.fetch_add(usize::from(r.is_ok()), Ordering::Relaxed);
                    None
                }
            };
            tx.send(failure.map_or(Ok(String::new()), Err)).unwrap();
        }
    });
    let mut current = String::new();
    let mut ran = 0;
    loop {
        match rx.recv_timeout(CASE_LIMIT) {
            Ok(Ok(d)) if !d.is_empty() => current = d,
            Ok(Ok(_)) => ran += 1,
            Ok(Err(failure)) => panic!("{failure}"),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("{current}: still running after {CASE_LIMIT:?} (a hang)"),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    worker.join().unwrap();
    // Both outcomes are reached: the mutations are neither all refused at the first byte nor all harmless.
    let accepted = ACCEPTED.swap(0, Ordering::Relaxed);
    eprintln!("fuzz {name}: {accepted} of {ran} read without an error");
    if only.is_none() {
        assert!(accepted > 0 && accepted < ran, "{name}: {accepted} of {ran} cases read without an error");
    }
    ran
}

fn scratch(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dfgpu-fuzz-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small image with some structure (so that the encoders use more than one code).
fn picture(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 7) as u8, ((x ^ y) * 13) as u8]))
}

fn encoded(img: &image::RgbImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A PNG's chunk lengths (big-endian u32 before each chunk type) and IHDR's width and height.
fn png_fields(b: &[u8]) -> Vec<Field> {
    let mut fields = vec![
        Field { name: "IHDR width".into(), at: 16, width: 4, big: true },
        Field { name: "IHDR height".into(), at: 20, width: 4, big: true },
    ];
    let mut at = 8;
    while at + 8 <= b.len() {
        let kind = String::from_utf8_lossy(&b[at + 4..at + 8]).into_owned();
        fields.push(Field { name: format!("{kind} chunk length"), at, width: 4, big: true });
        at += 12 + u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    }
    fields
}

/// A JPEG's segment lengths (big-endian u16 after each marker that has one) and the frame's height and width.
fn jpeg_fields(b: &[u8]) -> Vec<Field> {
    let mut fields = Vec::new();
    let mut at = 2;
    while at + 4 <= b.len() && b[at] == 0xFF {
        let m = b[at + 1];
        fields.push(Field { name: format!("marker FF{m:02X} length"), at: at + 2, width: 2, big: true });
        if matches!(m, 0xC0..=0xC2) {
            fields.push(Field { name: "frame height".into(), at: at + 5, width: 2, big: true });
            fields.push(Field { name: "frame width".into(), at: at + 7, width: 2, big: true });
        }
        if m == 0xDA {
            break;
        }
        at += 2 + u16::from_be_bytes([b[at + 2], b[at + 3]]) as usize;
    }
    fields
}

/// With a PNG chunk's CRC recomputed after a change inside it, so that the change reaches past the CRC check.
fn png_special(b: &[u8], rng: &mut Rng) -> Mutated {
    let mut out = b.to_vec();
    let mut chunks = Vec::new();
    let mut at = 8;
    while at + 12 <= b.len() {
        let len = u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if at + 12 + len > b.len() {
            break;
        }
        chunks.push((at, len));
        at += 12 + len;
    }
    let &(at, len) = chunks.get(rng.below(chunks.len().max(1) as u64) as usize)?;
    let i = at + 8 + rng.below(len.max(1) as u64) as usize;
    let v = [0u8, 0xFF, 0x7F, 0x80, rng.next_u64() as u8][rng.below(5) as usize];
    if i < at + 8 + len {
        out[i] = v;
    }
    let crc = crc32fast::hash(&out[at + 4..at + 8 + len]);
    out[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_be_bytes());
    Some((out, format!("byte {i} (in the chunk at {at}) set to {v:#04x}, its CRC recomputed")))
}

fn image_target(name: &'static str, format: image::ImageFormat, file: &'static str, cases: usize) -> Target {
    let seeds = [picture(16, 16), picture(48, 40), picture(1, 1)]
        .iter()
        .map(|img| {
            let bytes = encoded(img, format);
            let fields = if format == image::ImageFormat::Png { png_fields(&bytes) } else { jpeg_fields(&bytes) };
            Seed { bytes, fields, file }
        })
        .collect();
    fn read(p: &Path) -> dfgpu::Result<()> {
        // Both ways a file is kept (resize, and crop with its reflection), at a small model size.
        input::load(p, 16, Input::Resize)?;
        input::load(p, 16, Input::Crop).map(|_| ())
    }
    let special = if format == image::ImageFormat::Png { png_special } else { no_special };
    Target { name, seeds, read, image: true, special, cases }
}

/// A pack's trailer: its JSON with one number set to an extreme, and its checksum recomputed, so that the
/// change reaches the checks after it.
fn pack_special(b: &[u8], rng: &mut Rng) -> Mutated {
    let n = b.len();
    let tlen = u64::from_le_bytes(b[n - 16..n - 8].try_into().unwrap()) as usize;
    let start = n - 20 - tlen;
    let (trailer, what) = if rng.below(3) == 0 {
        // The geometry, consistently: `size` and `side` both set to an extreme (`side` is checked against
        // `size`, so one alone is refused early).
        let v = ["0", "4294967296", "9223372036854775807", "18446744073709551615", "6148914691236517205"]
            [rng.below(5) as usize];
        let text = String::from_utf8_lossy(&b[start..n - 20]).into_owned();
        let set = |t: &str, key: &str, v: &str| {
            let i = t.find(key)? + key.len();
            let end = i + t[i..].find(|c: char| !c.is_ascii_digit())?;
            Some(format!("{}{v}{}", &t[..i], &t[end..]))
        };
        let t = set(&set(&text, "\"size\":", v)?, "\"side\":", v)?;
        (t.into_bytes(), format!("size and side set to {v}"))
    } else {
        mutate_number(&b[start..n - 20], rng)?
    };
    let mut out = b[..start].to_vec();
    out.extend_from_slice(&trailer);
    out.extend_from_slice(&crc32fast::hash(&trailer).to_le_bytes());
    out.extend_from_slice(&(trailer.len() as u64).to_le_bytes());
    out.extend_from_slice(&b[n - 8..]);
    Some((out, format!("trailer {what}, its checksum and length recomputed")))
}

fn pack_target(dir: &Path, cases: usize) -> Target {
    let data = dir.join("set");
    for (class, k) in [("real", 0), ("fake/gan", 1), ("real", 2), ("fake/diff", 3)] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        picture(12 + k, 10 + 2 * k).save(data.join(class).join(format!("{k}.png"))).unwrap();
    }
    let ds = Dataset::open(&data).unwrap();
    let seeds = [Input::Resize, Input::Crop]
        .into_iter()
        .map(|input| {
            let out = dir.join(format!("{}.dfpack", input.name()));
            pack::pack(&ds, 8, input, &out, &mut |_, _| {}).unwrap();
            let bytes = std::fs::read(&out).unwrap();
            let n = bytes.len();
            let fields = vec![
                Field { name: "trailer length".into(), at: n - 16, width: 8, big: false },
                Field { name: "trailer checksum".into(), at: n - 20, width: 4, big: false },
            ];
            Seed { bytes, fields, file: "fuzzed.dfpack" }
        })
        .collect();
    fn read(p: &Path) -> dfgpu::Result<()> {
        let l = pack::open(p, &mut |_| {})?;
        for i in 0..l.len() {
            l.image(i)?;
        }
        pack::verify(p, &mut |_| {}).map(|_| ())
    }
    Target { name: "pack", seeds, read, image: false, special: pack_special, cases }
}

/// A checkpoint's JSON header with one number (a shape, an offset) set to an extreme; the length field
/// follows the header.
fn checkpoint_special(b: &[u8], rng: &mut Rng) -> Mutated {
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let (header, what) = mutate_number(&b[8..8 + n], rng)?;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&b[8 + n..]);
    Some((out, format!("header {what}, its length recomputed")))
}

fn checkpoint_target(dir: &Path, cases: usize) -> Target {
    let tensors = [
        Named { name: "stem.w".into(), shape: vec![2, 3, 3], data: (0..18).map(|i| i as f32 * 0.5).collect() },
        Named { name: "head.b".into(), shape: vec![1], data: vec![-1.5] },
        Named { name: "freq.stats".into(), shape: vec![4], data: vec![1.0, 2.0, 3.0, 4.0] },
    ];
    // A real configuration's metadata, so that `config_from_meta` reads it when the mutations spare it.
    let cfg = DetectorConfig { size: 16, ..DetectorConfig::new("tiny").unwrap() };
    let mut meta = checkpoint::config_meta(&cfg);
    meta.extend([("epoch", "3"), ("metrics", "{\"auc\":0.5}")].map(|(k, v)| (k.to_string(), v.to_string())));
    let path = dir.join("seed.safetensors");
    checkpoint::write(&path, &tensors, &meta).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let fields = vec![Field { name: "header length".into(), at: 0, width: 8, big: false }];
    fn read(p: &Path) -> dfgpu::Result<()> {
        let (_, meta) = checkpoint::read(p)?;
        // What `load` does next with the metadata (the rest of it needs a model and a backend).
        checkpoint::config_from_meta(&meta, p).map(|_| ())
    }
    let seeds = vec![Seed { bytes, fields, file: "fuzzed.safetensors" }];
    Target { name: "checkpoint", seeds, read, image: false, special: checkpoint_special, cases }
}

fn csv_target(dir: &Path, cases: usize) -> Target {
    // Beside the fuzzed CSV (run writes it into the reader's folder), which names them relative to itself.
    std::fs::create_dir_all(dir.join("csv")).unwrap();
    for k in ["a.png", "b b.png", "c,d.png"] {
        picture(4, 4).save(dir.join("csv").join(k)).unwrap();
    }
    let texts = [
        "path,label,group\na.png,0,\n\"b b.png\",1,gan\n\"c,d.png\",fake,\"x \"\"y\"\"\"\n",
        "\u{feff}label,group,path\nreal,,a.png\n1,diff,b b.png\n",
        "a.png,0\nb b.png,1\r\n\"c,d.png\",1,g\n",
    ];
    let seeds = texts.iter().map(|t| Seed { bytes: t.as_bytes().to_vec(), fields: Vec::new(), file: "fuzzed.csv" });
    fn read(p: &Path) -> dfgpu::Result<()> {
        Dataset::open(p).map(|_| ())
    }
    Target { name: "csv", seeds: seeds.collect(), read, image: false, special: no_special, cases }
}

/// Cases per reader: about 2 s each in a debug build on 2 cores, 10 s in all; DFGPU_FUZZ_SCALE multiplies them (a longer
/// run by hand: DFGPU_FUZZ_SCALE=20).
fn cases(n: usize) -> usize {
    let scale: f64 = std::env::var("DFGPU_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    ((n as f64 * scale) as usize).max(1)
}

fn timed(t: Target, dir: &Path) -> usize {
    let start = Instant::now();
    let name = t.name;
    let n = run(t, dir);
    eprintln!("fuzz {name}: {n} cases in {:.1} s", start.elapsed().as_secs_f64());
    n
}

/// One test, the readers one after another: the allocation counter is the whole process's.
#[test]
fn readers_survive_mutated_inputs() {
    let start = Instant::now();
    let dir = scratch("all");
    let mut total = 0;
    for t in [
        image_target("png", image::ImageFormat::Png, "fuzzed.png", cases(8000)),
        image_target("jpeg", image::ImageFormat::Jpeg, "fuzzed.jpg", cases(4000)),
        pack_target(&dir, cases(6000)),
        checkpoint_target(&dir, cases(8000)),
        csv_target(&dir, cases(8000)),
    ] {
        total += timed(t, &dir);
    }
    eprintln!("fuzz: {total} cases in {:.1} s", start.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&dir);
}
