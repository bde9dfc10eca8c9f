//! The host tuning scripts in `tuning/` (tuning/README.md, tuning/XDP.md):
//! their read-only modes run on this host and report what they should.

use std::process::Command;

fn run(script: &str, args: &[&str]) -> (i32, String) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/").to_string() + script;
    let out = Command::new("bash")
        .arg(&path)
        .args(args)
        .output()
        .expect("bash runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_tuning_script_parses() {
    for s in ["host.sh", "irq-affinity.sh", "xdp-check.sh"] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tuning/").to_string() + s;
        let st = Command::new("bash").args(["-n", &path]).status().unwrap();
        assert!(st.success(), "{s} does not parse");
    }
}

#[test]
fn xdp_check_reports_an_interface_and_refuses_a_missing_one() {
    if Command::new("ethtool").arg("--version").output().is_err() {
        eprintln!("skipped: ethtool is not installed (scripts/test.sh installs it)");
        return;
    }
    let (rc, out) = run("xdp-check.sh", &["lo"]);
    assert_eq!(rc, 0, "{out}");
    // Loopback's 64 KiB MTU is what native XDP cannot take: it must say so.
    assert!(out.contains("WARN  MTU 65536"), "{out}");
    assert!(out.contains("no XDP program attached"), "{out}");
    assert!(out.contains("warning(s)"), "{out}");
    let (rc, out) = run("xdp-check.sh", &["kx-no-such0"]);
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("no interface kx-no-such0"), "{out}");
    let (rc, out) = run("xdp-check.sh", &[]);
    assert_eq!(rc, 2, "{out}");
    assert!(out.contains("usage"), "{out}");
}
