//! With the `tch` feature, records LibTorch's library folder (torch-sys reports the one it
//! linked, whichever route found it) in the binary's run path: `train` then starts without
//! LD_LIBRARY_PATH, and the tests, which run it with a cleared environment, do too.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
