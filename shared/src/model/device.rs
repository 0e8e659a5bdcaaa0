//! The compute device a command runs on, from its command-line spelling (`--device`).
//!
//! `cpu` is the default everywhere. `cuda` (GPU 0) and `cuda:N` need a build with the crate's
//! `cuda` feature (`cargo build --release -p ruvdllm-node --features cuda`, which needs the CUDA
//! toolkit's `nvcc`); without it they are refused with that instruction, never silently run on
//! the CPU.

use candle_core::Device;

use super::Error;

/// Whether this build was compiled with CUDA support (the `cuda` feature).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

/// A parsed `--device` value, before the device is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    /// `cpu`, `cuda` (= `cuda:0`) or `cuda:N`, case-insensitive.
    fn from_str(s: &str) -> Result<Self, Error> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceSpec::Cuda).map_err(|_| {
                    Error::Device(format!(
                        "device `{s}`: the GPU ordinal must be a non-negative integer, as in cuda:1"
                    ))
                }),
                None => Err(Error::Device(format!(
                    "unknown device `{s}` (expected cpu, cuda or cuda:N)"
                ))),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device: the CPU always; a GPU only in a `cuda` build with that GPU present.
    pub fn open(self) -> Result<Device, Error> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !CUDA_BUILD {
                    return Err(Error::Device(format!(
                        "device cuda:{n}: this binary was built without CUDA support; rebuild \
                         with `--features cuda` (needs the CUDA toolkit's nvcc)"
                    )));
                }
                Device::new_cuda(n)
                    .map_err(|e| Error::Device(format!("device cuda:{n} cannot be opened: {e}")))
            }
        }
    }
}

/// Parses and opens a `--device` value.
pub fn open(spec: &str) -> Result<Device, Error> {
    spec.parse::<DeviceSpec>()?.open()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_parse_and_bad_ones_are_refused_with_a_reason() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!(" CPU ".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        let err = "tpu".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(err.contains("expected cpu, cuda or cuda:N"), "{err}");
        let err = "cuda:x".parse::<DeviceSpec>().unwrap_err().to_string();
        assert!(err.contains("ordinal"), "{err}");
        assert!("cuda:-1".parse::<DeviceSpec>().is_err());
        assert!(matches!(open("cpu").unwrap(), Device::Cpu));
    }

    #[test]
    fn cuda_is_refused_with_the_rebuild_instruction_when_not_compiled_in() {
        if CUDA_BUILD {
            return; // a cuda build on a machine with or without a GPU: covered by `open` itself
        }
        let err = open("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
