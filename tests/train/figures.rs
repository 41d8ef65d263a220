//! The figures: the bitmap font and the charts draw what they are given.

use dfgpu::plot::{ticks, Canvas, BLACK, RED, WHITE};
use dfgpu::train::diagnostics::GradRow;
use dfgpu::train::figures;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("dfgpu-figures-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn text_draws_the_glyphs() {
    let mut c = Canvas::new(20, 9);
    c.text(1, 1, "1-", 1, BLACK);
    // '1': the stem in column 2 on all seven rows, the serif at row 1, the base in columns 1 to 3.
    let ink = |x: usize, y: usize| c.get(x, y) == BLACK;
    assert!((1..8).all(|y| ink(3, y)));
    assert!(ink(2, 2) && !ink(1, 2) && !ink(4, 2));
    assert!(ink(2, 7) && ink(4, 7) && !ink(1, 7) && !ink(5, 7));
    // '-' (6 pixels on): the middle row, columns 7 to 11.
    assert!((7..12).all(|x| ink(x, 4)) && !ink(12, 4) && (7..12).all(|x| !ink(x, 3)));
    assert_eq!((0..20).flat_map(|x| (0..9).map(move |y| (x, y))).filter(|&(x, y)| ink(x, y)).count(), 10 + 5);
}

#[test]
fn ticks_are_round_and_cover_the_range() {
    assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
    let t = ticks(0.13, 0.87);
    assert!(t.len() >= 3 && t[0] >= 0.13 && *t.last().unwrap() <= 0.87, "{t:?}");
    assert_eq!(ticks(-3.0, 12.0), vec![-2.5, 0.0, 2.5, 5.0, 7.5, 10.0]);
}

fn row(name: &str, grad: f64) -> GradRow {
    GradRow { name: name.into(), grad_norm: grad, weight_norm: 1.0, update_ratio: 1e-3, decays: true, flag: None }
}

fn red_pixels(path: &std::path::Path) -> usize {
    image::open(path).unwrap().to_rgb8().pixels().filter(|p| p.0 == RED).count()
}

#[test]
fn the_gradient_chart_marks_flagged_blocks_in_red() {
    let healthy = vec![row("spatial.conv_stem.weight", 0.5), row("freq.stages.0.conv.weight", 0.2)];
    let mut sick = healthy.clone();
    sick[1].grad_norm = 1e-12;
    let (a, b) = (tmp("healthy.png"), tmp("sick.png"));
    figures::grad_report(&healthy, "HEALTHY", &a).unwrap();
    figures::grad_report(&sick, "SICK", &b).unwrap();
    // Flags are judged from the norms. Only the threshold lines are red in the healthy chart; the sick one adds a red bar.
    assert!(red_pixels(&b) > red_pixels(&a) + 20, "{} vs {}", red_pixels(&b), red_pixels(&a));
}

fn black_pixels(path: &std::path::Path) -> usize {
    image::open(path).unwrap().to_rgb8().pixels().filter(|p| p.0 == BLACK).count()
}

/// The seeds' figure draws each figure's lowest-to-highest span as a whisker across its bar: spans of 0.6 of
/// the axis (about 310 pixels each) add that much ink to the same means with no spread.
#[test]
fn the_seeds_figure_draws_the_spread() {
    use dfgpu::train::holdout::Spread;
    let spread = |lo: f64, hi: f64| Spread {
        group: "periodic".into(),
        auc: [0.6, lo, hi],
        baseline_auc: [0.6, lo, hi],
        peak_auc: [0.6, lo, hi],
        either_auc: [0.6, lo, hi],
    };
    let (wide, none) = (tmp("seeds-wide.png"), tmp("seeds-none.png"));
    figures::holdout_seeds(&[spread(0.3, 0.9)], 5, &wide).unwrap();
    figures::holdout_seeds(&[spread(0.6, 0.6)], 5, &none).unwrap();
    let added = black_pixels(&wide) as i64 - black_pixels(&none) as i64;
    assert!((3 * 280..3 * 340).contains(&added), "the whiskers added {added} black pixels");
}

#[test]
fn curves_and_roc_are_written() {
    let scores = [0.9f32, 0.8, 0.3, 0.6, 0.1, 0.7];
    let labels = [1u8, 1, 0, 1, 0, 0];
    let jsonl: String = (1..=3)
        .map(|e| {
            format!(
                "{{\"epoch\":{e},\"train_loss\":{},\"val_auc\":0.{e},\"val_ap\":null,\"val_balanced_acc\":0.5}}\n",
                1.0 / e as f64
            )
        })
        .collect();
    let (c, r) = (tmp("curves.png"), tmp("roc.png"));
    let log = std::path::Path::new("metrics.jsonl");
    let lines = dfgpu::train::runlog::parse(&jsonl, log).unwrap();
    // A line that is not an epoch's: a damaged log, at that line.
    let e = dfgpu::train::runlog::parse(&format!("{jsonl}{{\"epoch\":\n"), log).unwrap_err();
    assert!(matches!(e, dfgpu::Error::Corrupt { line: Some(4), .. }), "{e:?}");
    assert!(e.to_string().starts_with("metrics.jsonl:4: not a metrics line ("), "{e}");
    figures::curves(&lines, &c).unwrap();
    figures::roc_curve(&scores, &labels, "ROC", &r).unwrap();
    for (p, size) in [(&c, (960, 340)), (&r, (440, 420))] {
        let img = image::open(p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), size);
        let inked = img.pixels().filter(|p| p.0 != WHITE).count();
        assert!(inked > 1000, "{}: {inked} pixels drawn", p.display());
    }
}
