//! EfficientNet B0 to B7 (Tan and Le 2019) as timm's efficientnet_bN builds it: the B0 stage table, compound
//! scaling of width (channels rounded to multiples of 8) and depth (repeats rounded up), MBConv blocks with
//! squeeze-and-excitation (ratio 0.25 of the block's input channels), SiLU, batch norm (eps 1e-5, momentum
//! 0.1), drop-connect growing linearly with depth, and a 1x1 head convolution before global average pooling.
//! Parameter names follow timm (conv_stem, bn1, blocks.i.j.*, conv_head, bn2) so that its weights load by name.
//! `tiny` (width 0.25, depth 0.34, input 64) is small enough to train on a CPU in tests.

use crate::backend::head::Mode;
use crate::backend::{Act, Conv2d};
use crate::error::{Error, Result};
use crate::model::layers::{Builder, Bwd, ConvBnAct, ConvBnActCache, Fwd, SeCache, SqueezeExcite};
use crate::tensor::Tensor;
use std::sync::Arc;

/// (expand ratio, kernel, stride, output channels, repeats) of B0's seven stages.
const B0_STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
];

#[derive(Clone, Debug, PartialEq)]
pub struct EfficientNetConfig {
    pub name: String,
    pub width: f64,
    pub depth: f64,
    /// The input size the variant was designed for.
    pub resolution: usize,
    pub drop_connect: f32,
}

impl EfficientNetConfig {
    /// "b0" to "b7", or "tiny".
    pub fn named(name: &str) -> Result<Self> {
        let (width, depth, resolution, drop) = match name {
            "b0" => (1.0, 1.0, 224, 0.2),
            "b1" => (1.0, 1.1, 240, 0.2),
            "b2" => (1.1, 1.2, 260, 0.3),
            "b3" => (1.2, 1.4, 300, 0.3),
            "b4" => (1.4, 1.8, 380, 0.4),
            "b5" => (1.6, 2.2, 456, 0.4),
            "b6" => (1.8, 2.6, 528, 0.5),
            "b7" => (2.0, 3.1, 600, 0.5),
            "tiny" => (0.25, 0.34, 64, 0.0),
            other => return Err(Error::Invalid(format!("unknown EfficientNet '{other}': choose b0 to b7 or tiny"))),
        };
        Ok(EfficientNetConfig { name: name.into(), width, depth, resolution, drop_connect: drop })
    }

    /// timm's round_channels: to a multiple of 8, at least 8, never more than 10% below.
    pub fn channels(&self, c: usize) -> usize {
        let v = c as f64 * self.width;
        let r = (((v + 4.0) as usize) / 8 * 8).max(8);
        if (r as f64) < 0.9 * v {
            r + 8
        } else {
            r
        }
    }

    pub fn repeats(&self, r: usize) -> usize {
        (r as f64 * self.depth).ceil() as usize
    }
}

/// One MBConv block: [1x1 expand] -> depthwise kxk -> SE -> 1x1 project, with a residual when the shape allows.
pub struct MbConv {
    expand: Option<ConvBnAct>,
    dw: ConvBnAct,
    se: SqueezeExcite,
    project: ConvBnAct,
    residual: bool,
    drop: f32,
    /// Distinguishes this block's drop-connect draws from the others'.
    index: u32,
}

pub struct MbConvCache {
    expand: Option<ConvBnActCache>,
    dw: ConvBnActCache,
    se: SeCache,
    project: ConvBnActCache,
    keep: Option<Vec<f32>>,
}

