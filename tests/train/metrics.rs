//! Metrics against hand-computed values.

use dfgpu::backend::loss::Confusion;
use dfgpu::train::metrics::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

// scikit-learn's documentation example: roc_auc_score = 0.75, average_precision_score = 0.8333.
const S: [f32; 4] = [0.1, 0.4, 0.35, 0.8];
const Y: [u8; 4] = [0, 0, 1, 1];

#[test]
fn auc_and_ap_match_hand_computed_values() {
    assert!(close(auc(&S, &Y).unwrap(), 0.75));
    assert!(close(average_precision(&S, &Y).unwrap(), 0.5 + 0.5 * 2.0 / 3.0));
    // Perfect separation, and perfect inversion.
    assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]), Some(1.0));
    assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &[0, 0, 1, 1]), Some(0.0));
    assert_eq!(average_precision(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]), Some(1.0));
}

#[test]
fn ties_count_one_half() {
    // Fake 0.6 against real 0.6 is a tie: (1 + 0.5 + 2) / 4 pairs.
    assert!(close(auc(&[0.2, 0.6, 0.6, 0.9], &[0, 0, 1, 1]).unwrap(), 0.875));
    // All scores equal: chance, and precision is the share of fakes.
    assert!(close(auc(&[0.5; 4], &[0, 1, 0, 1]).unwrap(), 0.5));
    assert!(close(average_precision(&[0.5; 4], &[0, 1, 1, 1]).unwrap(), 0.75));
}

#[test]
fn eer_interpolates_where_the_error_rates_cross() {
    let (e, t) = eer(&S, &Y).unwrap();
    assert!(close(e, 0.5) && t == 0.4, "{e} {t}");
    assert_eq!(eer(&[0.1, 0.2, 0.8, 0.9], &[0, 0, 1, 1]).unwrap().0, 0.0);
    // Crossing between two ROC points: (0, 1/3) then (1/2, 1): fpr - fnr goes -2/3 -> 1/2, t = 4/7, eer = 2/7.
    let (e, _) = eer(&[0.9, 0.5, 0.5, 0.5, 0.1], &[1, 1, 1, 0, 0]).unwrap();
    assert!(close(e, 2.0 / 7.0), "{e}");
}

#[test]
fn one_class_has_no_ranking_metrics() {
    assert_eq!(auc(&[0.1, 0.9], &[1, 1]), None);
    assert_eq!(eer(&[0.1, 0.9], &[0, 0]), None);
    let r = Report::new(&[0.1, 0.9], &[1, 1]);
    assert!(r.to_string().contains("AUC n/a (one class)"), "{r}");
}

#[test]
fn all_fake_scores_83_percent_accuracy_and_one_half_balanced() {
    let labels = [0u8, 1, 1, 1, 1, 1];
    let c = confusion_at(&[0.9; 6], &labels, 0.5);
    assert_eq!(c, Confusion { tp: 5, fp: 1, tn: 0, fn_: 0 });
    assert!(close(c.accuracy(), 5.0 / 6.0));
    assert!(close(c.balanced_accuracy(), 0.5));
    assert!(close(c.f1_fake(), 10.0 / 11.0));
    assert!(close(c.f1_real(), 0.0));
}

#[test]
fn best_balanced_threshold_and_report() {
    // Balanced accuracy 0.75 at 0.8 and at 0.35; the lower of equal thresholds is taken.
    let (t, b) = best_balanced_threshold(&S, &Y).unwrap();
    assert!(t == 0.35 && close(b, 0.75), "{t} {b}");
    let r = Report::new(&S, &Y);
    assert_eq!((r.n_real, r.n_fake), (2, 2));
    assert_eq!(r.at_half, Confusion { tp: 1, fp: 0, tn: 2, fn_: 1 });
    assert_eq!(r.best.unwrap().1, Confusion { tp: 2, fp: 1, tn: 1, fn_: 0 });
    let text = r.to_string();
    assert!(text.contains("AUC 0.7500, AP 0.8333, EER 0.5000"), "{text}");
    assert!(text.contains("at 0.3500 (best balanced accuracy): balanced acc 0.7500"), "{text}");
}

#[test]
fn the_report_as_json_holds_the_same_numbers() {
    use serde_json::Value as Json;
    // Fakes 0.9, 0.8, 0.4; reals 0.7, 0.2: 5 of the 6 pairs ranked right, AUC 5/6.
    let r = Report::new(&[0.9, 0.8, 0.4, 0.7, 0.2], &[1, 1, 1, 0, 0]);
    let j = serde_json::to_value(&r).unwrap();
    let num = |v: Option<&Json>| v.and_then(Json::as_f64).unwrap_or_else(|| panic!("not a number: {v:?}"));
    // The JSON has 6 decimals.
    let near = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(near(num(j.get("auc")), 5.0 / 6.0));
    assert_eq!((num(j.get("n_real")), num(j.get("n_fake"))), (2.0, 3.0));
    let half = j.get("at_0.5").unwrap();
    // At 0.5: fakes 0.9 and 0.8 called fake, 0.4 real; real 0.7 called fake.
    assert_eq!(["tp", "fp", "tn", "fn"].map(|k| num(half.get(k))), [2.0, 1.0, 1.0, 1.0]);
    assert!(near(num(half.get("balanced_accuracy")), (2.0 / 3.0 + 0.5) / 2.0));
    assert!(j.get("best").and_then(|b| b.get("threshold")).is_some_and(Json::is_f64));
    let one_class = serde_json::to_value(Report::new(&[0.3, 0.6], &[1, 1])).unwrap();
    assert_eq!(one_class.get("auc"), Some(&Json::Null));
}
