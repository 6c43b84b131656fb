//! What the node reads of and asks from its own process: resident memory, and giving freed heap
//! back to the operating system.

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

/// Loading decodes, copies and optimizes whole weight sets; give the freed heap back to the OS so
/// the node's resident memory is what its models keep, not what loading once touched.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lowers the calling thread's CPU priority (nice 10) for the rest of its life, and that of the
/// threads it starts: loading and optimizing a model is long CPU work that should yield to the
/// inference threads of the models already serving (a reload while the node takes traffic).
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority only read the calling thread's id and set its nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
