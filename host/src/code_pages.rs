//! The bot's own executable in memory as it is used, not as it was read.
//!
//! Linux maps a file into a process from its page cache, and maps more
//! than the page a fault asks for: whatever is cached in the 64 KiB
//! around it, and the whole folio when the file was cached in large ones
//! (this machine reads ahead 8 MiB at a time; one byte read every 4 MiB
//! of a 64 MiB file mapped 16 MiB of it). A process's first faults read
//! its executable ahead in such windows, so it is soon all cached, and
//! every later fault maps its neighbours whether they run or not.
//!
//! [`map_only_what_runs`] turns read-ahead off for the executable's
//! mappings, drops its cached pages that no process maps, and gives back
//! the pages mapped so far; [`forget_unmapped`] drops again what a
//! compiler child (another process of this executable, reading it ahead
//! before its `main`) or start-up brought in. Measured over Matrix
//! (BENCHMARKS.md, issue 14): the read-only data (constants, unwind
//! tables) the bot keeps resident halves, 8.9 → 4.4 MiB, and its high-water
//! mark drops by as much. Machine code does not shrink: the kernel reads
//! and maps an executable mapping in 64 KiB windows whatever the advice,
//! and the code the bot runs is spread over most of them. The price is a
//! page read from disk for each page the bot first uses after a start. It
//! is all advice: where the kernel refuses it, only the memory differs.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The executable, once [`map_only_what_runs`] took it in hand: the other
/// functions here do nothing in a process that did not (tests, tools).
static EXE: OnceLock<PathBuf> = OnceLock::new();

/// One mapping of the executable: where it is in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mapping {
    start: usize,
    len: usize,
}

/// Maps the executable's pages one at a time from now on, as they are
/// used. Best done first thing in a long-running process: what it touched
/// before is mapped again as it is used.
pub fn map_only_what_runs() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let mappings = mappings_of(&maps, &exe);
    for m in &mappings {
        advise(*m, rustix::mm::Advice::Random);
    }
    let exe = EXE.get_or_init(|| exe);
    forget(exe);
    for m in &mappings {
        advise(*m, rustix::mm::Advice::LinuxPageOut);
    }
}

/// Drops the executable's cached pages that no process maps, if this
/// process called [`map_only_what_runs`]. Read ahead by a process of this
/// executable that did not ask otherwise (a compiler child, before its
/// `main`) or by this one before it asked, they would be mapped into the
/// bot around its later faults. Called after each compiler child and once
/// start-up is done.
pub fn forget_unmapped() {
    if let Some(exe) = EXE.get() {
        forget(exe);
    }
}

fn forget(exe: &Path) {
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
        .open(exe)
    {
        Ok(file) => {
            if let Err(e) = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed) {
                tracing::debug!("cannot drop {exe:?} from the page cache: {e}");
            }
        }
        Err(e) => tracing::debug!("cannot open {exe:?}: {e}"),
    }
}

#[allow(unsafe_code)]
fn advise(m: Mapping, advice: rustix::mm::Advice) {
    // SAFETY: the range is a whole read-only mapping of this process's
    // executable, read from /proc/self/maps, and never unmapped while it
    // runs. Read-ahead and page-out advice change what is resident, never
    // what the pages hold: unwritten file pages read back the same bytes.
    let done = unsafe { rustix::mm::madvise(m.start as *mut _, m.len, advice) };
    if let Err(e) = done {
        tracing::debug!(?advice, "madvise on the executable's pages failed: {e}");
    }
}

/// The mappings in `maps` (the format of `/proc/self/maps`) backed by the
/// file at `exe`.
fn mappings_of(maps: &str, exe: &Path) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            // Written pages (relocated data) are the process's own, not the file's.
            if fields.next()?.contains('w') {
                return None;
            }
            let path: PathBuf = fields.nth(3)?.trim_start().into();
            if path != exe {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            Some(Mapping {
                start,
                len: end.checked_sub(start)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executable_s_read_only_mappings_are_taken() {
        let maps = "\
5581a0a00000-5581a0b00000 r--p 00000000 fd:01 123 /opt/ikkyu/bin/ikkyu
5581a0b00000-5581a3000000 r-xp 00100000 fd:01 123 /opt/ikkyu/bin/ikkyu
5581a3000000-5581a3001000 rw-p 00000000 00:00 0 
5581a3001000-5581a3002000 rw-p 02500000 fd:01 123 /opt/ikkyu/bin/ikkyu
7f0000000000-7f0000100000 r-xp 00000000 fd:01 456 /usr/lib/libc.so.6
7f0000200000-7f0000201000 r-xp 00000000 fd:01 789 /opt/ikkyu/bin/ikkyu-old
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
";
        let got = mappings_of(maps, Path::new("/opt/ikkyu/bin/ikkyu"));
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x5581_a0a0_0000,
                    len: 0x10_0000
                },
                Mapping {
                    start: 0x5581_a0b0_0000,
                    len: 0x250_0000
                },
            ]
        );
    }

    #[test]
    fn a_path_with_spaces_is_read_whole() {
        let maps = "1000-3000 r-xp 00000000 fd:01 1 /srv/my bots/ikkyu\n";
        assert_eq!(
            mappings_of(maps, Path::new("/srv/my bots/ikkyu")),
            vec![Mapping {
                start: 0x1000,
                len: 0x2000
            }]
        );
    }

    #[test]
    fn this_process_finds_its_own_code() {
        let exe = std::fs::read_link("/proc/self/exe").ok();
        let maps = std::fs::read_to_string("/proc/self/maps").ok();
        let found = exe
            .zip(maps)
            .map(|(exe, maps)| mappings_of(&maps, &exe).len())
            .unwrap_or_default();
        assert!(found >= 1, "no mapping of the test binary was found");
    }
}
