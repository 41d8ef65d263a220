//! PNG figures with no plotting dependency: a canvas with lines, rectangles and a 5 x 7 bitmap font, and the
//! two chart kinds dfgpu draws (line charts: learning curves, ROC, spectra profiles; horizontal bar charts:
//! gradient reports, ablations). Text is upper case: the font has capitals, digits and punctuation.

use crate::error::{Error, Result};
use crate::files::write_atomic;
use std::path::Path;

pub type Rgb = [u8; 3];
pub const WHITE: Rgb = [255, 255, 255];
pub const BLACK: Rgb = [0, 0, 0];
pub const GREY: Rgb = [150, 150, 150];
pub const LIGHT: Rgb = [225, 225, 225];
pub const BLUE: Rgb = [30, 90, 200];
pub const RED: Rgb = [210, 40, 30];
pub const GREEN: Rgb = [30, 150, 60];
pub const ORANGE: Rgb = [230, 130, 20];

/// Glyph rows, 5 bits each (the high bit is the left column).
const FONT: [(char, [u8; 7]); 57] = [
    ('0', [0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110]),
    ('1', [0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
    ('2', [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111]),
    ('3', [0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110]),
    ('4', [0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010]),
    ('5', [0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110]),
    ('6', [0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110]),
    ('7', [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000]),
    ('8', [0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110]),
    ('9', [0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100]),
    ('A', [0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001]),
    ('B', [0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110]),
    ('C', [0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110]),
    ('D', [0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100]),
    ('E', [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111]),
    ('F', [0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000]),
    ('G', [0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111]),
    ('H', [0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001]),
    ('I', [0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110]),
    ('J', [0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100]),
    ('K', [0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001]),
    ('L', [0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111]),
    ('M', [0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001]),
    ('N', [0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001]),
    ('O', [0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110]),
    ('P', [0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000]),
    ('Q', [0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101]),
    ('R', [0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001]),
    ('S', [0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110]),
    ('T', [0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100]),
    ('U', [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110]),
    ('V', [0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100]),
    ('W', [0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010]),
    ('X', [0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001]),
    ('Y', [0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100]),
    ('Z', [0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111]),
    (' ', [0; 7]),
    ('.', [0, 0, 0, 0, 0, 0b01100, 0b01100]),
    (',', [0, 0, 0, 0, 0b01100, 0b00100, 0b01000]),
    ('-', [0, 0, 0, 0b11111, 0, 0, 0]),
    ('+', [0, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0]),
    ('_', [0, 0, 0, 0, 0, 0, 0b11111]),
    (':', [0, 0b01100, 0b01100, 0, 0b01100, 0b01100, 0]),
    (';', [0, 0b01100, 0b01100, 0, 0b01100, 0b00100, 0b01000]),
    ('/', [0, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0]),
    ('(', [0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010]),
    (')', [0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000]),
    ('%', [0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011]),
    ('=', [0, 0, 0b11111, 0, 0b11111, 0, 0]),
    ('<', [0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010]),
    ('>', [0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000]),
    ('[', [0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110]),
    (']', [0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110]),
    ('\'', [0b01100, 0b00100, 0b01000, 0, 0, 0, 0]),
    ('*', [0, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0]),
    ('#', [0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010]),
    ('?', [0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0, 0b00100]),
];

/// Pixels per character along a line of text (5 wide and a gap).
pub const CHAR_W: usize = 6;
pub const CHAR_H: usize = 7;

fn glyph(c: char) -> [u8; 7] {
    let c = c.to_ascii_uppercase();
    FONT.iter().find(|(g, _)| *g == c).or_else(|| FONT.iter().find(|(g, _)| *g == '?')).unwrap().1
}

pub struct Canvas {
    pub w: usize,
    pub h: usize,
    px: Vec<Rgb>,
}

impl Canvas {
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas { w, h, px: vec![WHITE; w * h] }
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        self.px[y * self.w + x]
    }

    /// Sets a pixel; outside the canvas, nothing.
    pub fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            self.px[y as usize * self.w + x as usize] = c;
        }
    }

    pub fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    /// A line `width` pixels thick (Bresenham, stamped with a square).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), width: i64, c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.rect(x - (width - 1) / 2, y - (width - 1) / 2, width, width, c);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text with its top-left corner at (x, y), each font pixel `scale` x `scale`.
    pub fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        for (i, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            let x0 = x + i as i64 * CHAR_W as i64 * scale;
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        self.rect(x0 + col * scale, y + row as i64 * scale, scale, scale, c);
                    }
                }
            }
        }
    }

    /// Text ending at x.
    pub fn text_right(&mut self, x: i64, y: i64, s: &str, c: Rgb) {
        self.text(x - (s.chars().count() * CHAR_W) as i64, y, s, 1, c);
    }

    /// Writes the chart as a PNG, whole or not at all (a run killed while drawing leaves the last chart).
    pub fn save(&self, path: &Path) -> Result<()> {
        let raw: Vec<u8> = self.px.iter().flatten().copied().collect();
        let mut png = Vec::new();
        image::RgbImage::from_raw(self.w as u32, self.h as u32, raw)
            .expect("w x h pixels")
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Error::Invalid(format!("{}: could not encode the PNG: {e}", path.display())))?;
        write_atomic(path, &png)
    }
}

