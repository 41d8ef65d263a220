//! 2-D convolution on cuDNN: forward, backward data, backward filter, each with cuDNN's heuristic choice of
//! algorithm and its workspace, planned once per shape and cached. FMA math (no TF32): results in plain fp32, as the CPU reference computes them.

use super::CudaBackend;
use crate::backend::conv::{Conv2d, ConvBackward, ConvDims};
use crate::backend::Slots;
use crate::error::{Error, Result};
use crate::tensor::{Layout, Slice, Tensor};
use cudarc::cudnn::{
    sys, ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, FilterDescriptor, TensorDescriptor,
};
use cudarc::driver::CudaSlice;
use std::collections::hash_map::{Entry, HashMap};
use std::sync::Arc;

fn err(what: &str) -> impl FnOnce(cudarc::cudnn::CudnnError) -> Error + '_ {
    move |e| Error::Cuda(format!("cuDNN {what}: {e:?}"))
}

struct Descs {
    x: TensorDescriptor<f32>,
    y: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    conv: ConvDescriptor<f32>,
}

/// One convolution at one input size: its descriptors and, once asked for, each direction's algorithm and
/// workspace size. Made once per shape (a network has a few dozen) instead of on every call.
pub struct ConvPlan {
    descs: Descs,
    fwd: Option<(sys::cudnnConvolutionFwdAlgo_t, usize)>,
    data: Option<(sys::cudnnConvolutionBwdDataAlgo_t, usize)>,
    filter: Option<(sys::cudnnConvolutionBwdFilterAlgo_t, usize)>,
}

/// The plans by shape and one workspace that grows to the largest asked for: every op runs on the backend's one
/// stream, in order, so one buffer serves them all.
#[derive(Default)]
pub struct ConvCache {
    plans: Plans,
    workspace: Option<CudaSlice<u8>>,
}

type Plans = HashMap<(Conv2d, ConvDims), ConvPlan>;

/// The plan of a shape, made on first use.
fn plan_of<'a>(
    plans: &'a mut Plans,
    dnn: &Arc<cudarc::cudnn::Cudnn>,
    c: &Conv2d,
    d: ConvDims,
) -> Result<&'a mut ConvPlan> {
    Ok(match plans.entry((*c, d)) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(ConvPlan { descs: descriptors(dnn, c, d)?, fwd: None, data: None, filter: None }),
    })
}

/// The algorithm and workspace size of one direction, chosen by cuDNN's heuristic on first use and kept in `slot`.
fn chosen<A: Copy>(
    slot: &mut Option<(A, usize)>,
    what: &str,
    pick: impl FnOnce() -> std::result::Result<A, cudarc::cudnn::CudnnError>,
    size: impl FnOnce(A) -> std::result::Result<usize, cudarc::cudnn::CudnnError>,
) -> Result<(A, usize)> {
    if let Some(a) = *slot {
        return Ok(a);
    }
    let algo = pick().map_err(|e| Error::Cuda(format!("cuDNN {what} algorithm: {e:?}")))?;
    let bytes = size(algo).map_err(|e| Error::Cuda(format!("cuDNN {what} workspace: {e:?}")))?;
    Ok(*slot.insert((algo, bytes)))
}

/// A workspace of at least `bytes` (cuDNN writes it before it reads it: no need to clear it).
fn workspace<'a>(ws: &'a mut Option<CudaSlice<u8>>, be: &CudaBackend, bytes: usize) -> Result<&'a mut CudaSlice<u8>> {
    if ws.as_ref().is_none_or(|w| w.len() < bytes.max(1)) {
        // SAFETY: scratch memory, never read before cuDNN writes it.
        *ws = Some(unsafe { be.stream().alloc::<u8>(bytes.max(1)) }?);
    }
    Ok(ws.as_mut().expect("just made"))
}

