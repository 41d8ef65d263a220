use dfgpu::data::loaded::{Loaded, Pixels};
use dfgpu::train::holdout::{folds, mean_and_worst, spread_tables, spreads, tables, weakest, Row};

/// 10 reals and 6 fakes: two in group a, three in b, one without a group.
fn set() -> Loaded {
    let labels: Vec<u8> = [0u8; 10].into_iter().chain([1u8; 6]).collect();
    let mut groups = vec![None; 10];
    groups.extend(["a", "b", "a", "b", "b"].map(|g| Some(g.to_string())));
    groups.push(None);
    Loaded::new(2, Pixels::Owned(vec![0; labels.len() * 2 * 2 * 3]), labels, groups)
}

#[test]
fn no_image_a_run_is_tested_on_is_trained_or_validated_on() {
    let data = set();
    let f = folds(&data, 0.3, 7).unwrap();
    assert_eq!(f.iter().map(|f| f.group.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let reals_of = |idx: &[usize]| idx.iter().copied().filter(|&i| data.labels[i] == 0).collect::<Vec<_>>();
    // The same three test reals (30% of 10) in every run.
    let test_reals = reals_of(&f[0].test);
    assert_eq!(test_reals.len(), 3);
    for fold in &f {
        assert_eq!(reals_of(&fold.test), test_reals);
        assert!(fold.pool.iter().all(|i| !fold.test.contains(i)), "{fold:?}");
        let fakes = |idx: &[usize]| idx.iter().filter(|&&i| data.labels[i] == 1).copied().collect::<Vec<_>>();
        // Every fake of the held-out group is tested on; the others (the ungrouped one too) are trained on.
        let held: Vec<usize> = (0..16).filter(|&i| data.groups[i].as_deref() == Some(&fold.group)).collect();
        assert_eq!(fakes(&fold.test), held);
        let mut rest: Vec<usize> = (10..16).filter(|i| !held.contains(i)).collect();
        let mut pool_fakes = fakes(&fold.pool);
        rest.sort();
        pool_fakes.sort();
        assert_eq!(pool_fakes, rest);
        assert_eq!(fold.pool.len() + test_reals.len(), 10 + rest.len());
    }
    // Another seed keeps other reals apart.
    let other = folds(&data, 0.3, 8).unwrap();
    assert_ne!(reals_of(&other[0].test), test_reals);
}

#[test]
fn holdout_refuses_sets_it_cannot_split() {
    let data = set();
    let one_group = data.subset(&(0..11).collect::<Vec<_>>()); // the reals and one fake of group a
    let e = folds(&one_group, 0.2, 0).unwrap_err().to_string();
    assert!(e.contains("at least two groups") && e.contains("only 'a'"), "{e}");
    let few_reals = data.subset(&(8..16).collect::<Vec<_>>());
    let e = folds(&few_reals, 0.2, 0).unwrap_err().to_string();
    assert!(e.contains("at least 3 real images") && e.contains("has 2"), "{e}");
    let e = folds(&data, 1.0, 0).unwrap_err().to_string();
    assert!(e.contains("--test-reals 1"), "{e}");
}

/// A held-out row with the given AUCs (and 3 real, 5 fake test images, the other figures fixed; the peak test's
/// AUC is 1 - the baseline's, the joined one's the mean of the detector's and the baseline's).
fn row(group: &str, auc: f64, weakest_seen: Option<(String, f64)>, baseline_auc: f64) -> Row {
    Row {
        group: group.into(),
        val_auc: 0.99,
        auc,
        ap: 0.9,
        balanced_acc: 0.8,
        threshold: 0.5,
        n_real: 3,
        n_fake: 5,
        weakest_seen,
        baseline_auc,
        peak_auc: 1.0 - baseline_auc,
        either_auc: (auc + baseline_auc) / 2.0,
    }
}

#[test]
fn the_table_gives_the_mean_and_the_worst_auc() {
    let rows = [row("a", 0.9, Some(("b\"x".into(), 0.5)), 0.7), row("b\"x", 0.6, None, 0.95)];
    let (mean, worst) = mean_and_worst(&rows, |r| r.auc);
    assert!((mean - 0.75).abs() < 1e-12 && worst == 0.6);
    let (mean, worst) = mean_and_worst(&rows, |r| r.baseline_auc);
    assert!((mean - 0.825).abs() < 1e-12 && worst == 0.7);
    let (md, csv) = tables(&rows);
    let md_lines: Vec<&str> = md.lines().collect();
    assert!(md_lines[..4].iter().all(|l| l.matches('|').count() == 13), "{md}");
    assert!(md.contains("| a | 3 | 5 | 0.9900 | b\"x 0.5000 | 0.9000 | 0.7000 | 0.3000 | 0.8000 | 0.9000 |"), "{md}");
    assert!(
        md.contains("| b\"x | 3 | 5 | 0.9900 | - | 0.6000 | 0.9500 | 0.0500 | 0.7750 |")
            && md.contains("held-out AUC: mean 0.7500, worst 0.6000"),
        "{md}"
    );
    assert!(md.contains("spectral baseline (Durall et al. 2020): mean 0.8250, worst 0.7000"), "{md}");
    assert!(md.contains("spectral peak test: mean 0.1750, worst 0.0500"), "{md}");
    assert!(md.contains("detector or peak test: mean 0.7875, worst 0.7750"), "{md}");
    assert!(md.contains("spectral peak test: fitted on the training reals alone"), "{md}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "group,n_real,n_fake,val_auc,auc,ap,balanced_acc,threshold,weakest_seen,weakest_seen_auc,baseline_auc,\
         peak_auc,either_auc"
    );
    // A quote in a group name is doubled, and the field quoted, as RFC 4180 says.
    assert_eq!(
        lines[1],
        "a,3,5,0.990000,0.900000,0.900000,0.800000,0.500000,\"b\"\"x\",0.500000,0.700000,0.300000,0.800000"
    );
    assert_eq!(lines[2], "\"b\"\"x\",3,5,0.990000,0.600000,0.900000,0.800000,0.500000,,,0.950000,0.050000,0.775000");
    let back: Vec<csv::StringRecord> = csv::Reader::from_reader(csv.as_bytes()).records().map(Result::unwrap).collect();
    assert_eq!((&back[0][8], &back[1][0]), ("b\"x", "b\"x"), "a CSV reader gets the names back");
}

#[test]
fn the_spread_over_seeds_is_each_groups_mean_lowest_and_highest() {
    let runs = vec![
        vec![row("a", 0.9, None, 0.6), row("b", 0.5, None, 0.8)],
        vec![row("a", 0.7, None, 0.7), row("b", 0.6, None, 0.8)],
        vec![row("a", 0.8, None, 0.8), row("b", 0.4, None, 0.9)],
    ];
    let s = spreads(&runs).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].group.as_str(), s[1].group.as_str()), ("a", "b"));
    let close = |got: [f64; 3], want: [f64; 3]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12);
    assert!(close(s[0].auc, [0.8, 0.7, 0.9]) && close(s[0].baseline_auc, [0.7, 0.6, 0.8]), "{s:?}");
    assert!(close(s[1].auc, [0.5, 0.4, 0.6]) && close(s[1].baseline_auc, [(0.8 + 0.8 + 0.9) / 3.0, 0.8, 0.9]));
    let (md, csv) = spread_tables(&s, &runs);
    assert!(close(s[0].peak_auc, [0.3, 0.2, 0.4]) && close(s[0].either_auc, [0.75, 0.7, 0.8]), "{s:?}");
    let a = "| a | 0.8000 | 0.7000 | 0.9000 | 0.7000 | 0.6000 | 0.8000 | 0.3000 | 0.2000 | 0.4000 | 0.7500 | 0.7000 | \
             0.8000 |";
    assert!(md.contains("AUC mean over 3 seeds") && md.contains(a), "{md}");
    // The table's rule has as many cells as its header.
    let cells = |l: &str| l.matches('|').count();
    let md_lines: Vec<&str> = md.lines().collect();
    assert!(cells(md_lines[0]) == cells(md_lines[1]) && cells(md_lines[1]) == cells(md_lines[2]), "{md}");
    // The mean of the groups' means, and the worst group's mean; each seed's mean beside the baseline's.
    assert!(md.contains("means over the seeds: mean 0.6500, worst 0.5000"), "{md}");
    assert!(md.contains("spectral peak test: mean 0.2333, worst 0.1667"), "{md}");
    assert!(md.contains("0.7000 (0.7000), 0.6500 (0.7500), 0.6000 (0.8500)"), "{md}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "group,seeds,auc_mean,auc_min,auc_max,baseline_mean,baseline_min,baseline_max,peak_mean,peak_min,peak_max,\
         either_mean,either_min,either_max"
    );
    assert_eq!(
        lines[1],
        "a,3,0.800000,0.700000,0.900000,0.700000,0.600000,0.800000,0.300000,0.200000,0.400000,0.750000,0.700000,\
         0.800000"
    );
    assert!(md.contains("detector or peak test: mean 0.7083, worst 0.6667"), "{md}");
    // Runs that held out other groups do not mix.
    let e = spreads(&[runs[0].clone(), vec![row("a", 0.9, None, 0.6)]]).unwrap_err().to_string();
    assert!(e.contains("runs of other groups"), "{e}");
    assert!(spreads(&[]).is_err());
    // A run that could not give a figure (NaN): no spread of it, not one of the other runs.
    let mut partial = runs.clone();
    partial[1][0].either_auc = f64::NAN;
    let s = spreads(&partial).unwrap();
    assert!(s[0].either_auc.iter().all(|v| v.is_nan()) && close(s[0].auc, [0.8, 0.7, 0.9]), "{s:?}");
    assert!(spread_tables(&s, &partial).0.contains("detector or peak test: mean NaN, worst NaN"));
}

#[test]
fn the_weakest_group_is_the_lowest_auc_the_first_of_equals() {
    let g = |n: &str, a: f64| (n.to_string(), a);
    assert_eq!(weakest(vec![g("a", 0.9), g("b", 0.4), g("c", 0.4), g("d", 1.0)]), Some(g("b", 0.4)));
    assert_eq!(weakest(vec![g("a", 0.2)]), Some(g("a", 0.2)));
    assert_eq!(weakest(vec![]), None);
}
