//! The dfgpu command line: parse (args.rs), then call the library.

mod args;

use args::*;
use clap::FromArgMatches;
use dfgpu::backend::fft::Magnitude;
use dfgpu::backend::head::Branches;
use dfgpu::data::input::Input;
use dfgpu::error::Choice;
use dfgpu::train::config::{ExistingRun, Loss, TrainConfig, MODEL_FLAGS};
use dfgpu::train::runlog::rounded;
use std::path::Path;
use std::process::ExitCode;

/// `given` says whether a flag (by its clap id) was on the command line.
fn train(a: TrainArgs, given: &dyn Fn(&str) -> bool) -> dfgpu::Result<()> {
    use dfgpu::train::trainer;
    let (be, line) = a.dev.select()?;
    println!("{line}");
    let mut cfg = a.run.config(be.as_ref())?;
    (cfg.data, cfg.val) = (a.data, a.val);
    cfg.existing = match (&a.out, a.overwrite) {
        (_, true) => ExistingRun::Overwrite,
        (Some(_), false) => ExistingRun::Refuse,
        (None, false) => ExistingRun::MoveAside,
    };
    // A resumed run goes on in its own folder unless told otherwise.
    if let Some(out) = a.out.or_else(|| a.resume.as_ref().map(|r| r.parent().unwrap_or(Path::new("")).to_path_buf())) {
        cfg.out = out;
    }
    (cfg.resume, cfg.pretrained) = (a.resume, a.pretrained);
    cfg.model_flags = MODEL_FLAGS.iter().map(|(f, _)| *f).filter(|f| given(&f[2..].replace('-', "_"))).collect();
    let summary = trainer::train(be.as_ref(), &cfg, &mut |l| println!("{l}"))?;
    if let Some(last) = summary.epochs.last() {
        println!("final validation ({} epochs on {}):\n{}", last.epoch, summary.device, last.report);
    }
    Ok(())
}

fn holdout(
    (be, line): Selected,
    data: Option<std::path::PathBuf>,
    out: &std::path::Path,
    (test_reals, seeds): (f64, u32),
    run: &RunArgs,
) -> dfgpu::Result<()> {
    use dfgpu::train::holdout;
    println!("{line}");
    let cfg = run.config(be.as_ref())?;
    let log = &mut |l: &str| println!("{l}");
    let path = match data {
        Some(p) => p,
        None => {
            // All four families, at twice the model's side: the input geometry matters, as with photographs.
            let families = dfgpu::data::synth::FAMILIES.map(String::from).to_vec();
            let size = 2 * cfg.model.size;
            dfgpu::data::open::builtin_data(
                &dfgpu::data::synth::SynthConfig { families, size, ..cfg.synth.clone() },
                log,
            )?
        }
    };
    let loaded = dfgpu::data::open::open_data(&path, cfg.model.size, cfg.model.input, log)?;
    println!("data: {} ({})", path.display(), dfgpu::data::folder::describe(loaded.counts()));
    for s in &loaded.skipped {
        println!("skipped: {s}");
    }
    if seeds > 1 {
        let runs = holdout::holdout_seeds(be.as_ref(), &cfg, &loaded, test_reals, seeds as usize, out, log)?;
        print!("{}", holdout::spread_tables(&holdout::spreads(&runs)?, &runs).0);
    } else {
        let rows = holdout::holdout(be.as_ref(), &cfg, &loaded, test_reals, out, log)?;
        print!("{}", holdout::tables(&rows).0);
    }
    print_tables(out, "holdout");
    Ok(())
}

/// A line of `eval --json`.
#[derive(serde::Serialize)]
struct EvalJson<'a> {
    checkpoint: String,
    data: String,
    report: dfgpu::train::metrics::Report,
    group_auc: std::collections::BTreeMap<&'a str, Option<f64>>,
    /// The checkpoint's spectral peak test, and it joined to the detector (null and {} without them).
    peak_auc: Option<f64>,
    joined_auc: Option<f64>,
    joined_group_auc: std::collections::BTreeMap<&'a str, Option<f64>>,
}

/// A line of `predict --json`: the image and its P(fake), or why it has none.
#[derive(serde::Serialize)]
struct PredictJson {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    p_fake: Option<f64>,
    /// The spectral peak score (the largest z-score over the bins, against the training reals) and the joined
    /// score (a z-value over the validation reals), with a checkpoint that has them.
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_z: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    joined_z: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Each group's AUC, rounded as the JSON lines round figures.
fn by_group(aucs: &[(String, f64)]) -> std::collections::BTreeMap<&str, Option<f64>> {
    aucs.iter().map(|(g, a)| (g.as_str(), rounded(*a, 6))).collect()
}

fn to_json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("strings and numbers serialize")
}