/// The descriptors of one convolution.
fn descriptors(dnn: &Arc<cudarc::cudnn::Cudnn>, c: &Conv2d, d: ConvDims) -> Result<Descs> {
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let i = |v: usize| v as i32;
    let x = dnn.create_4d_tensor::<f32>(nchw, [i(d.n), i(c.cin), i(d.h), i(d.w)]).map_err(err("input descriptor"))?;
    let y =
        dnn.create_4d_tensor::<f32>(nchw, [i(d.n), i(c.cout), i(d.oh), i(d.ow)]).map_err(err("output descriptor"))?;
    let [a, b, kh, kw] = c.weight_shape();
    let w = dnn.create_4d_filter::<f32>(nchw, [i(a), i(b), i(kh), i(kw)]).map_err(err("filter descriptor"))?;
    let p = c.pad() as i32;
    let s = c.stride as i32;
    let mode = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
    let mut conv = dnn.create_conv2d::<f32>([p, p], [s, s], [1, 1], mode).map_err(err("convolution descriptor"))?;
    conv.set_group_count(c.groups as i32).map_err(err("group count"))?;
    conv.set_math_type(sys::cudnnMathType_t::CUDNN_FMA_MATH).map_err(err("math type"))?;
    Ok(Descs { x, y, w, conv })
}

/// The forward on checked arguments (`d` from `check`).
pub fn forward(be: &CudaBackend, x: &Tensor, w: &Slice, c: &Conv2d, d: ConvDims) -> Result<Tensor> {
    let mut guard = be.cudnn()?;
    let h = &mut *guard;
    let plan = plan_of(&mut h.convs.plans, &h.dnn, c, d)?;
    let ds = &plan.descs;
    let op = ConvForward { conv: &ds.conv, x: &ds.x, w: &ds.w, y: &ds.y };
    let (algo, bytes) = chosen(&mut plan.fwd, "forward", || op.pick_algorithm(), |a| op.get_workspace_size(a))?;
    let ws = workspace(&mut h.convs.workspace, be, bytes)?;
    let mut y = be.output::<f32>(d.n * c.cout * d.oh * d.ow)?;
    let wv = w.device::<f32>()?;
    // SAFETY: the descriptors describe exactly these buffers (sizes checked by the caller, `check`).
    unsafe { op.launch(algo, Some(ws), (1.0, 0.0), x.device::<f32>()?, &wv, &mut y) }.map_err(err("forward"))?;
    Tensor::from_device(&[d.n, c.cout, d.oh, d.ow], Layout::Nchw, y)
}

/// The backward on checked arguments (`d` from `check_backward`).
pub fn backward(be: &CudaBackend, a: &ConvBackward, dw: Slots<1>, d: ConvDims) -> Result<Tensor> {
    let (ConvBackward { x, w, dy, c }, Slots { buf: grads, at: [dw] }) = (a, dw);
    let mut guard = be.cudnn()?;
    let h = &mut *guard;
    let wv = w.device::<f32>()?;
    let dyv = dy.device::<f32>()?;

    let plan = plan_of(&mut h.convs.plans, &h.dnn, c, d)?;
    let ds = &plan.descs;
    let op = ConvBackwardData { conv: &ds.conv, dx: &ds.x, w: &ds.w, dy: &ds.y };
    let (algo, bytes) = chosen(&mut plan.data, "backward-data", || op.pick_algorithm(), |a| op.get_workspace_size(a))?;
    let mut dx = be.output::<f32>(x.numel())?;
    let ws = workspace(&mut h.convs.workspace, be, bytes)?;
    // SAFETY: as in forward.
    unsafe { op.launch(algo, Some(ws), (1.0, 0.0), &mut dx, &wv, dyv) }.map_err(err("backward data"))?;

    let op = ConvBackwardFilter { conv: &ds.conv, x: &ds.x, dw: &ds.w, dy: &ds.y };
    let (algo, bytes) =
        chosen(&mut plan.filter, "backward-filter", || op.pick_algorithm(), |a| op.get_workspace_size(a))?;
    let ws = workspace(&mut h.convs.workspace, be, bytes)?;
    let mut gw = grads.device_mut::<f32>()?.slice_mut(dw);
    // SAFETY: as in forward; the gradient slot holds the filter's values.
    unsafe { op.launch(algo, Some(ws), (1.0, 0.0), x.device::<f32>()?, &mut gw, dyv) }
        .map_err(err("backward filter"))?;
    Tensor::from_device(x.shape(), Layout::Nchw, dx)
}
