//! Choosing the compute device from the config string: the only place a backend is named.
//! The device is resolved once, when a stage is loaded, and passed down from there.

use burn::tensor::Device;

/// A device string that this build or this machine cannot serve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "one of \"cpu\" (burn's flex backend), \"libtorch\" (LibTorch on the CPU), \"cuda\" or \
         \"cuda:N\" (LibTorch on GPU N); the last three need a build with `--features tch`"
    )]
    Unknown,
    #[error(
        "this build has no LibTorch backend: build with `cargo run -p train --features tch` (with \
         LIBTORCH set, see README \"GPU clusters\") to use \"libtorch\" or \"cuda\", or use \"cpu\""
    )]
    NoLibTorch,
    #[error(
        "LibTorch sees no CUDA device here (a CPU-only LibTorch, no GPU, no driver, or \
         CUDA_VISIBLE_DEVICES empty: under Slurm ask for one with the launcher's `gpus`); use \
         \"libtorch\" or \"cpu\" on this machine"
    )]
    NoCuda,
    #[error("GPU {index} asked for, but LibTorch sees {count} CUDA device(s) (0..{count})")]
    NoSuchGpu { index: usize, count: usize },
}

/// Which backend a device string names, without touching any backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Flex,
    LibTorchCpu,
    /// LibTorch on CUDA device N (of those `CUDA_VISIBLE_DEVICES` shows).
    Cuda(usize),
}

impl Backend {
    /// Parses `"cpu"` / `"flex"`, `"libtorch"`, `"cuda"` (GPU 0) or `"cuda:N"`.
    pub fn parse(text: &str) -> Result<Self, DeviceError> {
        match text {
            "cpu" | "flex" => Ok(Self::Flex),
            "libtorch" => Ok(Self::LibTorchCpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match text.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(index)) => Ok(Self::Cuda(index)),
                _ => Err(DeviceError::Unknown),
            },
        }
    }
}

/// Parses a device string (see [`Backend::parse`]) and checks this build can serve it. Whether
/// this machine has the GPU is [`check_present`]'s job: a config is validated where it is
/// written (a cluster's login node has no GPU), the device is checked where the stage runs.
pub fn parse_device(text: &str) -> Result<Device, DeviceError> {
    match Backend::parse(text)? {
        Backend::Flex => Ok(Device::flex()),
        backend => libtorch(backend),
    }
}

/// [`parse_device`], then [`check_present`]: for work that starts here and now.
pub fn open_device(text: &str) -> Result<Device, DeviceError> {
    let device = parse_device(text)?;
    check_present(text)?;
    Ok(device)
}

/// Whether this machine has what the device string names (a CUDA device LibTorch can see);
/// called before a stage creates anything, so a missing GPU is one clear error.
pub fn check_present(text: &str) -> Result<(), DeviceError> {
    match Backend::parse(text)? {
        Backend::Cuda(index) => match cuda_devices() {
            0 => Err(DeviceError::NoCuda),
            count if index >= count => Err(DeviceError::NoSuchGpu { index, count }),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(feature = "tch")]
fn cuda_devices() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

#[cfg(not(feature = "tch"))]
fn cuda_devices() -> usize {
    0
}

// burn 0.22 marks burn-tch deprecated in favour of its CubeCL backends; LibTorch is still what
// our users' clusters run (see ARCHITECTURE.md, "Backends").
#[cfg(feature = "tch")]
#[allow(deprecated)]
fn libtorch(backend: Backend) -> Result<Device, DeviceError> {
    Ok(match backend {
        Backend::Cuda(index) => Device::libtorch_cuda(index),
        _ => Device::libtorch(),
    })
}

#[cfg(not(feature = "tch"))]
fn libtorch(_backend: Backend) -> Result<Device, DeviceError> {
    Err(DeviceError::NoLibTorch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_strings_parse_to_their_backends() {
        assert_eq!(Backend::parse("cpu"), Ok(Backend::Flex));
        assert_eq!(Backend::parse("flex"), Ok(Backend::Flex));
        assert_eq!(Backend::parse("libtorch"), Ok(Backend::LibTorchCpu));
        assert_eq!(Backend::parse("cuda"), Ok(Backend::Cuda(0)));
        assert_eq!(Backend::parse("cuda:3"), Ok(Backend::Cuda(3)));
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", ""] {
            assert_eq!(Backend::parse(bad), Err(DeviceError::Unknown), "{bad}");
        }
    }

    #[cfg(not(feature = "tch"))]
    #[test]
    fn libtorch_without_the_feature_names_the_feature() {
        for text in ["libtorch", "cuda", "cuda:0"] {
            let message = parse_device(text).unwrap_err().to_string();
            assert!(message.contains("--features tch"), "{message}");
        }
    }

    #[cfg(feature = "tch")]
    #[test]
    fn cuda_is_refused_where_libtorch_sees_no_gpu() {
        if tch::Cuda::device_count() == 0 {
            // Valid where it is written, refused where it would run.
            assert!(parse_device("cuda").is_ok());
            assert_eq!(open_device("cuda").unwrap_err(), DeviceError::NoCuda);
        }
        assert!(open_device("libtorch").is_ok());
    }
}
