//! The command line: each command's flags (clap), and the configurations they make.

use clap::{Parser, Subcommand};
use dfgpu::backend::fft::{Magnitude, Phase, SpectrumLayout};
use dfgpu::backend::head::Branches;
use dfgpu::backend::layers::Act;
use dfgpu::backend::loss::{ClassWeighting, LossKind};
use dfgpu::data::input::{Combine, Input};
use dfgpu::error::Choice;
use dfgpu::train::config::{Loss, OptimizerName, Sampler, TrainConfig};

#[derive(Parser)]
#[command(name = "dfgpu", version, about = "Train and run two-branch (EfficientNet + FFT) deepfake image detectors")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--device`, taken only by the commands that run on one: the others refuse it rather than ignore it.
#[derive(clap::Args)]
pub(crate) struct Device {
    /// Where to run: auto (the GPU if one is usable, else the CPU), cpu, cuda, or cuda:N.
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
}

impl Device {
    pub(crate) fn spec(&self) -> dfgpu::Result<dfgpu::DeviceSpec> {
        self.device.parse()
    }

    pub(crate) fn select(&self) -> dfgpu::Result<(Box<dyn dfgpu::Backend>, String)> {
        dfgpu::select(self.spec()?, Default::default())
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Trains the two-branch detector; without --data, on the built-in synthetic set.
    Train(TrainArgs),
    /// Can the model fit 5 real and 5 fake images? PASS or FAIL, with what the diagnostics saw.
    Sanity {
        /// Where the ten images come from (the first 5 of each class). Default: the built-in set.
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        branch: BranchArgs,
        #[arg(long, default_value_t = 300)]
        steps: usize,
        #[command(flatten)]
        dev: Device,
    },
    /// The mean spectrum of each class, their difference and the azimuthal averages, as a PNG and a table.
    Spectrum {
        /// A dataset folder (real/, fake/) or CSV.
        data: std::path::PathBuf,
        #[arg(long, default_value = "spectrum.png")]
        out: std::path::PathBuf,
        /// The side of the spectra: each image's centre crop of this side, or the image resized to it (--input).
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// crop (native pixels) or resize.
        #[arg(long, default_value = "crop", value_parser = choice::<Input>)]
        input: Input,
        #[command(flatten)]
        dev: Device,
    },
    /// A grid of runs on one dataset (branches x frequency normalization x loss): a table of AUC, balanced
    /// accuracy and EER, as markdown and CSV in --out.
    Ablate {
        /// Training data (folder or CSV). Default: the built-in set.
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        #[arg(long, default_value = "runs/ablation")]
        out: std::path::PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "spatial,freq,both", value_parser = choice::<Branches>)]
        branches: Vec<Branches>,
        #[arg(long, value_delimiter = ',', default_value = "raw,log,log-std", value_parser = choice::<Magnitude>)]
        freq_norm: Vec<Magnitude>,
        #[arg(long, value_delimiter = ',', default_value = "focal,wbce", value_parser = choice::<Loss>)]
        loss: Vec<Loss>,
        /// Epochs per run.
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        opts: TrainOpts,
        #[command(flatten)]
        dev: Device,
    },
    /// Generators never seen: for each fake group, train on the other groups and test on it against reals no
    /// run saw. A table (markdown, CSV, PNG in --out) of AUC, AP and balanced accuracy at the validation-tuned
    /// threshold per held-out group, with the mean and the worst AUC, and beside each AUC a spectral baseline's
    /// (logistic regression on the azimuthally averaged log spectrum) fitted on the same images, a spectral peak
    /// test's (fitted on the training reals alone) and the detector's joined to the peak test.
    Holdout {
        /// A folder (the subfolders of fake/ are the groups), a CSV with a group column, or a pack. Default: the
        /// built-in set with all four families (periodic included), its images twice the model's side.
        #[arg(long)]
        data: Option<std::path::PathBuf>,
        #[arg(long, default_value = "runs/holdout")]
        out: std::path::PathBuf,
        /// The share of the reals kept apart for testing: the same reals in every run.
        #[arg(long, default_value_t = 0.2)]
        test_reals: f64,
        /// Repeat the whole of it for this many seeds (--seed, --seed + 1, ...), each under --out/seed-S, and
        /// give each group's mean, lowest and highest AUC over them: one run's figure moves by 0.03 to 0.05 with
        /// the seed on small sets.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        seeds: u32,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        dev: Device,
    },
    /// A checkpoint's metrics on a dataset (folder or CSV): AUC, AP, EER, confusion, per-group AUC; and the AUCs of
    /// the spectral peak test the checkpoint carries and of the detector joined to it (overall and per group).
    Eval {
        #[arg(long)]
        ckpt: std::path::PathBuf,
        /// A folder, a CSV or a pack.
        #[arg(long)]
        data: std::path::PathBuf,
        /// One JSON object on stdout (the progress lines go to stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tiles: TileArgs,
        #[command(flatten)]
        dev: Device,
    },
    /// P(fake) for each image; a folder stands for every image under it. An unreadable image is reported and
    /// skipped (the exit status then says so).
    Predict {
        #[arg(long)]
        ckpt: std::path::PathBuf,
        /// Image files or folders.
        #[arg(required = true)]
        images: Vec<std::path::PathBuf>,
        /// One JSON object per line instead of text, with the image's spectral peak score (peak_z: its largest
        /// z-score over the spectrum's bins, against the training reals) and its score joined to the detector's
        /// (joined_z: a z-value over the validation reals), when the checkpoint carries them.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tiles: TileArgs,
        #[command(flatten)]
        dev: Device,
    },
    /// Draws a run's learning curves (RUN/curves.png) from its metrics.jsonl, e.g. while it is still training.
    Curves {
        /// The run folder (`--out` of train).
        run: std::path::PathBuf,
    },
    /// Decodes a dataset (folder or CSV) once, resized, into one file that train, eval and spectrum map into
    /// memory: large sets train without decoding.
    Pack {
        /// A folder with real/ and fake/, or a CSV of path,label.
        #[arg(required_unless_present = "verify")]
        data: Option<std::path::PathBuf>,
        /// The file to write (conventionally .dfpack).
        #[arg(required_unless_present = "verify")]
        out: Option<std::path::PathBuf>,
        /// Checks every image of a pack against its checksum instead (training checks each image the first
        /// time it reads it, and the trailer on open).
        #[arg(long, value_name = "PACK", conflicts_with_all = ["data", "out"])]
        verify: Option<std::path::PathBuf>,
        /// Image side in pixels: the model's input size (b0: 224, tiny: 64).
        #[arg(long, default_value_t = 224)]
        size: usize,
        /// The model's --input: crop keeps each image's centre 2 size x 2 size square of native pixels (the
        /// range of the training crops), resize the image squashed to size x size.
        #[arg(long, default_value = "crop", value_parser = choice::<Input>)]
        input: Input,
    },
    /// Writes the built-in synthetic set as a folder dataset: OUT/real, OUT/fake/FAMILY (1 real to 5 fakes).
    Synth {
        /// Output folder.
        out: std::path::PathBuf,
        #[arg(long, default_value_t = 200)]
        n_real: usize,
        #[arg(long, default_value_t = 1000)]
        n_fake: usize,
        /// Image side in pixels (even, 16 to 1024).
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fake families, comma-separated: upconv, nearest, fingerprint, periodic (held out by default).
        #[arg(long, value_delimiter = ',', default_value = "upconv,nearest,fingerprint")]
        families: Vec<String>,
        /// Crop the images from your own photos in this folder (any nesting) instead of drawing them.
        #[arg(long)]
        from: Option<std::path::PathBuf>,
    },
    /// Writes a checkpoint's EfficientNet under timm's names (a state_dict for timm's efficientnet_bN).
    TimmExport {
        #[arg(long)]
        ckpt: std::path::PathBuf,
        /// The safetensors file to write.
        out: std::path::PathBuf,
    },
    /// Runs an EfficientNet with timm weights on images in inference mode and writes the pooled features (and
    /// the ImageNet logits, when the weights have the classifier): the parity check, scripts/timm_parity.py.
    TimmForward {
        /// b0 ... b7, as the weights were exported.
        #[arg(long)]
        backbone: String,
        /// timm weights as safetensors (scripts/export_timm.py).
        #[arg(long)]
        weights: std::path::PathBuf,
        /// A safetensors file with one f32 tensor named 'images', N x 3 x H x W, already normalized.
        #[arg(long)]
        input: std::path::PathBuf,
        /// Where to write 'features' (N x C) and 'logits' (N x classes).
        #[arg(long)]
        out: std::path::PathBuf,
        #[command(flatten)]
        dev: Device,
    },
    /// Devices, driver and library versions, compiled-in GPU architectures, CPU threads.
    /// With --device, also opens that device and says what it got.
    Info {
        /// Also print ptxas's report for every kernel: registers, shared memory, spills.
        #[arg(long)]
        ptxas: bool,
        #[command(flatten)]
        dev: Device,
    },
}

