//! The tensor: a shape, a dtype, a layout, and memory on the host or on a CUDA device.
//!
//! The dtype and the layout are carried from the start (f32 and NCHW first; f16/bf16 and NHWC come with mixed
//! precision and tensor-core convolutions), so that adding them changes no signature. Ops check shapes, dtypes,
//! layouts and devices where a tensor enters them (`expect_*`), never deep inside a kernel launcher.

use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use half::{bf16, f16};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    U8,
    F32,
    F16,
    BF16,
    /// Accumulators that must not lose precision over a whole data set (running statistics).
    F64,
}

/// What the axes mean. `Plain` is for tensors without image axes (vectors, matrices, parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Plain,
    /// batch, channel, height, width
    Nchw,
    /// batch, height, width, channel (what image decoders give, and what tensor-core convolutions prefer)
    Nhwc,
}

/// Host memory, typed.
#[derive(Clone, Debug)]
pub enum HostData {
    U8(Vec<u8>),
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
}

/// Device memory, typed. It belongs to the CUDA backend that made it.
#[derive(Debug)]
pub enum DeviceData {
    U8(CudaSlice<u8>),
    F32(CudaSlice<f32>),
    F16(CudaSlice<f16>),
    BF16(CudaSlice<bf16>),
    F64(CudaSlice<f64>),
}

#[derive(Debug)]
pub enum Storage {
    Host(HostData),
    Cuda(DeviceData),
}

