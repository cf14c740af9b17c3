//! Builds the XDP object that `src/object.rs` embeds.
//!
//! - clang found: compiles `src/xsbc.bpf.c` into `OUT_DIR`. A compile error
//!   in the source fails the build; a missing BPF target or missing headers
//!   (`libbpf-dev`) only warn and fall back to the checked-in object.
//! - no clang, or `XSBC_BPF_PREBUILT=1`: uses the checked-in
//!   `bpf/xsbc.bpf.o`, so `cargo build` works on a machine without clang.
//! - `XSBC_BPF_REFRESH=1` (with clang): also copies the fresh object to
//!   `bpf/xsbc.bpf.o` and records the SHA-256 of the source and the object in
//!   `bpf/xsbc.bpf.sha256`. A unit test fails when that record does not match
//!   the current source, i.e. when the checked-in object is stale.
//!
//! `CLANG` names the compiler (default `clang`).

use std::{
    env,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use sha2::{Digest, Sha256};

const SOURCE: &str = "src/xsbc.bpf.c";
const PREBUILT: &str = "bpf/xsbc.bpf.o";
const HASHES: &str = "bpf/xsbc.bpf.sha256";

fn main() {
    for path in [SOURCE, PREBUILT, HASHES] {
        println!("cargo:rerun-if-changed={path}");
    }
    for var in ["CLANG", "XSBC_BPF_PREBUILT", "XSBC_BPF_REFRESH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("xsbc.bpf.o");

    let origin = if flag("XSBC_BPF_PREBUILT") {
        use_prebuilt(&manifest, &out, "XSBC_BPF_PREBUILT=1")
    } else {
        match compile(&manifest, &out) {
            Ok(()) => {
                if flag("XSBC_BPF_REFRESH") {
                    refresh(&manifest, &out);
                }
                "clang"
            }
            Err(why) => use_prebuilt(&manifest, &out, &why),
        }
    };
    println!("cargo:rustc-env=XSBC_BPF_OBJECT={}", out.display());
    println!("cargo:rustc-env=XSBC_BPF_OBJECT_ORIGIN={origin}");
}

fn flag(var: &str) -> bool {
    env::var(var).is_ok_and(|v| v == "1" || v == "true")
}

/// Compiles the program. `Err` means "this machine cannot build BPF"; a
/// compile error in the source panics instead, so it is never hidden.
fn compile(manifest: &Path, out: &Path) -> Result<(), String> {
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let mut cmd = Command::new(&clang);
    // Relative source path and a fixed debug prefix keep the object
    // independent of where the workspace is checked out.
    cmd.current_dir(manifest)
        .args(["-O2", "-g", "-Wall", "-target", "bpf"])
        .arg(format!("-fdebug-prefix-map={}=xdp-prog", manifest.display()));
    if let Some(dir) = multiarch_include() {
        cmd.arg(format!("-I{}", dir.display()));
    }
    cmd.args(["-c", SOURCE, "-o"]).arg(out);
    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => return Err(format!("{clang} not runnable ({e})")),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        for line in stderr.lines() {
            println!("cargo:warning={line}");
        }
        return Ok(());
    }
    let missing_toolchain = ["file not found", "unknown target", "No available targets"];
    if missing_toolchain.iter().any(|m| stderr.contains(m)) {
        return Err(format!("{clang} cannot build BPF here: {}", stderr.lines().next().unwrap_or("")));
    }
    panic!("{clang} failed to compile {SOURCE}:\n{stderr}");
}

/// `/usr/include/<arch>-linux-gnu`, where Debian keeps `asm/types.h`.
fn multiarch_include() -> Option<PathBuf> {
    let host = env::var("HOST").ok()?;
    let arch = host.split('-').next()?;
    let dir = PathBuf::from(format!("/usr/include/{arch}-linux-gnu"));
    dir.is_dir().then_some(dir)
}

fn use_prebuilt(manifest: &Path, out: &Path, why: &str) -> &'static str {
    println!("cargo:warning=xdp-prog: using the checked-in {PREBUILT} ({why})");
    fs::copy(manifest.join(PREBUILT), out).unwrap_or_else(|e| panic!("copying {PREBUILT}: {e}"));
    "checked-in"
}

/// Replaces the checked-in object and its hash record with the fresh build.
fn refresh(manifest: &Path, out: &Path) {
    let object = fs::read(out).expect("reading the object just built");
    let source = fs::read(manifest.join(SOURCE)).expect("reading the C source");
    fs::write(manifest.join(PREBUILT), &object).unwrap_or_else(|e| panic!("writing {PREBUILT}: {e}"));
    let record = format!("{}  {SOURCE}\n{}  {PREBUILT}\n", sha256_hex(&source), sha256_hex(&object));
    fs::write(manifest.join(HASHES), record).unwrap_or_else(|e| panic!("writing {HASHES}: {e}"));
    println!("cargo:warning=xdp-prog: refreshed {PREBUILT} and {HASHES}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}