/// The model's options, shared by train, sanity and ablate.
#[derive(clap::Args)]
pub(crate) struct ModelArgs {
    /// EfficientNet variant: tiny, b0 ... b7; auto: b0 on a GPU, tiny on the CPU.
    #[arg(long, default_value = "auto", value_parser = backbone)]
    pub(crate) backbone: Backbone,
    /// Input size in pixels. Default: the backbone's own (tiny: 64, b0: 224).
    #[arg(long)]
    pub(crate) size: Option<usize>,
    /// How an image becomes the input: crop (native pixels: a random crop in training, the centre crop in
    /// validation) or resize (squashed to the input size, which low-pass filters the generators' traces).
    #[arg(long, default_value = "crop", value_parser = choice::<Input>)]
    pub(crate) input: Input,
    /// Switch the batch norms of the frequency branch's convolutions off.
    #[arg(long)]
    pub(crate) no_freq_bn: bool,
    /// Put the ring profile of the luma spectrum (the mean log magnitude per frequency ring, Durall et al.
    /// 2020), standardized by the training set's statistics, beside the frequency branch's features: what its
    /// convolutions, which do not see where in the spectrum they are, cannot read.
    #[arg(long)]
    pub(crate) freq_profile: bool,
    /// The frequency branch's stride-2 convolution stages: their output channels.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    pub(crate) freq_widths: Vec<usize>,
    /// Phase planes: angle (angle / pi) or cos-sin.
    #[arg(long, default_value = "angle", value_parser = choice::<Phase>)]
    pub(crate) phase: Phase,
    /// The spectrum fed to the branch: half (H x (W/2+1)) or shifted (full, zero frequency at the centre).
    #[arg(long, default_value = "half", value_parser = choice::<SpectrumLayout>)]
    pub(crate) spectrum: SpectrumLayout,
    /// One spectrum of the luma instead of one per colour channel.
    #[arg(long)]
    pub(crate) grayscale: bool,
    /// The fusion head's hidden units.
    #[arg(long, default_value_t = 256)]
    pub(crate) head_hidden: usize,
    /// The fusion head's activation: silu, relu or sigmoid.
    #[arg(long, default_value = "silu", value_parser = choice::<Act>)]
    pub(crate) head_act: Act,
    /// Switch the head's per-branch LayerNorm off.
    #[arg(long)]
    pub(crate) no_head_norm: bool,
    /// Dropout on the head's hidden layer (training only).
    #[arg(long, default_value_t = 0.3)]
    pub(crate) dropout: f32,
    /// A learned per-sample gate that weighs the two branches.
    #[arg(long)]
    pub(crate) gated: bool,
    /// Probability per sample of dropping one branch's features in training.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) branch_dropout: f32,
}

