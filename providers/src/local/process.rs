//! Worker processes as the local provider sees them: spawned with `std::process`, signalled with
//! `kill(2)`, and checked through `/proc/<pid>/stat` so a reused PID is never taken for ours.

use std::fs;
use std::io;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The two fields of `/proc/<pid>/stat` the provider needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    /// Field 3: `R`, `S`, `D`, ... or `Z` for a zombie (exited, not yet reaped).
    pub(super) state: char,
    /// Field 22: clock ticks after boot at which the process started. With the PID it names one
    /// process for the life of the machine, so a PID the kernel handed out again is not ours.
    pub(super) start_time: u64,
}

/// Reads `/proc/<pid>/stat`.
pub(super) fn stat(pid: u32) -> io::Result<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc/{pid}/stat: {text:?}")))
}

fn parse_stat(text: &str) -> Option<Stat> {
    // Field 2 is `(comm)`, and comm may hold spaces and parentheses: the fields we need come
    // after the last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?; // field 3
    let start_time = fields.nth(18)?.parse().ok()?; // skip fields 4..=21, take 22
    Some(Stat { state, start_time })
}

/// True while `pid` is the process that started at `start_time` and has not exited.
/// Bytes of memory the kernel can give new processes without swapping (`MemAvailable`).
pub(super) fn available_memory() -> io::Result<u64> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo")?)
        .ok_or_else(|| io::Error::other("/proc/meminfo has no MemAvailable line"))
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(super) fn is_alive(pid: u32, start_time: u64) -> bool {
    // Any read error means the process is gone: `/proc/<pid>/stat` is readable by everyone, and
    // `LocalProvider::new` checked that `/proc` is mounted.
    stat(pid).is_ok_and(|s| s.start_time == start_time && !matches!(s.state, 'Z' | 'X' | 'x'))
}

/// Sends `signal` to `pid`; a process that is already gone counts as signalled.
pub(super) fn signal(pid: u32, signal: Signal) -> nix::Result<()> {
    // PIDs 0 and 1 and negative ones would signal a process group, init, or everything: a
    // corrupt registry must not be able to do that.
    let pid = i32::try_from(pid).ok().filter(|&p| p > 1).ok_or(Errno::EINVAL)?;
    match kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Starts `program args` with stdin closed and stdout/stderr shared with ours, and returns the
/// child and its start time.
pub(super) fn spawn(program: &Path, args: &[String]) -> io::Result<(Child, u64)> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()?;
    // The start time is set at fork and survives exec, and the stat file outlives the process
    // until we reap it, so this read only fails if /proc itself does.
    match stat(child.id()) {
        Ok(stat) => Ok((child, stat.start_time)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Reaps `child` if it has exited, so it does not linger as a zombie.
pub(super) fn reap(child: &mut Child) -> bool {
    !matches!(child.try_wait(), Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_gives_available_bytes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(parse_meminfo(text), Some(2048 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert!(available_memory().unwrap() > 0);
    }

    #[test]
    fn parses_stat_even_with_parentheses_in_the_name() {
        let mut text = String::from("4242 (a) b (c) S 1");
        for field in 5..=21 {
            text.push_str(&format!(" {field}"));
        }
        text.push_str(" 987654 22 23\n");
        assert_eq!(parse_stat(&text), Some(Stat { state: 'S', start_time: 987654 }));
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn our_own_process_is_alive_only_with_its_start_time() {
        let me = std::process::id();
        let start = stat(me).expect("/proc/self/stat").start_time;
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1));
        assert!(!is_alive(u32::MAX, start));
    }

    #[test]
    fn refuses_to_signal_groups_and_init() {
        assert_eq!(signal(0, Signal::SIGTERM), Err(Errno::EINVAL));
        assert_eq!(signal(1, Signal::SIGTERM), Err(Errno::EINVAL));
        assert_eq!(signal(u32::MAX, Signal::SIGTERM), Err(Errno::EINVAL));
    }

    #[test]
    fn an_exited_child_is_dead_while_a_zombie_and_reaped_after() {
        let (mut child, start) = spawn(Path::new("/bin/sh"), &["-c".into(), "exit 0".into()]).expect("spawn sh");
        let pid = child.id();
        // Bounded: a shell that only exits is a zombie within milliseconds.
        for _ in 0..50 {
            if stat(pid).is_ok_and(|s| s.state == 'Z') {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(stat(pid).expect("a zombie keeps its stat file").state, 'Z');
        assert!(!is_alive(pid, start));
        assert!(reap(&mut child));
        assert!(stat(pid).is_err());
    }
}
