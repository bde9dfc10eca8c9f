//! Builds the XDP relay program (bpf/relay.bpf.c) with clang when clang and
//! libbpf's headers are present; otherwise the gateway is sockets-only and
//! says so (`kolokol::media::xdp::built_in()` is false).
//!
//! `KOLOKOL_XDP_BUILD=0` skips the BPF build even where clang is installed
//! (to check the sockets-only build); `CLANG` names another clang.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kolokol_xdp)");
    println!("cargo::rerun-if-changed=bpf/relay.bpf.c");
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rerun-if-env-changed=KOLOKOL_XDP_BUILD");

    if std::env::var("KOLOKOL_XDP_BUILD").as_deref() == Ok("0") {
        println!("cargo::warning=XDP not built in: KOLOKOL_XDP_BUILD=0 (sockets-only gateway)");
        return;
    }
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os != "linux" {
        return;
    }
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let obj = out.join("relay.bpf.o");

    // Not built in: look again once packages are installed (clang and
    // libbpf-dev both add to /usr/bin), without rerunning on every build.
    let watch_installs = || println!("cargo::rerun-if-changed=/usr/bin");
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        watch_installs();
        println!(
            "cargo::warning=XDP not built in: /usr/include/bpf/bpf_helpers.h missing \
             (install libbpf-dev); the gateway is sockets-only"
        );
        return;
    }
    // asm/types.h lives under the multiarch directory on Debian.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "/usr/include/x86_64-linux-gnu",
        "aarch64" => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include",
    };
    let status = Command::new(&clang)
        .args([
            "-O2", "-g", "-Wall", "-target", "bpf", "-I", multiarch, "-c",
        ])
        .arg("bpf/relay.bpf.c")
        .arg("-o")
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => println!("cargo::rustc-cfg=kolokol_xdp"),
        Ok(s) => {
            watch_installs();
            println!(
                "cargo::warning=XDP not built in: {clang} failed on bpf/relay.bpf.c ({s}); \
             the gateway is sockets-only"
            )
        }
        Err(e) => {
            watch_installs();
            println!(
                "cargo::warning=XDP not built in: {clang} not found ({e}); install clang and \
             libbpf-dev for the XDP data path; the gateway is sockets-only"
            )
        }
    }
}