/// A short tick label: 0.25, 12, 1e-07.
fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e4 || v.abs() < 1e-2 {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// About five round tick values covering [lo, hi].
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    (first..).map(|k| k as f64 * step).take_while(|v| *v <= hi + step * 1e-9).collect()
}

/// One line of a line chart.
pub struct Series {
    pub name: String,
    pub color: Rgb,
    pub points: Vec<(f64, f64)>,
    /// Dashed (a reference such as the ROC's chance diagonal).
    pub dashed: bool,
}

impl Series {
    pub fn new(name: &str, color: Rgb, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), color, points, dashed: false }
    }
}

/// Where a chart goes on the canvas and what its axes say.
pub struct Frame {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
    pub title: String,
    pub x_label: String,
}

const MARGIN_L: i64 = 52;
const MARGIN_B: i64 = 28;
const MARGIN_T: i64 = 20;

/// A line chart inside `f`, with axes over `xr` and `yr` (None: the data's range), ticks, and a legend.
pub fn line_chart(c: &mut Canvas, f: &Frame, series: &[Series], xr: Option<(f64, f64)>, yr: Option<(f64, f64)>) {
    let all = || series.iter().flat_map(|s| s.points.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let range = |get: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = all().map(get).fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            (0.0, 1.0)
        } else if hi - lo < 1e-12 {
            (lo - 0.5, hi + 0.5)
        } else {
            let pad = 0.05 * (hi - lo);
            (lo - pad, hi + pad)
        }
    };
    let (x0, x1) = xr.unwrap_or_else(|| range(|p| p.0));
    let (y0, y1) = yr.unwrap_or_else(|| range(|p| p.1));
    let (px, py, pw, ph) = (f.x + MARGIN_L, f.y + MARGIN_T, f.w - MARGIN_L - 10, f.h - MARGIN_T - MARGIN_B);
    let to_x = |v: f64| px + ((v - x0) / (x1 - x0) * pw as f64).round() as i64;
    let to_y = |v: f64| py + ph - ((v - y0) / (y1 - y0) * ph as f64).round() as i64;
    c.text(f.x + 4, f.y + 4, &f.title, 1, BLACK);
    for t in ticks(y0, y1) {
        c.line((px, to_y(t)), (px + pw, to_y(t)), 1, LIGHT);
        c.text_right(px - 4, to_y(t) - 3, &tick_label(t), BLACK);
    }
    for t in ticks(x0, x1) {
        c.line((to_x(t), py + ph), (to_x(t), py + ph + 3), 1, BLACK);
        let l = tick_label(t);
        c.text(to_x(t) - (l.len() * CHAR_W / 2) as i64, py + ph + 6, &l, 1, BLACK);
    }
    c.text(px + pw - (f.x_label.len() * CHAR_W) as i64, py + ph + 17, &f.x_label, 1, GREY);
    c.line((px, py), (px, py + ph), 1, BLACK);
    c.line((px, py + ph), (px + pw, py + ph), 1, BLACK);
    for s in series {
        let pts: Vec<(i64, i64)> =
            s.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).map(|p| (to_x(p.0), to_y(p.1))).collect();
        for (k, w) in pts.windows(2).enumerate() {
            if !s.dashed || k % 2 == 0 {
                c.line(w[0], w[1], 2, s.color);
            }
        }
        if pts.len() == 1 || (pts.len() < 30 && !s.dashed) {
            pts.iter().for_each(|&(x, y)| c.rect(x - 2, y - 2, 5, 5, s.color));
        }
    }
    // The legend goes on the title's line, after it: inside the plot it would hide the lines it names.
    let mut x = f.x + 4 + ((f.title.chars().count() + 2) * CHAR_W) as i64;
    for s in series.iter().filter(|s| !s.name.is_empty()) {
        c.rect(x, f.y + 6, 12, 3, s.color);
        c.text(x + 16, f.y + 4, &s.name, 1, s.color);
        x += 16 + ((s.name.chars().count() + 2) * CHAR_W) as i64;
    }
}