/// How eval and predict score an image larger than the model (a model trained with --input crop).
#[derive(clap::Args)]
pub(crate) struct TileArgs {
    /// Score a grid of N crops spread over the image (N a square: 1, 4, 9, ...; 1: the centre crop).
    #[arg(long, default_value_t = 1)]
    pub(crate) tiles: usize,
    /// How the tiles' logits combine: mean, or max (one tile that looks fake is enough).
    #[arg(long, default_value = "mean", value_parser = choice::<Combine>)]
    pub(crate) tile_combine: Combine,
}

/// A clap value parser for a setting chosen by name.
pub(crate) fn choice<T: Choice>(s: &str) -> Result<T, String> {
    T::parse(s, "")
        .map_err(|_| format!("choose one of {}", T::NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))
}

/// `--backbone`: an EfficientNet variant, or auto, which the device decides.
#[derive(Clone)]
pub(crate) enum Backbone {
    Auto,
    Named(String),
}

/// A clap value parser for `--backbone`: auto or a variant that the model knows.
pub(crate) fn backbone(s: &str) -> Result<Backbone, String> {
    match s {
        "auto" => Ok(Backbone::Auto),
        _ => dfgpu::model::efficientnet::EfficientNetConfig::named(s)
            .map(|_| Backbone::Named(s.into()))
            .map_err(|e| format!("{e}, or auto")),
    }
}

