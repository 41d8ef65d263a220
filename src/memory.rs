//! The memory the system can still give this process: what the CPU backend reports as free, and what decides
//! whether a data set may be decoded into memory.

/// The bytes this process can still allocate: MemAvailable from /proc/meminfo, or less under an address-space
/// limit (`ulimit -v`: its room above the process's size); None where there is no such file.
pub fn available_memory() -> Option<u64> {
    let kib = |file: &str, key: &str| -> Option<u64> {
        let text = std::fs::read_to_string(file).ok()?;
        let line = text.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().next()?.parse::<u64>().ok().map(|k| k * 1024)
    };
    let avail = kib("/proc/meminfo", "MemAvailable:")?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let limit = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok());
    match (limit, kib("/proc/self/status", "VmSize:")) {
        (Some(limit), Some(size)) => Some(avail.min(limit.saturating_sub(size))),
        _ => Some(avail),
    }
}
