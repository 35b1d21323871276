//! Link instructions the native dependencies do not give themselves.
//!
//! espeak-rs-sys (under piper-rs) builds espeak-ng against the system's libsonic
//! (`libsonic-dev`) instead of cloning it, but does not tell the linker about it; without
//! this, linking fails on `sonicCreateStream` (see shared notes/models.md).

fn main() {
    println!("cargo:rustc-link-lib=sonic");
    println!("cargo:rerun-if-changed=build.rs");
}
