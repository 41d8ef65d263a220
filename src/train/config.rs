//! A training run's settings: the data, the model, the schedule, the loss and its class weights, the sampler,
//! and the names the command line gives them.

use crate::backend::loss::{ClassWeighting, LossConfig, LossKind};
use crate::backend::optim::{AdamW, Optimizer, Sgd};
use crate::data::augment::Augment;
use crate::data::synth::SynthConfig;
use crate::error::Choice;
use crate::model::detector::DetectorConfig;
pub use crate::train::rundir::ExistingRun;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// Every training image once per epoch, shuffled: the data set's own class balance.
    Natural,
    /// Each batch half real, half fake (drawn with replacement), as many batches as a natural epoch.
    Balanced,
}

impl Choice for Sampler {
    const NAMES: &'static [(&'static str, Self)] = &[("natural", Sampler::Natural), ("balanced", Sampler::Balanced)];
}

#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// A folder or CSV dataset; None: the built-in synthetic set.
    pub data: Option<PathBuf>,
    /// A validation set; None: a stratified split of the training set.
    pub val: Option<PathBuf>,
    pub val_fraction: f64,
    /// Where the logs go.
    pub out: PathBuf,
    pub model: DetectorConfig,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub warmup_epochs: f32,
    pub optimizer: Optimizer,
    pub max_grad_norm: Option<f32>,
    pub loss: LossConfig,
    pub weighting: ClassWeighting,
    pub sampler: Sampler,
    pub seed: u64,
    /// The built-in set, when `data` is None.
    pub synth: SynthConfig,
    /// Progress lines every this many steps.
    pub log_every: usize,
    /// The gradient report (per tensor: gradient norm, update / weight) every this many steps; 0: never.
    pub grad_report: usize,
    /// Augmentations of the training images (data/augment.rs).
    pub augment: Augment,
    /// Continue from this checkpoint (its model settings, weights, optimizer state, step and sampler state).
    pub resume: Option<PathBuf>,
    /// Start the spatial branch from these timm EfficientNet weights (scripts/export_timm.py).
    pub pretrained: Option<PathBuf>,
    /// What to do when `out` holds an earlier run (and this is not a --resume of it).
    pub existing: ExistingRun,
    /// The model flags (of `MODEL_FLAGS`) given on the command line: on --resume each must agree with the
    /// checkpoint, whose settings the run keeps.
    pub model_flags: Vec<&'static str>,
}

/// Each model flag and the checkpoint metadata key that stores its setting.
pub const MODEL_FLAGS: [(&str, &str); 17] = [
    ("--backbone", "dfgpu.backbone"),
    ("--size", "dfgpu.size"),
    ("--input", "dfgpu.input"),
    ("--freq-widths", "dfgpu.freq.widths"),
    ("--no-freq-bn", "dfgpu.freq.norm"),
    ("--freq-profile", "dfgpu.freq.profile"),
    ("--spectrum", "dfgpu.fft.layout"),
    ("--freq-norm", "dfgpu.fft.magnitude"),
    ("--phase", "dfgpu.fft.phase"),
    ("--grayscale", "dfgpu.fft.grayscale"),
    ("--head-hidden", "dfgpu.head.hidden"),
    ("--no-head-norm", "dfgpu.head.norm"),
    ("--head-act", "dfgpu.head.act"),
    ("--dropout", "dfgpu.head.dropout"),
    ("--gated", "dfgpu.head.gated"),
    ("--branches", "dfgpu.head.branches"),
    ("--branch-dropout", "dfgpu.head.branch_dropout"),
];

impl TrainConfig {
    /// Defaults for a backbone: focal loss, class-balanced batches, AdamW 1e-3 with one warm-up epoch.
    pub fn new(model: DetectorConfig) -> Self {
        TrainConfig {
            data: None,
            val: None,
            val_fraction: 0.2,
            out: PathBuf::from("runs/latest"),
            synth: SynthConfig { size: model.size.max(32), ..SynthConfig::default() },
            model,
            epochs: 6,
            batch: 32,
            lr: 1e-3,
            warmup_epochs: 1.0,
            optimizer: Optimizer::default(),
            max_grad_norm: Some(5.0),
            loss: LossConfig::focal(),
            weighting: ClassWeighting::None,
            sampler: Sampler::Balanced,
            seed: 0,
            log_every: 10,
            grad_report: 25,
            augment: Augment::default(),
            resume: None,
            pretrained: None,
            existing: ExistingRun::MoveAside,
            model_flags: Vec::new(),
        }
    }
}

/// The losses the command line names: each sets the loss and its default class weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Alpha 0.25 on fakes, gamma 2, unweighted.
    Focal,
    /// BCE weighted n_real / n_fake on fakes.
    Wbce,
    Bce,
}

impl Choice for Loss {
    const NAMES: &'static [(&'static str, Self)] = &[("focal", Loss::Focal), ("wbce", Loss::Wbce), ("bce", Loss::Bce)];
}

impl Loss {
    pub fn config(self) -> (LossConfig, ClassWeighting) {
        let bce = LossConfig { kind: LossKind::Bce, ..LossConfig::focal() };
        match self {
            Loss::Focal => (LossConfig::focal(), ClassWeighting::None),
            Loss::Wbce => (bce, ClassWeighting::Auto),
            Loss::Bce => (bce, ClassWeighting::None),
        }
    }
}

/// The optimizer as the command line names it; its settings come from their own flags (`with`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerName {
    AdamW,
    Sgd,
}

impl Choice for OptimizerName {
    const NAMES: &'static [(&'static str, Self)] = &[("adamw", OptimizerName::AdamW), ("sgd", OptimizerName::Sgd)];
}

impl OptimizerName {
    /// The optimizer with its own default weight decay unless one is given; `momentum` is SGD's.
    pub fn with(self, momentum: f32, weight_decay: Option<f32>) -> Optimizer {
        match self {
            OptimizerName::AdamW => {
                let d = AdamW::default();
                Optimizer::AdamW(AdamW { weight_decay: weight_decay.unwrap_or(d.weight_decay), ..d })
            }
            OptimizerName::Sgd => {
                Optimizer::Sgd(Sgd { momentum, weight_decay: weight_decay.unwrap_or(Sgd::default().weight_decay) })
            }
        }
    }
}
