//! Choosing the compute device from the config string: the only place a backend is named.
//! The device is resolved once, when a stage is loaded, and passed down from there.

use burn::tensor::Device;

/// A device string that this build cannot serve.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "one of \"cpu\" (burn's flex backend), \"libtorch\" (LibTorch on the CPU), \"cuda:N\" \
         (LibTorch on GPU N); the last two need a build with `--features tch`"
    )]
    Unknown,
    #[error(
        "this build has no LibTorch backend: build with `--features tch` (and LIBTORCH set) to \
         use \"libtorch\" or \"cuda:N\", or use \"cpu\""
    )]
    NoLibTorch,
}

/// Parses `"cpu"`, `"flex"`, `"libtorch"` or `"cuda:N"`.
pub fn parse_device(text: &str) -> Result<Device, DeviceError> {
    match text {
        "cpu" | "flex" => Ok(Device::flex()),
        "libtorch" => libtorch(None),
        _ => match text.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => libtorch(Some(index)),
            _ => Err(DeviceError::Unknown),
        },
    }
}

#[cfg(feature = "tch")]
fn libtorch(cuda: Option<usize>) -> Result<Device, DeviceError> {
    Ok(match cuda {
        None => Device::libtorch(),
        Some(index) => Device::libtorch_cuda(index),
    })
}

#[cfg(not(feature = "tch"))]
fn libtorch(_cuda: Option<usize>) -> Result<Device, DeviceError> {
    Err(DeviceError::NoLibTorch)
}
