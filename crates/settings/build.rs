//! Records which build profile compiled the settings crate, so every measurement says what
//! build took it (a debug build's latencies are not a release build's): see
//! `context::build`.

fn main() {
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    let opt_level = std::env::var("OPT_LEVEL").unwrap_or_else(|_| "?".into());
    println!("cargo:rustc-env=COMPRESS_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=COMPRESS_BUILD_OPT_LEVEL={opt_level}");
    println!("cargo:rerun-if-changed=build.rs");
}
