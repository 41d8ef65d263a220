//! The two-branch detector: EfficientNet on the normalized image, the frequency branch on the raw image, the
//! fusion head, one logit per image (P(fake) = sigmoid). One flat parameter buffer (names prefixed spatial.,
//! freq., head.) and one flat state buffer (batch-norm running statistics, and the ring profile's statistics
//! with `--freq-profile`).

use crate::backend::head::{Branches, HeadConfig, HeadInputs};
use crate::backend::Slots;
use crate::data::input::Input;
use crate::error::{Error, Result};
use crate::model::efficientnet::{EfficientNet, EfficientNetCache, EfficientNetConfig};
use crate::model::freq::{FreqBranch, FreqCache, FreqConfig};
use crate::model::layers::{Builder, Bwd, Fwd};
use crate::params::ParamLayout;
use crate::rng::Rng;
use crate::tensor::{DType, Layout, Slice, Tensor};
use std::ops::Range;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    pub backbone: EfficientNetConfig,
    /// Input side in pixels.
    pub size: usize,
    /// How an image becomes the size x size input (data/input.rs).
    pub input: Input,
    pub freq: FreqConfig,
    /// The head's settings; its input sizes follow from the branches.
    pub head: HeadConfig,
}

impl DetectorConfig {
    /// A backbone ("tiny", "b0".."b7") at its own resolution, the default frequency branch and head.
    pub fn new(backbone: &str) -> Result<Self> {
        let backbone = EfficientNetConfig::named(backbone)?;
        Ok(DetectorConfig {
            size: backbone.resolution,
            input: Input::Crop,
            backbone,
            freq: FreqConfig::default(),
            head: HeadConfig::new(1, 1, 256),
        })
    }
}

pub struct Detector {
    pub cfg: DetectorConfig,
    pub spatial: EfficientNet,
    pub freq: FreqBranch,
    pub head: HeadConfig,
    head_range: Range<usize>,
    pub params: ParamLayout,
    pub state: ParamLayout,
}

pub struct DetectorCache {
    spatial: Option<EfficientNetCache>,
    freq: Option<FreqCache>,
    s: Tensor,
    q: Tensor,
    head: crate::backend::HeadSaved,
}

impl Detector {
    pub fn new(cfg: DetectorConfig) -> Result<Self> {
        if !(16..=1024).contains(&cfg.size) {
            return Err(Error::Invalid(format!("input size {} must be from 16 to 1024", cfg.size)));
        }
        let mut b = Builder::default();
        let spatial = EfficientNet::new(&mut b, cfg.backbone.clone(), "spatial.");
        let freq = FreqBranch::new(&mut b, cfg.freq.clone(), cfg.size, "freq.");
        let head = HeadConfig { ds: spatial.features, dq: freq.features, ..cfg.head.clone() };
        head.validate()?;
        // The head's tensors, contiguous and in its own order: its kernels address them by relative offsets.
        let hl = head.layout();
        let start = b.params.total().next_multiple_of(4);
        for e in hl.entries() {
            b.params.push(&format!("head.{}", e.name), &e.shape, e.no_decay);
            let placed = b.params.get(&format!("head.{}", e.name))?.offset;
            assert_eq!(placed - start, e.offset, "head tensors must keep their relative offsets");
        }
        let head_range = start..start + hl.total();
        Ok(Detector { cfg, spatial, freq, head, head_range, params: b.params, state: b.state })
    }

