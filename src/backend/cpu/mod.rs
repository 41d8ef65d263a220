//! The CPU backend: the reference implementation of every op (rayon over the batch). It trains too, slowly.

mod preprocess;

use super::{Backend, BackendOptions, ChannelNorm, Preprocessed};
use crate::error::Result;
use crate::tensor::{Element, HostData, Layout, Storage, Tensor};

pub struct CpuBackend {
    opts: BackendOptions,
}

impl CpuBackend {
    pub fn new(opts: BackendOptions) -> Self {
        CpuBackend { opts }
    }

    /// A host buffer for an op to write: NaN-poisoned when asked (tests), else zeroed.
    fn output<T: Element>(&self, len: usize) -> Vec<T> {
        if self.opts.poison_outputs {
            let ones: Vec<u8> = vec![0xFF; len * std::mem::size_of::<T>()];
            bytemuck::pod_collect_to_vec(&ones)
        } else {
            vec![T::default(); len]
        }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} rayon threads)", rayon::current_num_threads())
    }
    fn is_cuda(&self) -> bool {
        false
    }
    fn upload(&self, t: &Tensor) -> Result<Tensor> {
        self.download(t)
    }
    fn download(&self, t: &Tensor) -> Result<Tensor> {
        match t.storage() {
            Storage::Host(d) => Ok(match d {
                HostData::U8(v) => Tensor::from_vec(t.shape(), t.layout(), v.clone())?,
                HostData::F32(v) => Tensor::from_vec(t.shape(), t.layout(), v.clone())?,
                HostData::F16(v) => Tensor::from_vec(t.shape(), t.layout(), v.clone())?,
                HostData::BF16(v) => Tensor::from_vec(t.shape(), t.layout(), v.clone())?,
            }),
            Storage::Cuda(_) => shape_err!("the CPU backend was given a GPU tensor; download it with its CUDA backend"),
        }
    }
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn preprocess(&self, images: &Tensor, norm: &ChannelNorm, want_raw: bool) -> Result<Preprocessed> {
        let d = super::preprocess::check(images, norm)?;
        let len = d.n * d.c * d.h * d.w;
        let mut out = self.output::<f32>(len);
        let mut raw = want_raw.then(|| self.output::<f32>(len));
        preprocess::preprocess(images.host::<u8>()?, d, norm, &mut out, raw.as_deref_mut());
        Ok(Preprocessed {
            norm: Tensor::from_vec(&d.nchw(), Layout::Nchw, out)?,
            raw: raw.map(|r| Tensor::from_vec(&d.nchw(), Layout::Nchw, r)).transpose()?,
        })
    }
}
