//! Records which build profile compiled the runner, so every measurement says what build
//! took it (a debug build's latencies are not a release build's). With the `tch` feature,
//! also records LibTorch's library folder in the run path of this package's tests and
//! benches (see crates/train/build.rs).

fn main() {
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    let opt_level = std::env::var("OPT_LEVEL").unwrap_or_else(|_| "?".into());
    println!("cargo:rustc-env=COMPRESS_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=COMPRESS_BUILD_OPT_LEVEL={opt_level}");
    println!("cargo:rerun-if-changed=build.rs");
    // Set by torch-sys (`links = "tch"`) for the packages that depend on it directly.
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