    /// Initial parameters: convolutions He-normal by fan-out (timm's EfficientNet init), batch norm scale 1 and
    /// shift 0, SE biases 0, the head as `HeadConfig::init`.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut p = vec![0f32; self.params.total()];
        let mut rng = Rng::new(seed);
        for e in self.params.entries() {
            let slot = &mut p[e.range()];
            if e.name.starts_with("head.") {
                continue;
            }
            if e.shape.len() == 4 {
                // fan_out = out channels x kernel area / groups: for depthwise (in = 1) that is K*K.
                let fan_out =
                    if e.shape[1] == 1 { e.shape[2] * e.shape[3] } else { e.shape[0] * e.shape[2] * e.shape[3] };
                let std = (2.0 / fan_out as f64).sqrt();
                slot.iter_mut().for_each(|v| *v = (std * rng.normal()) as f32);
            } else if e.shape.len() == 1 && e.name.ends_with("weight") {
                slot.fill(1.0);
            }
        }
        p[self.head_range.clone()].copy_from_slice(&self.head.init(seed ^ 0x5EED));
        p
    }

    /// Running means 0, variances 1; standardizing statistics (means, then standard deviations) 0 and 1 until
    /// they are gathered.
    pub fn init_state(&self) -> Vec<f32> {
        let mut s = vec![0f32; self.state.total()];
        for e in self.state.entries() {
            let r = e.range();
            if e.name.ends_with("running_var") {
                s[r].fill(1.0);
            } else if e.name.ends_with(".stats") {
                s[r.start + r.len() / 2..r.end].fill(1.0);
            }
        }
        s
    }

    /// One logit per image, from the normalized images (spatial branch) and the raw ones (frequency branch).
    /// `train` carries the step's seed (dropout, drop-connect, branch dropout) and selects batch statistics.
    /// The bytes a forward of `batch` images takes, at least: the parameters and the f32 values the forward keeps
    /// (the preprocessed images, each active branch's outputs; inference builds the same caches).
    pub fn forward_bytes(&self, batch: usize) -> u64 {
        let s = self.cfg.size;
        let mut per_image = 2 * 3 * s * s; // the normalized and the raw image
        if self.head.branches != Branches::Freq {
            per_image += self.spatial.kept(s);
        }
        if self.head.branches != Branches::Spatial {
            per_image += self.freq.kept(s);
        }
        4 * (self.params.total() as u64 + batch as u64 * per_image as u64)
    }

    /// The bytes a training step of `batch` images takes, at least: the forward's, and the gradients and the
    /// optimizer's two buffers. What the batch sizes are checked against before a run starts.
    pub fn step_bytes(&self, batch: usize) -> u64 {
        self.forward_bytes(batch) + 4 * 3 * self.params.total() as u64
    }

    pub fn forward(
        &self,
        f: &mut Fwd,
        norm: Arc<Tensor>,
        raw: &Tensor,
        stats: Option<&Tensor>,
    ) -> Result<(Tensor, DetectorCache)> {
        let n = norm.shape()[0];
        let zeros = |d: usize| {
            f.be.upload(&match f.params.dtype() {
                DType::F64 => Tensor::from_vec(&[n, d], Layout::Plain, vec![0f64; n * d])?,
                _ => Tensor::from_vec(&[n, d], Layout::Plain, vec![0f32; n * d])?,
            })
        };
        let (s, spatial) = if self.head.branches == Branches::Freq {
            (zeros(self.head.ds)?, None)
        } else {
            let (s, c) = self.spatial.forward(f, norm)?;
            (s, Some(c))
        };
        let (q, freq) = if self.head.branches == Branches::Spatial {
            (zeros(self.head.dq)?, None)
        } else {
            let (q, c) = self.freq.forward(f, raw, stats)?;
            (q, Some(c))
        };
        let x = HeadInputs {
            cfg: &self.head,
            params: Slice { buf: f.params, range: self.head_range.clone() },
            s: &s,
            q: &q,
        };
        let h = f.be.head_forward(&x, f.mode)?;
        Ok((h.logits, DetectorCache { spatial, freq, s, q, head: h.saved }))
    }

    /// Whether a parameter takes part in training: a switched-off branch's (and its LayerNorm in the head) do not.
    pub fn is_active(&self, name: &str) -> bool {
        match self.head.branches {
            Branches::Both => true,
            Branches::Spatial => !(name.starts_with("freq.") || name.starts_with("head.norm_q")),
            Branches::Freq => !(name.starts_with("spatial.") || name.starts_with("head.norm_s")),
        }
    }

    /// The two branches' features at the fusion input (zeros for a switched-off branch), for diagnostics.
    pub fn branch_features<'a>(&self, c: &'a DetectorCache) -> (&'a Tensor, &'a Tensor) {
        (&c.s, &c.q)
    }

    pub fn backward(&self, b: &mut Bwd, c: DetectorCache, dlogits: &Tensor) -> Result<()> {
        let p = Slice { buf: b.params, range: self.head_range.clone() };
        let x = HeadInputs { cfg: &self.head, params: p, s: &c.s, q: &c.q };
        let g = b.be.head_backward(&x, &c.head, dlogits, Slots { buf: b.grads, at: [self.head_range.clone()] })?;
        if let Some(sc) = c.spatial {
            self.spatial.backward(b, sc, &g.ds)?;
        }
        if let Some(fc) = c.freq {
            self.freq.backward(b, fc, &g.dq)?;
        }
        Ok(())
    }
}