/// The two settings that the ablation varies, fixed for train and sanity.
#[derive(clap::Args)]
pub(crate) struct BranchArgs {
    /// Frequency magnitudes: raw (|F|, which stalls training), log, or log-std (per-bin z-score).
    #[arg(long, default_value = "log", value_parser = choice::<Magnitude>)]
    pub(crate) freq_norm: Magnitude,
    /// both, spatial or freq.
    #[arg(long, default_value = "both", value_parser = choice::<Branches>)]
    pub(crate) branches: Branches,
}

/// Training settings, shared by train and ablate.
#[derive(clap::Args)]
pub(crate) struct TrainOpts {
    #[arg(long, default_value_t = 32)]
    pub(crate) batch: usize,
    /// Peak learning rate (warm-up, then cosine decay to 1% of it).
    #[arg(long, default_value_t = 1e-3)]
    pub(crate) lr: f32,
    /// Linear warm-up, in epochs.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) warmup_epochs: f32,
    /// adamw, or sgd (with momentum, as torch.optim.SGD: its steps grow with the gradient's scale, which is
    /// how raw FFT magnitudes can wreck a run: docs/collapse-study.md).
    #[arg(long, default_value = "adamw", value_parser = choice::<OptimizerName>)]
    pub(crate) optimizer: OptimizerName,
    /// SGD's momentum.
    #[arg(long, default_value_t = 0.9)]
    pub(crate) momentum: f32,
    /// Weight decay, never on normalization parameters and biases: decoupled for AdamW (default 0.05), L2 for
    /// SGD (default 5e-4).
    #[arg(long)]
    pub(crate) weight_decay: Option<f32>,
    /// Clip the gradient's total norm to this; 0: no clipping.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) max_grad_norm: f32,
    /// balanced (half real, half fake per batch) or natural (the data set's own balance).
    #[arg(long, default_value = "balanced", value_parser = choice::<Sampler>)]
    pub(crate) sampler: Sampler,
    /// Focal loss: the weight of the class labelled 1 (fake); below 0.5 favours the rarer real class.
    #[arg(long, default_value_t = 0.25)]
    pub(crate) focal_alpha: f32,
    /// Focal loss: the focusing exponent.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) focal_gamma: f32,
    /// Class weights instead of the loss's own (wbce: auto; focal, bce: none): none, auto (n_real / n_fake on
    /// fakes), effective[:BETA] (Cui et al. 2019, beta 0.999), pos:W (W on fakes), or W_REAL,W_FAKE.
    #[arg(long)]
    pub(crate) class_weights: Option<ClassWeighting>,
    /// Label smoothing: labels become label (1 - eps) + eps / 2.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) label_smoothing: f32,
    /// Augmentations of the training images: default (flip=0.5), robust (crop=0.25,rescale=0.1,blur=0.1,
    /// jpeg=0.2,flip=0.5), none, or NAME=P,... with NAME among crop, rescale, blur, jpeg, flip and P its
    /// probability.
    #[arg(long, default_value = "default")]
    pub(crate) augment: String,
    /// The probability that a real training image becomes a self-fake, labelled fake: downscaled, upsampled
    /// by a random method (nearest, bilinear, bicubic, transposed convolution, pixel shuffle), maybe only in a
    /// soft region, maybe sharpened or blurred, JPEG-compressed.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) self_fakes: f32,
    /// Without --val: the share of each class held out for validation.
    #[arg(long, default_value_t = 0.2)]
    pub(crate) val_fraction: f64,
    /// The gradient report (log lines and grad/step-N.png) every this many steps; 0: never.
    #[arg(long, default_value_t = 25)]
    pub(crate) grad_report: usize,
    /// A progress line every this many steps.
    #[arg(long, default_value_t = 10)]
    pub(crate) log_every: usize,
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
}

