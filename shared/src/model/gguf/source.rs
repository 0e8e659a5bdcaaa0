//! [`WeightSource`] over a GGUF file: llama.cpp names, shapes checked against the tensor table
//! before any data is read, q/k rows put back into HF order for `llada`.

use std::fs::File;
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QTensor, ggml_file};
use candle_core::{Device, Tensor};

use super::permute::{self, Direction};
use crate::model::Error as ModelError;
use crate::model::config::Arch;
use crate::model::weights::{LayerRole, Naming, Role, Weight, WeightSource};

/// The weights of one open GGUF file.
pub struct GgufSource {
    content: Content,
    file: Mutex<File>,
    device: Device,
    /// Undo the converter's q/k permutation (`llada`); `dream` is stored in HF order.
    unpermute: bool,
    n_heads: usize,
    n_kv_heads: usize,
}

fn load_err(name: &str, expected: &[usize], reason: impl ToString) -> ModelError {
    ModelError::Load {
        name: name.to_string(),
        expected: expected.to_vec(),
        reason: reason.to_string(),
    }
}

impl GgufSource {
    pub fn new(
        content: Content,
        file: File,
        device: &Device,
        arch: Arch,
        heads: (usize, usize),
    ) -> Self {
        Self {
            content,
            file: Mutex::new(file),
            device: device.clone(),
            unpermute: arch == Arch::Llada,
            n_heads: heads.0,
            n_kv_heads: heads.1,
        }
    }

    pub fn content(&self) -> &Content {
        &self.content
    }

    /// The ggml type of a tensor, if present.
    pub fn dtype_of(&self, role: Role) -> Option<GgmlDType> {
        self.content
            .tensor_infos
            .get(&Naming::Gguf.name(role))
            .map(|i| i.ggml_dtype)
    }

    /// Heads to un-permute by, for the tensors the converter permuted.
    fn permuted_heads(&self, role: Role) -> Option<usize> {
        if !self.unpermute {
            return None;
        }
        match role {
            Role::Layer(_, LayerRole::Q | LayerRole::QBias) => Some(self.n_heads),
            Role::Layer(_, LayerRole::K | LayerRole::KBias) => Some(self.n_kv_heads),
            _ => None,
        }
    }

    /// Checks the name and shape in the tensor table, then reads the tensor onto `device`.
    fn read(&self, role: Role, expected: &[usize], device: &Device) -> Result<QTensor, ModelError> {
        let name = Naming::Gguf.name(role);
        let info =
            self.content
                .tensor_infos
                .get(&name)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: name.clone(),
                    expected: expected.to_vec(),
                })?;
        if info.shape.dims() != expected {
            return Err(ModelError::TensorShape {
                name,
                expected: expected.to_vec(),
                got: info.shape.dims().to_vec(),
            });
        }
        let mut f = self
            .file
            .lock()
            .map_err(|_| load_err(&name, expected, "file lock poisoned"))?;
        info.read(&mut *f, self.content.tensor_data_offset, device)
            .map_err(|e| load_err(&name, expected, e))
    }
}

impl WeightSource for GgufSource {
    fn matrix(&self, role: Role, out: usize, inp: usize) -> Result<Weight, ModelError> {
        let expected = [out, inp];
        let q = match self.permuted_heads(role) {
            None => self.read(role, &expected, &self.device)?,
            Some(n_head) => {
                // Whole rows move, so reorder the stored bytes: exact for every ggml type.
                let name = Naming::Gguf.name(role);
                let q = self.read(role, &expected, &Device::Cpu)?;
                let dt = q.dtype();
                if !inp.is_multiple_of(dt.block_size()) {
                    return Err(load_err(
                        &name,
                        &expected,
                        format!("row of {inp} is not a whole number of {dt:?} blocks"),
                    ));
                }
                let row_bytes = inp / dt.block_size() * dt.type_size();
                let raw = q.data().map_err(|e| load_err(&name, &expected, e))?;
                let raw = permute::permute_rows(&raw, out, row_bytes, n_head, Direction::FromGguf)
                    .map_err(|e| load_err(&name, &expected, e))?;
                ggml_file::qtensor_from_ggml(dt, &raw, expected.to_vec(), &self.device)
                    .map_err(|e| load_err(&name, &expected, e))?
            }
        };
        Ok(match q.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Weight::Dense(q.dequantize(&self.device)?)
            }
            _ => Weight::Quant(Arc::new(q)),
        })
    }

    fn vector(&self, role: Role, len: usize) -> Result<Tensor, ModelError> {
        let q = self.read(role, &[len], &Device::Cpu)?;
        let v = q.dequantize(&Device::Cpu)?;
        let v = match self.permuted_heads(role) {
            None => v,
            Some(n_head) => {
                let name = Naming::Gguf.name(role);
                let map = permute::row_map(len, n_head, Direction::FromGguf)
                    .map_err(|e| load_err(&name, &[len], e))?;
                let idx: Vec<u32> = map.into_iter().map(|i| i as u32).collect();
                v.index_select(&Tensor::new(idx, &Device::Cpu)?, 0)?
            }
        };
        Ok(v.to_device(&self.device)?)
    }

    fn contains(&self, role: Role) -> bool {
        self.content
            .tensor_infos
            .contains_key(&Naming::Gguf.name(role))
    }

    fn naming(&self) -> Naming {
        Naming::Gguf
    }
}