fn pack(data: &std::path::Path, out: &std::path::Path, size: usize, input: Input) -> dfgpu::Result<()> {
    if !(16..=1024).contains(&size) {
        return Err(dfgpu::Error::Invalid(format!("--size {size}: must be from 16 to 1024")));
    }
    let ds = dfgpu::data::folder::Dataset::open(data)?;
    let side = input.side(size);
    println!(
        "packing {} ({}) for {size}x{size} inputs by --input {} ({side}x{side} per image) into {}",
        data.display(),
        ds.describe(),
        input.name(),
        out.display()
    );
    let t = std::time::Instant::now();
    let mut last = 0.0;
    let p = dfgpu::data::pack::pack(&ds, size, input, out, &mut |done, total| {
        let s = t.elapsed().as_secs_f64();
        if s - last >= 5.0 || done == total {
            last = s;
            let eta = s / done.max(1) as f64 * (total - done) as f64;
            println!("  {done}/{total} images, {:.0} images/s, done in {eta:.0} s", done as f64 / s.max(1e-9));
        }
    })?;
    for s in &p.skipped {
        println!("skipped: {s}");
    }
    println!(
        "wrote {}: {} images ({} skipped), {:.1} MiB, in {:.1} s",
        out.display(),
        p.images,
        p.skipped.len(),
        p.bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    // SAFETY: sets the default disposition of one signal, before any other thread exists.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let given = |id: &str| {
        let m = matches.subcommand_matches("train");
        m.and_then(|m| m.value_source(id)) == Some(clap::parser::ValueSource::CommandLine)
    };
    match run(cli.command, &given) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dfgpu: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One command. `given` says whether a flag of train (by its clap id) was on the command line.
fn run(command: Command, given: &dyn Fn(&str) -> bool) -> dfgpu::Result<()> {
    match command {
        Command::Info { ptxas, dev } => dfgpu::info::run(dev.spec()?, ptxas),
        Command::Train(a) => train(a, given),
        Command::Ablate { data, out, branches, freq_norm, loss, epochs, model, opts, dev } => {
            let grid = (&branches[..], &freq_norm[..], &loss[..]);
            ablate(dev.select()?, data, &out, grid, epochs, &model, &opts)
        }
        Command::Holdout { data, out, test_reals, seeds, run, dev } => {
            holdout(dev.select()?, data, &out, (test_reals, seeds), &run)
        }
        Command::Spectrum { data, out, size, input, dev } => spectrum(dev.select()?, &data, &out, size, input),
        Command::Sanity { data, model, branch, steps, dev } => {
            sanity(dev.select()?, data.as_deref(), &model, &branch, steps)
        }
        Command::Eval { ckpt, data, json, tiles, dev } => eval(dev.select()?, &ckpt, &data, json, &tiles),
        Command::Predict { ckpt, images, json, tiles, dev } => predict(dev.select()?, &ckpt, &images, json, &tiles),
        Command::Pack { verify: Some(file), .. } => verify_pack(&file),
        Command::Pack { data: Some(data), out: Some(out), size, input, .. } => pack(&data, &out, size, input),
        Command::Pack { .. } => unreachable!("clap requires DATA and OUT without --verify"),
        Command::Curves { run } => curves(&run),
        Command::TimmExport { ckpt, out } => dfgpu::model::timm::export_from_checkpoint(&ckpt, &out)
            .map(|()| println!("wrote {} (timm names) from {}", out.display(), ckpt.display())),
        Command::TimmForward { backbone, weights, input, out, dev } => {
            let (be, line) = dev.select()?;
            println!("{line}");
            let wrote = dfgpu::model::timm::forward_files(be.as_ref(), &backbone, &weights, &input, &out)?;
            println!("wrote {}: {wrote}", out.display());
            Ok(())
        }
        Command::Synth { out, n_real, n_fake, size, seed, families, from } => {
            let cfg = dfgpu::data::synth::SynthConfig { n_real, n_fake, size, seed, families, from };
            let t = std::time::Instant::now();
            let n = dfgpu::data::synth::write(&cfg, &out)?;
            println!(
                "wrote {n} images ({n_real} real, {n_fake} fake, {size}x{size}) to {} in {:.1} s",
                out.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

/// A backend and the line that says which device it runs on.
type Selected = (Box<dyn dfgpu::Backend>, String);

fn ablate(
    (be, line): Selected,
    data: Option<std::path::PathBuf>,
    out: &Path,
    grid: (&[Branches], &[Magnitude], &[Loss]),
    epochs: usize,
    model: &ModelArgs,
    opts: &TrainOpts,
) -> dfgpu::Result<()> {
    println!("{line}");
    if opts.class_weights.is_some() {
        return Err(dfgpu::Error::Invalid(
            "--class-weights: in ablate the --loss grid sets the weights (focal, bce: none; wbce: auto)".into(),
        ));
    }
    let mut cfg = TrainConfig::new(model_config(be.as_ref(), model)?);
    apply_opts(&mut cfg, opts)?;
    (cfg.data, cfg.epochs) = (data, epochs);
    let rows = dfgpu::train::ablate::ablate(be.as_ref(), &cfg, grid, out, &mut |l| println!("{l}"))?;
    print!("{}", dfgpu::train::ablate::tables(&rows).0);
    print_tables(out, "ablation");
    Ok(())
}

/// Where ablate and holdout wrote their tables and figure: OUT/NAME.md, .csv and .png.
fn print_tables(out: &Path, name: &str) {
    let [md, csv, png] = ["md", "csv", "png"].map(|ext| out.join(format!("{name}.{ext}")));
    println!("tables: {} and {}, figure: {}", md.display(), csv.display(), png.display());
}

fn spectrum((be, line): Selected, data: &Path, out: &Path, size: usize, input: Input) -> dfgpu::Result<()> {
    use dfgpu::train::spectrum;
    println!("{line}");
    let s = spectrum::spectra(be.as_ref(), data, size, input)?;
    spectrum::write_png(&s, out)?;
    println!("{}", spectrum::summary(&s));
    println!(
        "figure: {} (mean real, mean fake, fake - real in blue/red, ring averages: real blue, fake red)",
        out.display()
    );
    Ok(())
}

fn sanity(
    (be, line): Selected,
    data: Option<&Path>,
    model: &ModelArgs,
    branch: &BranchArgs,
    steps: usize,
) -> dfgpu::Result<()> {
    println!("{line}");
    let cfg = with_branches(model_config(be.as_ref(), model)?, branch);
    let r = dfgpu::train::sanity::sanity(be.as_ref(), data, cfg, steps, &mut |l| println!("{l}"))?;
    if r.passed {
        Ok(())
    } else {
        Err(dfgpu::Error::Invalid("sanity check failed (see above)".into()))
    }
}

fn eval((be, line): Selected, ckpt: &Path, data: &Path, json: bool, tiles: &TileArgs) -> dfgpu::Result<()> {
    eprintln!("{line}");
    let say = |l: &str| if json { eprintln!("{l}") } else { println!("{l}") };
    let tiles = (tiles.tiles, tiles.tile_combine);
    let e = dfgpu::train::inference::evaluate(be.as_ref(), ckpt, data, tiles, &mut |l| say(l))?;
    if json {
        let (checkpoint, data) = (ckpt.display().to_string(), data.display().to_string());
        let (group_auc, joined_group_auc) = (by_group(&e.group_auc), by_group(&e.joined_group_auc));
        let (peak_auc, joined_auc) = (e.peak_auc.and_then(|a| rounded(a, 6)), e.joined_auc.and_then(|a| rounded(a, 6)));
        let report = e.report;
        let j = EvalJson { checkpoint, data, report, group_auc, peak_auc, joined_auc, joined_group_auc };
        println!("{}", to_json(&j));
    } else {
        print!("{}", e.report);
        e.group_auc.iter().for_each(|(g, a)| println!("  group {g}: AUC {a:.4} (its fakes against all reals)"));
        if let Some(a) = e.peak_auc {
            println!("spectral peak test (fitted on the training reals alone): AUC {a:.4}");
        }
        if let Some(a) = e.joined_auc {
            println!("detector or peak test (the larger of the two, each standardized over the validation reals): AUC {a:.4}");
            e.joined_group_auc.iter().for_each(|(g, a)| println!("  group {g}: joined AUC {a:.4}"));
        }
    }
    Ok(())
}

fn predict(
    (be, line): Selected,
    ckpt: &Path,
    images: &[std::path::PathBuf],
    json: bool,
    tiles: &TileArgs,
) -> dfgpu::Result<()> {
    eprintln!("{line}");
    let tiles = (tiles.tiles, tiles.tile_combine);
    let failed =
        dfgpu::train::inference::predict_files(be.as_ref(), ckpt, images, tiles, &mut |f, r| match (r, json) {
            (r, true) => {
                let path = f.display().to_string();
                let (p, error) = match r {
                    Ok(p) => (Some(p), None),
                    Err(e) => (None, Some(e)),
                };
                let p_fake = p.and_then(|p| rounded(p.p_fake as f64, 6));
                let (peak_z, joined_z) = (p.and_then(|p| p.peak_z), p.and_then(|p| p.joined_z));
                let (peak_z, joined_z) = (peak_z.and_then(|z| rounded(z, 6)), joined_z.and_then(|z| rounded(z, 6)));
                println!("{}", to_json(&PredictJson { path, p_fake, peak_z, joined_z, error }))
            }
            (Ok(p), false) => println!("{:.4}  {}", p.p_fake, f.display()),
            (Err(e), false) => eprintln!("skipped: {e}"),
        })?;
    if failed > 0 {
        return Err(dfgpu::Error::Invalid(format!("{failed} image(s) could not be read or scored (listed above)")));
    }
    Ok(())
}

fn verify_pack(file: &Path) -> dfgpu::Result<()> {
    let t = std::time::Instant::now();
    let n = dfgpu::data::pack::verify(file, &mut |l| println!("{l}"))?;
    println!("{}: all {n} images match their checksums ({:.1} s)", file.display(), t.elapsed().as_secs_f64());
    Ok(())
}

fn curves(run: &Path) -> dfgpu::Result<()> {
    let log = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&log).map_err(dfgpu::Error::io(&log))?;
    let lines = dfgpu::train::runlog::parse(&text, &log)?;
    dfgpu::train::figures::curves(&lines, &run.join("curves.png"))?;
    println!("wrote {}", run.join("curves.png").display());
    Ok(())
}
