//! Choosing the compute device from the config string: the only place a backend is named.

use burn::tensor::Device;

const ALLOWED: &str = "one of \"cpu\" (burn's flex backend), \"libtorch\" (LibTorch on the CPU), \
                       \"cuda:N\" (LibTorch on GPU N); the last two need a build with `--features tch`";

/// Parses `"cpu"`, `"flex"`, `"libtorch"` or `"cuda:N"`; the error says what is allowed.
pub fn parse_device(text: &str) -> Result<Device, String> {
    match text {
        "cpu" | "flex" => Ok(Device::flex()),
        "libtorch" => libtorch(None),
        _ => match text.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => libtorch(Some(index)),
            _ => Err(ALLOWED.to_string()),
        },
    }
}

#[cfg(feature = "tch")]
fn libtorch(cuda: Option<usize>) -> Result<Device, String> {
    Ok(match cuda {
        None => Device::libtorch(),
        Some(index) => Device::libtorch_cuda(index),
    })
}

#[cfg(not(feature = "tch"))]
fn libtorch(_cuda: Option<usize>) -> Result<Device, String> {
    Err(
        "this build has no LibTorch backend: build with `--features tch` (and LIBTORCH set) \
         to use \"libtorch\" or \"cuda:N\", or use \"cpu\""
            .to_string(),
    )
}