/// What one training run is, for train and holdout: the model, its branches, the epochs, the loss and the
/// training settings.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) branch: BranchArgs,
    /// Epochs (holdout: per run).
    #[arg(long, default_value_t = 6)]
    pub(crate) epochs: usize,
    /// focal (alpha 0.25 on fakes, gamma 2), wbce (BCE weighted n_real / n_fake on fakes), or bce.
    #[arg(long, default_value = "focal", value_parser = choice::<Loss>)]
    pub(crate) loss: Loss,
    #[command(flatten)]
    pub(crate) opts: TrainOpts,
}

impl RunArgs {
    /// The training configuration these flags make, on `be`.
    pub(crate) fn config(&self, be: &dyn dfgpu::Backend) -> dfgpu::Result<TrainConfig> {
        let model = with_branches(model_config(be, &self.model)?, &self.branch);
        let mut cfg = TrainConfig::new(model);
        (cfg.loss, cfg.weighting) = self.loss.config();
        apply_opts(&mut cfg, &self.opts)?;
        cfg.epochs = self.epochs;
        Ok(cfg)
    }
}

#[derive(clap::Args)]
pub(crate) struct TrainArgs {
    /// Training data: a folder with real/ and fake/, a CSV of path,label, or a pack. Default: the built-in set.
    #[arg(long)]
    pub(crate) data: Option<std::path::PathBuf>,
    /// Validation data (folder, CSV or pack). Default: a stratified --val-fraction of the training data.
    #[arg(long)]
    pub(crate) val: Option<std::path::PathBuf>,
    /// Run folder for the logs, figures and checkpoints. Default: runs/latest, where an earlier run is first
    /// moved aside to runs/latest-K; a folder named here that holds a run is an error (see --overwrite).
    #[arg(long)]
    pub(crate) out: Option<std::path::PathBuf>,
    /// Write over the run that --out holds.
    #[arg(long)]
    pub(crate) overwrite: bool,
    #[command(flatten)]
    pub(crate) run: RunArgs,
    /// Continue a run from its last.safetensors (model settings, weights, optimizer and sampler state).
    #[arg(long)]
    pub(crate) resume: Option<std::path::PathBuf>,
    /// Start the EfficientNet from timm weights: a state_dict exported by scripts/export_timm.py.
    #[arg(long)]
    pub(crate) pretrained: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) dev: Device,
}

pub(crate) fn model_config(
    be: &dyn dfgpu::Backend,
    a: &ModelArgs,
) -> dfgpu::Result<dfgpu::model::detector::DetectorConfig> {
    let backbone = match &a.backbone {
        Backbone::Auto if be.is_cuda() => "b0",
        Backbone::Auto => "tiny",
        Backbone::Named(b) => b,
    };
    let mut model = dfgpu::model::detector::DetectorConfig::new(backbone)?;
    if let Some(s) = a.size {
        model.size = s;
    }
    model.input = a.input;
    if a.freq_widths.is_empty() || a.freq_widths.contains(&0) {
        let given: Vec<String> = a.freq_widths.iter().map(usize::to_string).collect();
        return Err(dfgpu::Error::Invalid(format!(
            "--freq-widths '{}': give each stage's channels, at least 1 each (e.g. 32,64,128)",
            given.join(",")
        )));
    }
    let f = &mut model.freq;
    f.batch_norm = !a.no_freq_bn;
    f.profile = a.freq_profile;
    f.widths = a.freq_widths.clone();
    (f.fft.phase, f.fft.layout, f.fft.grayscale) = (a.phase, a.spectrum, a.grayscale);
    let h = &mut model.head;
    (h.hidden, h.layer_norm, h.dropout, h.gated, h.branch_dropout) =
        (a.head_hidden, !a.no_head_norm, a.dropout, a.gated, a.branch_dropout);
    h.act = a.head_act;
    Ok(model)
}