impl MbConv {
    /// timm's names: DepthwiseSeparable (expand 1): conv_dw, bn1, se, conv_pw, bn2; InvertedResidual:
    /// conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        b: &mut Builder,
        name: &str,
        cin: usize,
        cout: usize,
        expand: usize,
        k: usize,
        stride: usize,
        drop: f32,
        index: u32,
    ) -> Self {
        let mid = cin * expand;
        let silu = Some(Act::Silu);
        let n = |s: &str| format!("{name}.{s}");
        let (expand_layer, dw_names, project_names) = if expand == 1 {
            (None, ("conv_dw", "bn1"), ("conv_pw", "bn2"))
        } else {
            (
                Some(ConvBnAct::new(b, &n("conv_pw"), Some(n("bn1").as_str()), Conv2d::new(cin, mid, 1, 1, 1), silu)),
                ("conv_dw", "bn2"),
                ("conv_pwl", "bn3"),
            )
        };
        let dw = ConvBnAct::new(
            b,
            &n(dw_names.0),
            Some(n(dw_names.1).as_str()),
            Conv2d::new(mid, mid, k, stride, mid),
            silu,
        );
        let se = SqueezeExcite::new(b, &n("se"), mid, ((cin as f64) * 0.25).round().max(1.0) as usize);
        let project = ConvBnAct::new(
            b,
            &n(project_names.0),
            Some(n(project_names.1).as_str()),
            Conv2d::new(mid, cout, 1, 1, 1),
            None,
        );
        MbConv { expand: expand_layer, dw, se, project, residual: stride == 1 && cin == cout, drop, index }
    }

    pub fn forward(&self, f: &mut Fwd, x: Arc<Tensor>) -> Result<(Arc<Tensor>, MbConvCache)> {
        let (h, expand) = match &self.expand {
            Some(e) => {
                let (h, c) = e.forward(f, x.clone())?;
                (h, Some(c))
            }
            None => (x.clone(), None),
        };
        let (h, dw) = self.dw.forward(f, h)?;
        let (h, se) = self.se.forward(f, h)?;
        let (mut h, project) = self.project.forward(f, h)?;
        let mut keep = None;
        if self.residual {
            if let (Mode::Train { seed }, true) = (f.mode, self.drop > 0.0) {
                // Drop-connect: each sample keeps the block with probability 1 - drop, rescaled to keep the mean.
                let k: Vec<f32> = (0..x.shape()[0])
                    .map(|i| {
                        if crate::rng::counter_uniform(seed, 100 + self.index, i as u32, 0) < self.drop {
                            0.0
                        } else {
                            1.0 / (1.0 - self.drop)
                        }
                    })
                    .collect();
                h = Arc::new(f.be.sample_scale(&h, &k)?);
                keep = Some(k);
            }
            h = Arc::new(f.be.add(&h, &x)?);
        }
        Ok((h, MbConvCache { expand, dw, se, project, keep }))
    }

    pub fn backward(&self, b: &mut Bwd, c: MbConvCache, dy: &Tensor) -> Result<Tensor> {
        let scaled;
        let dh = match &c.keep {
            Some(k) => {
                scaled = b.be.sample_scale(dy, k)?;
                &scaled
            }
            None => dy,
        };
        let dh = self.project.backward(b, c.project, dh)?;
        let dh = self.se.backward(b, c.se, &dh)?;
        let mut dx = self.dw.backward(b, c.dw, &dh)?;
        if let (Some(e), Some(ec)) = (&self.expand, c.expand) {
            dx = e.backward(b, ec, &dx)?;
        }
        if self.residual {
            dx = b.be.add(&dx, dy)?;
        }
        Ok(dx)
    }
}

/// The spatial branch: stem, MBConv stages, head convolution, global average pooling to `features` values.
pub struct EfficientNet {
    pub cfg: EfficientNetConfig,
    stem: ConvBnAct,
    blocks: Vec<MbConv>,
    head: ConvBnAct,
    pub features: usize,
}

pub struct EfficientNetCache {
    stem: ConvBnActCache,
    blocks: Vec<MbConvCache>,
    head: ConvBnActCache,
    head_shape: [usize; 4],
}

impl EfficientNet {
    /// Registers every parameter under `prefix` (e.g. "spatial.").
    pub fn new(b: &mut Builder, cfg: EfficientNetConfig, prefix: &str) -> Self {
        let silu = Some(Act::Silu);
        let p = |s: &str| format!("{prefix}{s}");
        let stem_c = cfg.channels(32);
        let stem = ConvBnAct::new(b, &p("conv_stem"), Some(p("bn1").as_str()), Conv2d::new(3, stem_c, 3, 2, 1), silu);
        let total: usize = B0_STAGES.iter().map(|s| cfg.repeats(s.4)).sum();
        let mut blocks = Vec::new();
        let mut cin = stem_c;
        for (i, &(e, k, s, c, r)) in B0_STAGES.iter().enumerate() {
            let cout = cfg.channels(c);
            for j in 0..cfg.repeats(r) {
                let drop = cfg.drop_connect * blocks.len() as f32 / total as f32;
                let stride = if j == 0 { s } else { 1 };
                let idx = blocks.len() as u32;
                blocks.push(MbConv::new(b, &p(&format!("blocks.{i}.{j}")), cin, cout, e, k, stride, drop, idx));
                cin = cout;
            }
        }
        let features = cfg.channels(1280);
        let head =
            ConvBnAct::new(b, &p("conv_head"), Some(p("bn2").as_str()), Conv2d::new(cin, features, 1, 1, 1), silu);
        EfficientNet { cfg, stem, blocks, head, features }
    }

    /// NCHW images (normalized) to [N, features].
    pub fn forward(&self, f: &mut Fwd, x: Arc<Tensor>) -> Result<(Tensor, EfficientNetCache)> {
        let (mut h, stem) = self.stem.forward(f, x)?;
        let mut caches = Vec::with_capacity(self.blocks.len());
        for blk in &self.blocks {
            let (o, c) = blk.forward(f, h)?;
            h = o;
            caches.push(c);
        }
        let (h, head) = self.head.forward(f, h)?;
        let s = h.shape();
        let head_shape = [s[0], s[1], s[2], s[3]];
        Ok((f.be.avg_pool(&h)?, EfficientNetCache { stem, blocks: caches, head, head_shape }))
    }

    /// From d loss / d features; the input gradient is not needed (the images are data).
    pub fn backward(&self, b: &mut Bwd, c: EfficientNetCache, dfeat: &Tensor) -> Result<()> {
        let dh = b.be.avg_pool_backward(dfeat, c.head_shape)?;
        let mut dh = self.head.backward(b, c.head, &dh)?;
        for (blk, cache) in self.blocks.iter().zip(c.blocks).rev() {
            dh = blk.backward(b, cache, &dh)?;
        }
        self.stem.backward(b, c.stem, &dh)?;
        Ok(())
    }
}