/// An element type that a tensor can hold.
pub trait Element: bytemuck::Pod + DeviceRepr + ValidAsZeroBits + Default + fmt::Debug + Send + Sync + 'static {
    const DTYPE: DType;
    fn host(d: &HostData) -> Option<&[Self]>;
    fn host_mut(d: &mut HostData) -> Option<&mut Vec<Self>>;
    fn wrap_host(v: Vec<Self>) -> HostData;
    fn device(d: &DeviceData) -> Option<&CudaSlice<Self>>;
    fn device_mut(d: &mut DeviceData) -> Option<&mut CudaSlice<Self>>;
    fn wrap_device(s: CudaSlice<Self>) -> DeviceData;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn host(d: &HostData) -> Option<&[Self]> {
                match d {
                    HostData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn host_mut(d: &mut HostData) -> Option<&mut Vec<Self>> {
                match d {
                    HostData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap_host(v: Vec<Self>) -> HostData {
                HostData::$variant(v)
            }
            fn device(d: &DeviceData) -> Option<&CudaSlice<Self>> {
                match d {
                    DeviceData::$variant(s) => Some(s),
                    _ => None,
                }
            }
            fn device_mut(d: &mut DeviceData) -> Option<&mut CudaSlice<Self>> {
                match d {
                    DeviceData::$variant(s) => Some(s),
                    _ => None,
                }
            }
            fn wrap_device(s: CudaSlice<Self>) -> DeviceData {
                DeviceData::$variant(s)
            }
        }
    };
}
element!(u8, U8);
element!(f32, F32);
element!(f16, F16);
element!(bf16, BF16);
element!(f64, F64);

#[derive(Debug)]
pub struct Tensor {
    shape: Vec<usize>,
    layout: Layout,
    dtype: DType,
    storage: Storage,
}

impl Tensor {
    /// A host tensor that takes ownership of `data`; its length must match the shape.
    pub fn from_vec<T: Element>(shape: &[usize], layout: Layout, data: Vec<T>) -> Result<Tensor> {
        check_layout(shape, layout)?;
        let n: usize = shape.iter().product();
        if data.len() != n {
            shape_err!("{} elements given for shape {shape:?} ({n} elements)", data.len());
        }
        Ok(Tensor { shape: shape.to_vec(), layout, dtype: T::DTYPE, storage: Storage::Host(T::wrap_host(data)) })
    }

    /// A tensor over device memory that a backend has just filled.
    pub fn from_device<T: Element>(shape: &[usize], layout: Layout, data: CudaSlice<T>) -> Result<Tensor> {
        check_layout(shape, layout)?;
        let n: usize = shape.iter().product();
        if data.len() != n {
            shape_err!("device buffer of {} elements for shape {shape:?} ({n} elements)", data.len());
        }
        Ok(Tensor { shape: shape.to_vec(), layout, dtype: T::DTYPE, storage: Storage::Cuda(T::wrap_device(data)) })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn is_host(&self) -> bool {
        matches!(self.storage, Storage::Host(_))
    }

    /// The host elements, if this is a host tensor of element type `T`.
    pub fn host<T: Element>(&self) -> Result<&[T]> {
        match &self.storage {
            Storage::Host(d) => T::host(d).ok_or_else(|| self.dtype_error::<T>()),
            Storage::Cuda(_) => shape_err!("expected a host tensor, got one on the GPU (download it first)"),
        }
    }

    pub fn host_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        let err = self.dtype_error::<T>();
        match &mut self.storage {
            Storage::Host(d) => T::host_mut(d).map(|v| v.as_mut_slice()).ok_or(err),
            Storage::Cuda(_) => shape_err!("expected a host tensor, got one on the GPU (download it first)"),
        }
    }

    /// The device buffer, if this is a device tensor of element type `T`.
    pub fn device<T: Element>(&self) -> Result<&CudaSlice<T>> {
        match &self.storage {
            Storage::Cuda(d) => T::device(d).ok_or_else(|| self.dtype_error::<T>()),
            Storage::Host(_) => shape_err!("expected a tensor on the GPU, got a host tensor (upload it first)"),
        }
    }

    pub fn device_mut<T: Element>(&mut self) -> Result<&mut CudaSlice<T>> {
        let err = self.dtype_error::<T>();
        match &mut self.storage {
            Storage::Cuda(d) => T::device_mut(d).ok_or(err),
            Storage::Host(_) => shape_err!("expected a tensor on the GPU, got a host tensor (upload it first)"),
        }
    }

    fn dtype_error<T: Element>(&self) -> Error {
        Error::Shape(format!("expected dtype {:?}, got {:?} (shape {:?})", T::DTYPE, self.dtype, self.shape))
    }

    /// Checks the boundary conditions of an op: dtype, layout and rank. `what` names the argument.
    /// An f32 host tensor widened to f64: how the CPU backend's f64 mode (gradient checks) takes the output of
    /// an op that is f32 only (the frequency features).
    pub fn to_f64(&self) -> Result<Tensor> {
        let v: Vec<f64> = self.host::<f32>()?.iter().map(|&x| x as f64).collect();
        Tensor::from_vec(&self.shape, self.layout, v)
    }

    pub fn expect(&self, what: &str, dtype: DType, layout: Layout, rank: usize) -> Result<()> {
        if self.dtype != dtype || self.layout != layout || self.shape.len() != rank {
            shape_err!(
                "{what}: expected a rank-{rank} {dtype:?} {layout:?} tensor, got rank-{} {:?} {:?} with shape {:?}",
                self.shape.len(),
                self.dtype,
                self.layout,
                self.shape
            );
        }
        Ok(())
    }
}

fn check_layout(shape: &[usize], layout: Layout) -> Result<()> {
    if layout != Layout::Plain && shape.len() != 4 {
        shape_err!("layout {layout:?} needs 4 axes, got shape {shape:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_vec_checks_length_and_layout() {
        assert!(Tensor::from_vec(&[2, 3], Layout::Plain, vec![0f32; 6]).is_ok());
        let e = Tensor::from_vec(&[2, 3], Layout::Plain, vec![0f32; 5]).unwrap_err();
        assert!(e.to_string().contains("5 elements given for shape [2, 3]"), "{e}");
        let e = Tensor::from_vec(&[2, 3], Layout::Nchw, vec![0f32; 6]).unwrap_err();
        assert!(e.to_string().contains("needs 4 axes"), "{e}");
    }

    #[test]
    fn typed_access_rejects_other_dtypes() {
        let t = Tensor::from_vec(&[4], Layout::Plain, vec![1u8, 2, 3, 4]).unwrap();
        assert_eq!(t.host::<u8>().unwrap(), &[1, 2, 3, 4]);
        let e = t.host::<f32>().unwrap_err();
        assert!(e.to_string().contains("expected dtype F32, got U8"), "{e}");
        assert!(t.device::<u8>().is_err());
    }

    #[test]
    fn expect_names_the_argument() {
        let t = Tensor::from_vec(&[1, 2, 2, 3], Layout::Nhwc, vec![0u8; 12]).unwrap();
        assert!(t.expect("images", DType::U8, Layout::Nhwc, 4).is_ok());
        let e = t.expect("images", DType::F32, Layout::Nhwc, 4).unwrap_err();
        assert!(e.to_string().starts_with("shape error: images: expected a rank-4 F32 Nhwc"), "{e}");
    }
}

/// One parameter tensor inside a model's flat buffer: which buffer, and where in it. Ops take parameters this
/// way, so that parameters (and gradients) stay one buffer each.
#[derive(Clone, Debug)]
pub struct Slice<'a> {
    pub buf: &'a Tensor,
    pub range: std::ops::Range<usize>,
}

impl<'a> Slice<'a> {
    /// The parameter's device memory, if the buffer is on the GPU.
    pub fn device<T: Element>(&self) -> Result<cudarc::driver::CudaView<'a, T>> {
        let buf: &'a Tensor = self.buf;
        let s = buf.device::<T>()?;
        if self.range.end > s.len() {
            shape_err!("slice {:?} of a {}-element buffer", self.range, s.len());
        }
        Ok(s.slice(self.range.clone()))
    }

    pub fn host<T: Element>(&self) -> Result<&'a [T]> {
        let buf: &'a Tensor = self.buf;
        let v = buf.host::<T>()?;
        v.get(self.range.clone())
            .ok_or_else(|| Error::Shape(format!("slice {:?} of a {}-element buffer", self.range, v.len())))
    }
    pub fn len(&self) -> usize {
        self.range.len()
    }
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}
