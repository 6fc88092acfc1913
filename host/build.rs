//! Links the `ikkyu` executable with the functions the bot runs packed
//! together at the start of its machine code.
//!
//! Linux maps an executable in 64 KiB windows, and the code a bot answering
//! commands runs (about 10 MB) is otherwise spread over most of the windows
//! of its text: measured over Matrix, 41 MB of machine code stayed resident
//! for 10 MB run, and the release build's high-water mark went from 48 to
//! 30 MiB with them packed (BENCHMARKS.md, issue 14, eleventh part).
//! `code-order.txt` lists the functions a release build ran under
//! callgrind during the side-by-side benchmark; `scripts/code-order.sh`
//! makes it again. Names the build does not have (another profile,
//! changed code, upgraded dependencies: their names carry a hash of the
//! crate's build) are skipped, so a stale list costs memory, never
//! correctness; make it again after a dependency changes
//! (`scripts/code-order.sh --check` says how much of it a build has). Only
//! release-like profiles on x86_64 Linux, where rustc links with lld, get
//! it; `IKKYU_CODE_ORDER=off` leaves it out.

fn main() {
    println!("cargo:rerun-if-changed=code-order.txt");
    println!("cargo:rerun-if-env-changed=IKKYU_CODE_ORDER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let wanted = var("TARGET") == "x86_64-unknown-linux-gnu"
        && var("PROFILE") == "release"
        && var("IKKYU_CODE_ORDER") != "off";
    if wanted {
        let list = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("code-order.txt");
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
