//! The host's free and total memory, as Linux reports them in
//! `/proc/meminfo`. `MemAvailable` (not `MemFree`) is what a new allocation
//! can get: it counts the page cache the kernel would give back.

use crate::{Error, MemoryInfo, Result};

const MEMINFO: &str = "/proc/meminfo";

/// `MemAvailable` and `MemTotal` of this machine; an error naming
/// `/proc/meminfo` where it is missing (not Linux) or unreadable.
pub(crate) fn memory_info() -> Result<MemoryInfo> {
    let text = std::fs::read_to_string(MEMINFO)
        .map_err(|e| unknown(format!("reading {MEMINFO}: {e}")))?;
    parse_meminfo(&text).ok_or_else(|| unknown(format!("{MEMINFO} lacks MemAvailable or MemTotal")))
}

fn unknown(why: String) -> Error {
    Error::BadArgument { op: "memory_info", msg: format!("the CPU's free memory is unknown here ({why})") }
}

/// Both lines read `Name:   <n> kB`; `None` when either is missing.
fn parse_meminfo(text: &str) -> Option<MemoryInfo> {
    let kib = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(MemoryInfo { free_bytes: kib("MemAvailable")? * 1024, total_bytes: kib("MemTotal")? * 1024 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_kib() {
        let text = "MemTotal:  100 kB\nMemFree:  5 kB\nMemAvailable:   20 kB\n";
        assert_eq!(parse_meminfo(text), Some(MemoryInfo { free_bytes: 20 * 1024, total_bytes: 100 * 1024 }));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\nMemFree: 1 kB\n"), None, "MemFree is not MemAvailable");
    }

    #[test]
    fn this_machine_reports_available_at_most_total() {
        match memory_info() {
            Ok(m) => assert!(0 < m.free_bytes && m.free_bytes <= m.total_bytes, "{m:?}"),
            Err(e) => eprintln!("SKIPPED: {e}"),
        }
    }
}