pub(crate) fn with_branches(
    mut model: dfgpu::model::detector::DetectorConfig,
    b: &BranchArgs,
) -> dfgpu::model::detector::DetectorConfig {
    (model.freq.fft.magnitude, model.head.branches) = (b.freq_norm, b.branches);
    model
}

/// The shared training settings onto a configuration; a value out of range is an error naming its flag.
pub(crate) fn apply_opts(cfg: &mut TrainConfig, o: &TrainOpts) -> dfgpu::Result<()> {
    check_ranges(o)?;
    (cfg.batch, cfg.lr, cfg.warmup_epochs, cfg.seed, cfg.sampler) = (o.batch, o.lr, o.warmup_epochs, o.seed, o.sampler);
    cfg.optimizer = o.optimizer.with(o.momentum, o.weight_decay);
    cfg.max_grad_norm = (o.max_grad_norm > 0.0).then_some(o.max_grad_norm);
    (cfg.val_fraction, cfg.grad_report, cfg.log_every) = (o.val_fraction, o.grad_report, o.log_every);
    cfg.augment = dfgpu::data::augment::Augment::parse(&o.augment)?;
    cfg.augment.self_fakes = o.self_fakes;
    if let LossKind::Focal { .. } = cfg.loss.kind {
        cfg.loss.kind = LossKind::Focal { alpha: o.focal_alpha, gamma: o.focal_gamma };
    }
    cfg.loss.smoothing = o.label_smoothing;
    cfg.loss
        .validate()
        .map_err(|e| dfgpu::Error::Invalid(format!("--focal-alpha, --focal-gamma, --label-smoothing: {e}")))?;
    if let Some(w) = o.class_weights {
        cfg.weighting = w;
    }
    Ok(())
}

/// The numeric training settings' ranges: the first one outside its range is an error naming its flag.
pub(crate) fn check_ranges(o: &TrainOpts) -> dfgpu::Result<()> {
    let at_least_0 = |v: f32| v >= 0.0 && v.is_finite();
    let checks: [(&str, String, bool, &str); 8] = [
        (
            "--weight-decay",
            o.weight_decay.unwrap_or(0.0).to_string(),
            o.weight_decay.is_none_or(at_least_0),
            "must be >= 0",
        ),
        ("--momentum", o.momentum.to_string(), (0.0..1.0).contains(&o.momentum), "must be in [0, 1)"),
        ("--warmup-epochs", o.warmup_epochs.to_string(), at_least_0(o.warmup_epochs), "must be >= 0"),
        ("--max-grad-norm", o.max_grad_norm.to_string(), at_least_0(o.max_grad_norm), "must be >= 0 (0: no clipping)"),
        ("--lr", o.lr.to_string(), o.lr > 0.0 && o.lr.is_finite(), "must be > 0"),
        ("--log-every", o.log_every.to_string(), o.log_every > 0, "must be at least 1"),
        (
            "--val-fraction",
            o.val_fraction.to_string(),
            o.val_fraction > 0.0 && o.val_fraction < 1.0,
            "must be between 0 and 1",
        ),
        ("--self-fakes", o.self_fakes.to_string(), (0.0..=1.0).contains(&o.self_fakes), "a probability: from 0 to 1"),
    ];
    match checks.into_iter().find(|(_, _, ok, _)| !ok) {
        Some((flag, v, _, want)) => Err(dfgpu::Error::Invalid(format!("{flag} '{v}': {want}"))),
        None => Ok(()),
    }
}