/// A horizontal bar chart: one row per label, bars from the axis' low end, on a linear or log10 scale over
/// [lo, hi]; `marks` are vertical reference lines (thresholds); `ranges`, per row and bar, a (low, high) span
/// drawn across the bar as a whisker (none for a row or bar it does not reach, or a span that is not finite).
pub struct Bars<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    pub marks: &'a [(f64, Rgb)],
    pub ranges: &'a [Vec<(f64, f64)>],
}

const ROW_H: i64 = 12;

/// A bar chart's row: label, label colour, and the bars as (value, colour).
pub type BarRow = (String, Rgb, Vec<(f64, Rgb)>);

impl Bars<'_> {
    /// The canvas height for `rows` rows of `per_row` bars.
    pub fn height(rows: usize, per_row: usize) -> usize {
        (MARGIN_T + 8 + rows as i64 * (ROW_H * per_row as i64 + 4) + MARGIN_B + 6) as usize
    }

    /// Draws rows of (label, its colour, bars (value, colour)) at x, with `label_w` pixels for the labels. A
    /// value under the scale draws no bar: the label's colour is what shows it.
    pub fn draw(&self, c: &mut Canvas, x: i64, w: i64, label_w: i64, rows: &[BarRow]) {
        let per_row = rows.iter().map(|r| r.2.len()).max().unwrap_or(1) as i64;
        let (px, py, pw) = (x + label_w, MARGIN_T + 8, w - label_w - 16);
        let ph = rows.len() as i64 * (ROW_H * per_row + 4);
        let tf = |v: f64| if self.log { v.max(1e-300).log10() } else { v };
        let (a, b) = (tf(self.lo), tf(self.hi));
        let to_x = |v: f64| px + (((tf(v) - a) / (b - a)).clamp(0.0, 1.0) * pw as f64).round() as i64;
        c.text(x + 4, 4, self.title, 1, BLACK);
        let tick_values: Vec<f64> = if self.log {
            (a.ceil() as i64..=b.floor() as i64)
                .step_by(((b - a) / 6.0).ceil().max(1.0) as usize)
                .map(|e| 10f64.powi(e as i32))
                .collect()
        } else {
            ticks(self.lo, self.hi)
        };
        for t in tick_values {
            c.line((to_x(t), py), (to_x(t), py + ph), 1, LIGHT);
            let l = tick_label(t);
            c.text(to_x(t) - (l.len() * CHAR_W / 2) as i64, py + ph + 5, &l, 1, BLACK);
        }
        c.text(px + pw - (self.x_label.len() * CHAR_W) as i64, py + ph + 16, self.x_label, 1, GREY);
        for (i, (label, label_color, bars)) in rows.iter().enumerate() {
            let y = py + i as i64 * (ROW_H * per_row + 4) + 2;
            let max_chars = ((label_w - 8) / CHAR_W as i64).max(1) as usize;
            let shown: String = if label.chars().count() > max_chars {
                let skip = label.chars().count() - max_chars + 1;
                format!("*{}", label.chars().skip(skip).collect::<String>())
            } else {
                label.clone()
            };
            c.text_right(px - 6, y + (ROW_H * per_row - CHAR_H as i64) / 2, &shown, *label_color);
            // A NaN (a figure a run could not give) draws no bar; an infinity runs to the edge.
            for (k, &(v, col)) in bars.iter().enumerate().filter(|(_, b)| !b.0.is_nan()) {
                let end = if v.is_finite() { to_x(v) } else { px + pw };
                c.rect(px, y + k as i64 * ROW_H, (end - px).max(1), ROW_H - 2, col);
            }
            let spans = self.ranges.get(i).into_iter().flatten().enumerate();
            for (k, &(lo, hi)) in spans.filter(|(k, s)| *k < bars.len() && s.0.is_finite() && s.1.is_finite()) {
                let (top, mid) = (y + k as i64 * ROW_H + 2, y + k as i64 * ROW_H + (ROW_H - 2) / 2);
                c.line((to_x(lo), mid), (to_x(hi), mid), 1, BLACK);
                for end in [to_x(lo), to_x(hi)] {
                    c.line((end, top), (end, top + ROW_H - 6), 1, BLACK);
                }
            }
        }
        for &(v, col) in self.marks {
            c.line((to_x(v), py - 4), (to_x(v), py + ph), 1, col);
        }
        c.line((px, py - 2), (px, py + ph), 1, BLACK);
    }
}
